"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protoface_emulator.local.launch import EmulatorProcess


@pytest.fixture
def emulator_command() -> Iterator[list[EmulatorProcess]]:
    """The emulator as a process the test can kill; every one started is stopped after."""
    started: list[EmulatorProcess] = []
    yield started
    for process in started:
        process.stop()

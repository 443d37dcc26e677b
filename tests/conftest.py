"""Fixtures shared by every test folder: the real servers end-to-end tests run against."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from protoface_emulator.livekit_dev import LiveKitServer, find_livekit_server, start_livekit_server

if TYPE_CHECKING:
    from protoface_emulator.server import Emulator


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def livekit_server() -> Iterator[LiveKitServer]:
    """A real `livekit-server --dev` on 127.0.0.1 with free ports, shared by the session.

    Missing binary: skip locally, fail under CI=true (an end-to-end test that cannot
    find its real server must not pass quietly).
    """
    binary = find_livekit_server()
    if binary is None:
        message = (
            "livekit-server not found: run scripts/install-livekit-server "
            "(or set LIVEKIT_SERVER_BIN, or put livekit-server on PATH)"
        )
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    server = start_livekit_server(binary)
    try:
        yield server
    finally:
        server.stop()
    assert server.process.poll() is not None, "livekit-server still running after the tests"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An in-process protoface-emulator with its real LiveKit worker, on a free port."""
    from protoface_emulator.server import Emulator

    async with Emulator() as emu:
        yield emu

"""Fixtures for the plugin tests: the emulator as the server, a fake job's room, logs."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from livekit import rtc
from livekit.agents.testing import fake_job_context

from protoface_emulator import Emulator
from protoface_emulator.lifecycle import ManualWorkers
from protoface_emulator.testing import mint_token

from .helpers import (
    AGENT_IDENTITY,
    API_KEY,
    LIVEKIT_API_KEY,
    LIVEKIT_API_SECRET,
    LIVEKIT_URL,
    ROOM_NAME,
    LogCapture,
)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROTOFACE_* or LIVEKIT_* setting from the developer's shell leaks in."""
    for name in list(os.environ):
        if name.startswith(("PROTOFACE_", "LIVEKIT_")):
            monkeypatch.delenv(name)


@pytest.fixture
def workers() -> ManualWorkers:
    """The emulator's workers: each session stays `queued` until the test drives it."""
    return ManualWorkers()


@pytest.fixture
async def emu(workers: ManualWorkers) -> AsyncIterator[Emulator]:
    """The real emulator on loopback, its sessions driven by `workers` (no LiveKit).

    The join timeout is long so no session fails by itself while a test runs.
    """
    async with Emulator(
        api_key=API_KEY, worker_factory=workers, join_timeout=600, avatar_processing_delay=0
    ) as emu:
        yield emu


@pytest.fixture
def job_room() -> Iterator[rtc.Room]:
    """An unconnected `rtc.Room` inside a fake job whose agent is `AGENT_IDENTITY`.

    Stand-in: no LiveKit server runs in these unit tests, so the job is
    `livekit.agents.testing.fake_job_context`, and the room token a worker would
    receive from LiveKit is minted here so `local_participant_identity` works.
    """
    room = rtc.Room()
    with fake_job_context(room=room, agent_identity=AGENT_IDENTITY) as job_ctx:
        job_ctx._info.token = mint_token(
            LIVEKIT_API_KEY, LIVEKIT_API_SECRET, AGENT_IDENTITY, ROOM_NAME, kind="agent"
        )
        yield room


@pytest.fixture
def livekit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", LIVEKIT_URL)
    monkeypatch.setenv("LIVEKIT_API_KEY", LIVEKIT_API_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LIVEKIT_API_SECRET)


@pytest.fixture
def all_logs() -> Iterator[LogCapture]:
    """Captures every log record of every logger at DEBUG, via the root logger."""
    handler = LogCapture()
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)

"""Fixtures for the plugin tests (the fake API itself lives in `fake_protoface`)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp.test_utils import TestServer
from livekit import api, rtc
from livekit.agents.testing import fake_job_context

from .fake_protoface import (
    AGENT_IDENTITY,
    LIVEKIT_API_KEY,
    LIVEKIT_API_SECRET,
    LIVEKIT_URL,
    ROOM_NAME,
    FakeProtoface,
    LogCapture,
)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROTOFACE_* or LIVEKIT_* setting from the developer's shell leaks in."""
    for name in list(os.environ):
        if name.startswith(("PROTOFACE_", "LIVEKIT_")):
            monkeypatch.delenv(name)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProtoface]:
    fake = FakeProtoface()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.server = server
    try:
        yield fake
    finally:
        await server.close()


@pytest.fixture
def job_room() -> Iterator[rtc.Room]:
    """An unconnected `rtc.Room` inside a fake job whose agent is `AGENT_IDENTITY`.

    Stand-in: no LiveKit server runs in these unit tests, so the job is
    `livekit.agents.testing.fake_job_context`, and the room token a worker would
    receive from LiveKit is minted here so `local_participant_identity` works.
    """
    room = rtc.Room()
    with fake_job_context(room=room, agent_identity=AGENT_IDENTITY) as job_ctx:
        job_ctx._info.token = (
            api.AccessToken(LIVEKIT_API_KEY, LIVEKIT_API_SECRET)
            .with_identity(AGENT_IDENTITY)
            .with_grants(api.VideoGrants(room_join=True, room=ROOM_NAME))
            .to_jwt()
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

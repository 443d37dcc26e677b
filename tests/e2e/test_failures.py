"""A hosted session that cannot join is reported within seconds, with its failure code."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from livekit.plugins import protoface

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

from .harness import agent_in, room_name


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("start_options", "failure_code"),
    [
        pytest.param(
            {"livekit_api_secret": "this-secret-is-not-the-one-livekit-server-uses"},
            "livekit_auth_failed",
            id="wrong-secret",
        ),
        pytest.param(
            {"livekit_url": f"ws://127.0.0.1:{_closed_port()}"},
            "livekit_unreachable",
            id="unreachable-url",
        ),
    ],
)
async def test_failed_hosted_session_is_reported_with_its_failure_code(
    livekit_server: LiveKitServer,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    start_options: dict[str, str],
    failure_code: str,
) -> None:
    caplog.set_level(logging.INFO, logger="livekit.plugins.protoface")
    room = room_name("fails")
    async with agent_in(livekit_server, emulator, room, start_options=start_options) as agent:
        session_id = agent.avatar.session_id
        assert session_id is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(protoface.ProtofaceException) as raised:
            # Far below the 30 s default join timeout a silent failure would take.
            await agent.avatar.wait_for_join(timeout=15)
        assert loop.time() - began < 15
        error = raised.value
        assert getattr(error, "failure_code", None) == failure_code
        assert getattr(error, "session_id", None) == session_id
        assert failure_code in str(error)

    async with protoface.ProtofaceAPI(api_url=emulator.url, api_key=emulator.api_key) as api:
        hosted = await api.get_session(session_id)
    assert hosted["status"] == "failed"
    assert hosted["failure"] is not None and hosted["failure"]["code"] == failure_code
    logged = [r for r in caplog.records if failure_code in r.getMessage()]
    assert logged, "the failure code was not logged"
    assert all(r.levelno >= logging.WARNING for r in logged)

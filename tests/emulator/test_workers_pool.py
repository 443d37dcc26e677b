"""Sessions rendered in worker processes (`workers.ProcessPool`), in real rooms.

A pool of two processes behind a real emulator and a real `livekit-server`:
sessions spread over the processes, a killed process fails only its own
sessions (`worker_crashed`) while the other keeps publishing and the API keeps
answering, the pool replaces the dead process, and closing the emulator leaves
no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import psutil
import pytest
from emulator_helpers import with_transport
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF

from protoface_emulator.hosting import ProcessPool
from protoface_emulator.lifecycle import FAILURE_WORKER_CRASHED
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer, eventually, viewer_in

pytestmark = pytest.mark.e2e

DEADLINE = 30.0


@dataclass
class Watched:
    """A session whose agent is in the room and whose avatar a viewer watches."""

    session_id: str
    viewer: AvatarViewer


@contextlib.asynccontextmanager
async def watched_session(
    server: LiveKitServer, emu: Emulator, http: aiohttp.ClientSession
) -> AsyncIterator[Watched]:
    """Create a session through the API with its agent and a viewer in the room."""
    room = f"pool-{uuid.uuid4().hex[:8]}"
    agent_identity, avatar_identity = f"agent-{room}", f"avatar-{room}"
    agent = rtc.Room()
    await agent.connect(server.url, server.token(agent_identity, room, kind="agent"))
    try:
        async with viewer_in(server, room, avatar_identity) as viewer:
            body = with_transport(
                url=server.url,
                room_name=room,
                worker_identity=avatar_identity,
                worker_token=server.token(
                    avatar_identity,
                    room,
                    attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity},
                ),
            )
            headers = {"Authorization": f"Bearer {emu.api_key}"}
            async with http.post(f"{emu.url}/v1/sessions", json=body, headers=headers) as reply:
                assert reply.status == 201, await reply.text()
                session_id = (await reply.json())["id"]
            yield Watched(session_id, viewer)
    finally:
        await agent.disconnect()


async def status_of(http: aiohttp.ClientSession, emu: Emulator, session_id: str) -> str:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with http.get(f"{emu.url}/v1/sessions/{session_id}", headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        status: str = (await reply.json())["status"]
        return status


async def test_a_killed_worker_process_fails_only_its_sessions(
    livekit_server: LiveKitServer,
) -> None:
    pool = ProcessPool(processes=2)
    async with (
        Emulator(worker_factory=pool, join_timeout=DEADLINE) as emu,
        aiohttp.ClientSession() as http,
        watched_session(livekit_server, emu, http) as first,
        watched_session(livekit_server, emu, http) as second,
    ):
        for watched in (first, second):
            await watched.viewer.wait_for_video(timeout=DEADLINE)
        # One session per process: the pool spreads them.
        pids = [p.pid for p in pool.processes]
        assert sorted(p.sessions for p in pool.processes) == [1, 1]
        assert None not in pids and os.getpid() not in pids

        record = emu.store.get_session(first.session_id)
        victim = pool.processes[0].pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)

        await eventually(
            lambda: record.status == "failed", timeout=DEADLINE, message=lambda: record.status
        )
        assert record.failure is not None
        assert record.failure["code"] == FAILURE_WORKER_CRASHED
        assert str(victim) in record.failure["message"]

        # The other session is still running and its avatar still publishing.
        survivor = emu.store.get_session(second.session_id)
        frames = len(second.viewer.video)
        await eventually(
            lambda: len(second.viewer.video) >= frames + 20,
            timeout=DEADLINE,
            message="the surviving avatar stopped publishing",
        )
        assert survivor.status == "running"
        assert await status_of(http, emu, second.session_id) == "running"
        async with http.get(
            f"{emu.url}/v1/status", headers={"Authorization": f"Bearer {emu.api_key}"}
        ) as reply:
            assert reply.status == 200

        # A new session gets a fresh process in the dead one's place.
        async with watched_session(livekit_server, emu, http) as third:
            await third.viewer.wait_for_video(timeout=DEADLINE)
            assert victim not in [p.pid for p in pool.processes]
            assert len(pool.processes) == 2


async def test_closing_the_emulator_ends_the_sessions_and_stops_its_processes(
    livekit_server: LiveKitServer,
) -> None:
    pool = ProcessPool(processes=1)
    async with (
        Emulator(worker_factory=pool, join_timeout=DEADLINE) as emu,
        aiohttp.ClientSession() as http,
        watched_session(livekit_server, emu, http) as watched,
    ):
        await watched.viewer.wait_for_video(timeout=DEADLINE)
        pid = pool.processes[0].pid
        assert pid is not None
        worker_process = psutil.Process(pid)
        record = emu.store.get_session(watched.session_id)
        await emu.aclose()
        assert record.status == "ended"
        await asyncio.to_thread(worker_process.wait, DEADLINE)
        assert not worker_process.is_running()


def test_a_pool_needs_at_least_one_process() -> None:
    with pytest.raises(ValueError, match="at least 1 worker process, got 0"):
        ProcessPool(processes=0)


def test_the_command_refuses_a_negative_number_of_worker_processes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "protoface_emulator.cli", "--worker-processes", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--worker-processes" in done.stderr and "got -1" in done.stderr

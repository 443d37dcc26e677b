"""Avatars on worker hosts through LiveKit's agent dispatch (`protoface-emulator worker`).

Two real `protoface-emulator worker` processes registered with a real
livekit-server, an emulator whose `AgentDispatch` asks that server for one job
per session: sessions spread over both hosts (each reports its load as jobs over
its capacity, so LiveKit's load-aware dispatch fills both), a killed host fails
only its own sessions while the other host's avatars keep publishing, and a job
no host takes fails its session with an error that says what to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from test_workers_pool import DEADLINE, status_of, watched_session

from protoface_emulator.hosting.dispatch import AgentDispatch
from protoface_emulator.hosting.protocol import job_metadata, read_job_metadata
from protoface_emulator.lifecycle import FAILURE_JOIN_TIMEOUT, FAILURE_WORKER_CRASHED, WorkerSpec
from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer, eventually, start_emulator_process

pytestmark = pytest.mark.e2e


class Host:
    """A `protoface-emulator worker` process, its stderr collected."""

    def __init__(self, server: LiveKitServer, name: str, agent_name: str, capacity: int) -> None:
        env = {
            **os.environ,
            "LIVEKIT_URL": server.url,
            "LIVEKIT_API_KEY": server.api_key,
            "LIVEKIT_API_SECRET": server.api_secret,
        }
        argv = [sys.executable, "-m", "protoface_emulator.cli", "worker"]
        argv += ["--name", name, "--agent-name", agent_name, "--capacity", str(capacity)]
        self.name = name
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)


@contextlib.contextmanager
def hosts(
    server: LiveKitServer, agent_name: str, *names: str, capacity: int
) -> Iterator[list[Host]]:
    started = [Host(server, name, agent_name, capacity) for name in names]
    try:
        yield started
    finally:
        for host in started:
            host.stop()


async def registered(host: Host) -> None:
    await eventually(
        lambda: "registered worker" in host.log,
        timeout=90,
        message=lambda: f"{host.name} did not register:\n{host.log[-3000:]}",
    )


@contextlib.asynccontextmanager
async def dispatching(
    server: LiveKitServer, agent_name: str, pickup_timeout: float = 20.0
) -> AsyncIterator[tuple[Emulator, AgentDispatch]]:
    dispatch = AgentDispatch(
        server.http_url,
        server.api_key,
        server.api_secret,
        agent_name=agent_name,
        pickup_timeout=pickup_timeout,
    )
    async with Emulator(worker_factory=dispatch, join_timeout=DEADLINE * 2) as emu:
        yield emu, dispatch


async def test_sessions_spread_over_two_hosts_and_a_killed_host_fails_only_its_own(
    livekit_server: LiveKitServer,
) -> None:
    agent_name = "protoface-avatar-spread"
    with hosts(livekit_server, agent_name, "host-a", "host-b", capacity=2) as (a, b):
        await asyncio.gather(registered(a), registered(b))
        async with (
            dispatching(livekit_server, agent_name) as (emu, dispatch),
            aiohttp.ClientSession() as http,
            contextlib.AsyncExitStack() as stack,
        ):
            watched = [
                await stack.enter_async_context(watched_session(livekit_server, emu, http))
                for _ in range(4)
            ]
            for session in watched:
                await session.viewer.wait_for_video(timeout=DEADLINE * 2)
            placed = {job.spec.session_id: job.host for job in dispatch.jobs}
            # Two per host: each is full at its capacity of 2.
            assert Counter(placed.values()) == {"host-a": 2, "host-b": 2}, placed

            a.process.kill()
            on_a = [s for s in watched if placed[s.session_id] == "host-a"]
            on_b = [s for s in watched if placed[s.session_id] == "host-b"]
            lost = [emu.store.get_session(s.session_id) for s in on_a]
            await eventually(
                lambda: all(r.status == "failed" for r in lost),
                timeout=DEADLINE,
                message=lambda: str([r.status for r in lost]),
            )
            for record in lost:
                assert record.failure is not None
                assert record.failure["code"] == FAILURE_WORKER_CRASHED
                assert "host-a" in record.failure["message"]
            frames = {s.session_id: len(s.viewer.video) for s in on_b}
            await eventually(
                lambda: all(len(s.viewer.video) >= frames[s.session_id] + 20 for s in on_b),
                timeout=DEADLINE,
                message="an avatar on the surviving host stopped publishing",
            )
            for session in on_b:
                assert await status_of(http, emu, session.session_id) == "running"

            # Ending a session on the surviving host takes its avatar out of the room.
            first = on_b[0]
            headers = {"Authorization": f"Bearer {emu.api_key}"}
            end = f"{emu.url}/v1/sessions/{first.session_id}/end"
            async with http.post(end, headers=headers) as reply:
                assert reply.status == 200, await reply.text()
            await eventually(
                lambda: emu.store.get_session(first.session_id).status == "ended", timeout=DEADLINE
            )
            await first.viewer.wait_until(
                lambda: first.viewer.avatar_identity not in first.viewer.room.remote_participants,
                timeout=DEADLINE,
                what="the ended session's avatar to leave the room",
            )
        log = b.log
    # The host's logs name sessions and rooms, never the worker tokens or the secret.
    assert livekit_server.api_secret not in log
    assert "eyJ" not in log  # no JWT
    # Our jobs never connect as the job's own participant, on purpose: no warning says so.
    assert "room connection was not established" not in log
    assert "left" in log


async def test_the_command_with_dispatch_renders_on_a_worker_host(
    livekit_server: LiveKitServer,
) -> None:
    """The `protoface-emulator --dispatch` command, as a user runs it, with one host."""
    agent_name = "protoface-avatar-command"
    env = {
        "LIVEKIT_URL": livekit_server.url,
        "LIVEKIT_API_KEY": livekit_server.api_key,
        "LIVEKIT_API_SECRET": livekit_server.api_secret,
    }
    with hosts(livekit_server, agent_name, "host-c", capacity=1) as (host,):
        await registered(host)
        emulator = start_emulator_process(
            args=["--dispatch", "--agent-name", agent_name, "--join-timeout", "60"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with (
                aiohttp.ClientSession() as http,
                watched_session(livekit_server, emulator, http) as session,  # type: ignore[arg-type]
            ):
                await session.viewer.wait_for_video(timeout=DEADLINE * 2)
                assert await status_of(http, emulator, session.session_id) == "running"  # type: ignore[arg-type]
        finally:
            emulator.stop()
        await eventually(
            lambda: "job for" in host.log and "avatar left" in host.log,
            timeout=DEADLINE,
            message=lambda: host.log[-2000:],
        )


async def test_a_job_no_host_takes_fails_its_session_with_what_to_start(
    livekit_server: LiveKitServer,
) -> None:
    async with (
        dispatching(livekit_server, "protoface-avatar-nobody", pickup_timeout=3.0) as (
            emu,
            dispatch,
        ),
        aiohttp.ClientSession() as http,
        watched_session(livekit_server, emu, http) as session,
    ):
        record = emu.store.get_session(session.session_id)
        await eventually(
            lambda: record.status == "failed", timeout=DEADLINE, message=lambda: record.status
        )
        assert record.failure is not None
        assert record.failure["code"] == FAILURE_JOIN_TIMEOUT
        assert (
            "protoface-emulator worker --agent-name protoface-avatar-nobody"
            in record.failure["message"]
        )
        assert dispatch.jobs == []


def test_dispatch_refuses_a_missing_secret_and_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"API secret.*LIVEKIT_API_SECRET"):
        AgentDispatch("http://127.0.0.1:7880", "devkey", "")
    with pytest.raises(ValueError, match=r"'localhost:7880'.*--livekit-url"):
        AgentDispatch("localhost:7880", "devkey", "secret")


def test_the_worker_command_refuses_a_missing_secret() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "protoface_emulator.cli",
            "worker",
            "--livekit-url",
            "ws://127.0.0.1:7880",
            "--livekit-api-key",
            "devkey",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert "API secret" in done.stderr and "LIVEKIT_API_SECRET" in done.stderr


def test_the_emulator_refuses_dispatch_with_worker_processes() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "protoface_emulator.cli",
            "--dispatch",
            "--worker-processes",
            "2",
            "--livekit-url",
            "ws://127.0.0.1:7880",
            "--livekit-api-key",
            "k",
            "--livekit-api-secret",
            "s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--worker-processes" in done.stderr


def test_job_metadata_round_trips_and_bad_metadata_says_why() -> None:
    spec = WorkerSpec(
        session_id="ses_1", url="ws://lk", room_name="r", identity="avatar", token="tok"
    )
    order = read_job_metadata(job_metadata("k1", "ticket", "ws://emu/jobs/k1", spec))
    assert (order.key, order.ticket, order.reports, order.spec) == (
        "k1",
        "ticket",
        "ws://emu/jobs/k1",
        spec,
    )
    assert "ticket" not in repr(order) and "tok" not in repr(order)
    with pytest.raises(ValueError, match="not JSON"):
        read_job_metadata("")
    with pytest.raises(ValueError, match="version 2"):
        read_job_metadata('{"v": 2}')
    with pytest.raises(ValueError, match="lacks a field"):
        read_job_metadata('{"v": 1, "key": "k"}')

"""Developing offline by hand, as a newcomer does it with only the installed commands.

`protoface-emulator livekit-server` runs the binary the kit finds (the per-user
install is not on PATH) and prints the exports; the agent (the offline
quickstart, run as LiveKit Agents recommends) and the emulator use them; a person
joins with `protoface-emulator token`, or through the page `protoface-emulator
join` serves, and sees and hears the avatar. Every command runs as a process of
its own, against a real livekit-server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import jwt
import pytest
from livekit import api as lkapi

from protoface_emulator import Emulator
from protoface_emulator.local.dev_livekit import DEV_API_KEY, DEV_API_SECRET
from protoface_emulator.local.launch import stop_process
from protoface_emulator.testing import AvatarViewer, LiveKitServer, eventually

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart_offline.py"
COMMAND = [sys.executable, "-m", "protoface_emulator.cli"]


async def _line(process: asyncio.subprocess.Process, pattern: str, timeout: float) -> str:
    """The first stdout line of `process` matching `pattern` (it must come within `timeout`)."""
    assert process.stdout is not None

    async def read() -> str:
        assert process.stdout is not None
        while line := (await process.stdout.readline()).decode():
            if re.search(pattern, line):
                return line.strip()
        raise AssertionError(f"the command exited ({await process.wait()}) before {pattern!r}")

    return await asyncio.wait_for(read(), timeout)


@asynccontextmanager
async def _command(*args: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`protoface-emulator ARGS` as a process; SIGTERM on the way out, which must exit 0."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), 30)
        except asyncio.TimeoutError:
            process.kill()
            raise
    assert code == 0, f"`protoface-emulator {' '.join(args)}` exited {code} on SIGTERM"


@asynccontextmanager
async def _dev_server(binary: str) -> AsyncIterator[dict[str, str]]:
    """`protoface-emulator livekit-server --port 0`; yields the variables it said to export."""
    env = {**os.environ, "LIVEKIT_SERVER_BIN": binary}
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        env.pop(name, None)
    async with _command("livekit-server", "--port", "0", env=env) as server:
        exports = await _line(server, r"^export ", timeout=60)
        yield dict(word.split("=", 1) for word in exports.split()[1:])


def _agent(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The offline quickstart, as `python -m livekit.agents start --dev FILE` runs it.

    Through the playground's runner, which does exactly that but has the worker
    report itself idle: livekit-server sends no job to a worker reporting the CPU
    load of this busy test machine ("no servers available").
    """
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "protoface_emulator.playground.run_agent", str(QUICKSTART)],
            env=env,
            cwd=QUICKSTART.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def _sees_and_hears(viewers: list[AvatarViewer], agent_log: Path) -> None:
    try:
        for viewer in viewers:
            await viewer.wait_for_video(timeout=90)
            await viewer.wait_for_audio(1.0, timeout=60)  # the greeting, through the avatar
    except AssertionError as exc:
        tail = (await asyncio.to_thread(agent_log.read_text, errors="replace"))[-3000:]
        raise AssertionError(f"{exc}\nagent output:\n{tail}") from None


async def _token(env: dict[str, str], room: str) -> str:
    made = await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, "token", "--room", room],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return made.stdout.strip()


async def _page_connect(page_url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(page_url) as reply:
            assert reply.status == 200  # the page itself
        async with http.post(page_url + "api/connect") as reply:
            given: dict[str, str] = json.loads(await reply.text())
    return given


async def test_a_person_joining_with_the_token_or_the_join_page_sees_and_hears_the_avatar(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    # `livekit_server` only gives the binary (and fails under CI=true without one).
    async with _dev_server(livekit_server.binary) as exports:
        assert exports["LIVEKIT_API_KEY"] == DEV_API_KEY
        assert exports["LIVEKIT_API_SECRET"] == DEV_API_SECRET
        async with Emulator(api_key="dev-key") as emulator:
            env = {
                **os.environ,
                **exports,
                "PROTOFACE_API_URL": emulator.url,
                "PROTOFACE_API_KEY": emulator.api_key,
            }
            log = tmp_path / "agent.log"
            agent = await asyncio.to_thread(_agent, env, log)
            viewers: list[AvatarViewer] = []
            try:
                await eventually(
                    lambda: "registered worker" in log.read_text() or agent.poll() is not None,
                    timeout=90,
                )
                assert agent.poll() is None, log.read_text()[-3000:]
                # One room, so one job (a second could wait on the worker's reported load):
                # a person with the token and a person through the page, both there before
                # the agent's greeting.
                room = f"by-hand-{uuid.uuid4().hex[:6]}"
                async with _command("join", "--port", "0", "--room", room, env=env) as page:
                    page_url = (await _line(page, r"^join: ", timeout=60)).split()[-1]
                    given = await _page_connect(page_url)
                    assert given["url"] == exports["LIVEKIT_URL"]
                    assert given["room"] == room
                    by_token, by_page = AvatarViewer(), AvatarViewer()
                    viewers += [by_token, by_page]
                    await by_token.connect(exports["LIVEKIT_URL"], await _token(env, room))
                    await by_page.connect(given["url"], given["token"])
                    await _sees_and_hears(viewers, log)
            finally:
                for viewer in viewers:
                    await viewer.aclose()
                await asyncio.to_thread(stop_process, agent, 30)


# livekit-server --dev's own 6-byte secret, signed on purpose below.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_the_dev_server_answers_the_dev_pair_and_refuses_another_secret(
    livekit_server: LiveKitServer,
) -> None:
    async with _dev_server(livekit_server.binary) as exports:
        http_url = exports["LIVEKIT_URL"].replace("ws://", "http://")
        assert exports["LIVEKIT_URL"].startswith("ws://127.0.0.1:")
        async with lkapi.LiveKitAPI(http_url, DEV_API_KEY, DEV_API_SECRET) as lk:
            await lk.room.list_rooms(lkapi.ListRoomsRequest())
        # livekit-server --dev's own pair is replaced, not added to.
        async with lkapi.LiveKitAPI(http_url, "devkey", "secret") as lk:
            with pytest.raises(lkapi.TwirpError):
                await lk.room.list_rooms(lkapi.ListRoomsRequest())
        # `join` checks the key before serving a page whose every token would be refused.
        wrong = {**os.environ, **exports, "LIVEKIT_API_SECRET": "not-the-secret-" * 3}
        refused = await asyncio.to_thread(
            subprocess.run,
            [*COMMAND, "join", "--port", "0"],
            env=wrong,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert "refused LIVEKIT_API_KEY=devkey (HTTP 401)" in refused.stderr
        assert "not-the-secret" not in refused.stderr + refused.stdout


async def test_join_without_a_server_says_how_to_start_one() -> None:
    env = {**os.environ, "LIVEKIT_URL": "ws://127.0.0.1:9"}  # the discard port: nothing there
    env.pop("LIVEKIT_API_KEY", None)
    env.pop("LIVEKIT_API_SECRET", None)
    result = await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, "join", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no livekit-server answers at ws://127.0.0.1:9" in result.stderr
    assert "protoface-emulator livekit-server" in result.stderr


def test_the_dev_secret_is_long_enough_that_pyjwt_does_not_warn() -> None:
    assert len(DEV_API_SECRET.encode()) >= 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token = jwt.encode({"sub": "x"}, DEV_API_SECRET, algorithm="HS256")
        jwt.decode(token, DEV_API_SECRET, algorithms=["HS256"])

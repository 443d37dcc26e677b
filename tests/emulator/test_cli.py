"""The `protoface-emulator` command as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from emulator_helpers import session_body

COMMAND = Path(sys.executable).with_name("protoface-emulator")
HERE = Path(__file__).parent
LISTENING = re.compile(r"^listening on (http://127\.0\.0\.1:(\d+))$")


@dataclass
class Running:
    """A started emulator process and what it printed before listening."""

    process: asyncio.subprocess.Process
    url: str
    printed: list[str]


@asynccontextmanager
async def emulator_process(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Running]:
    """Start the command with stand-in workers; yield once it printed its listening line."""
    environment = {k: v for k, v in os.environ.items() if k != "PROTOFACE_API_KEY"}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), environment.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        str(COMMAND),
        "--port",
        "0",
        "--worker-factory",
        "standin_worker:factory",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    assert process.stdout is not None
    printed: list[str] = []
    try:
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            assert line, f"exited before listening; printed {printed}"
            text = line.decode().rstrip("\n")
            printed.append(text)
            match = LISTENING.match(text)
            if match:
                assert int(match.group(2)) > 0
                yield Running(process, match.group(1), printed)
                break
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process, signum: int) -> tuple[int, str]:
    """Send `signum`; return the exit code and everything on stderr."""
    process.send_signal(signum)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def get(url: str, key: str, path: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + path, headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        return response.status


async def test_sigterm_ends_sessions_takes_workers_out_and_exits_0(tmp_path: Path) -> None:
    close_log = tmp_path / "closed.txt"
    async with emulator_process(
        "--api-key", "cli-key", env={"STANDIN_CLOSE_LOG": str(close_log)}
    ) as running:
        assert running.printed == [f"listening on {running.url}"]  # no key line: it was given
        headers = {"Authorization": "Bearer cli-key"}
        async with aiohttp.ClientSession(headers=headers) as http:
            ids = []
            for _ in range(3):
                async with http.post(running.url + "/v1/sessions", json=session_body()) as r:
                    assert r.status == 201
                    ids.append((await r.json())["id"])
            for session_id in ids:
                for _ in range(200):
                    async with http.get(f"{running.url}/v1/sessions/{session_id}") as r:
                        if (await r.json())["status"] == "running":
                            break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail(f"{session_id} never ran")
        code, stderr = await stop(running.process, signal.SIGTERM)
    assert code == 0, stderr
    assert sorted(close_log.read_text().split()) == sorted(ids)
    assert "cli-key" not in stderr
    assert "secret-worker-jwt" not in stderr


async def test_generated_key_is_printed_before_the_listening_line() -> None:
    async with emulator_process() as running:
        [key_line, _] = running.printed
        assert key_line.startswith("api key: ")
        key = key_line.removeprefix("api key: ")
        assert await get(running.url, key, "/v1/status") == 200
        assert await get(running.url, "wrong", "/v1/status") == 401
        code, stderr = await stop(running.process, signal.SIGINT)
    assert code == 0, stderr
    assert key not in stderr


async def test_key_comes_from_the_environment() -> None:
    async with emulator_process(env={"PROTOFACE_API_KEY": "env-key"}) as running:
        assert running.printed == [f"listening on {running.url}"]
        assert await get(running.url, "env-key", "/v1/status") == 200
        code, _ = await stop(running.process, signal.SIGTERM)
    assert code == 0


async def test_faults_flag_arms_faults() -> None:
    async with emulator_process(
        "--api-key", "k", "--faults", "GET /v1/status=error,status=503,count=1"
    ) as running:
        assert await get(running.url, "k", "/v1/status") == 503
        assert await get(running.url, "k", "/v1/status") == 200
        code, _ = await stop(running.process, signal.SIGTERM)
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--faults", "GET /v1/status=explode"],
        ["--worker-factory", "no_such_module:factory"],
        ["--max-concurrency", "0"],
    ],
)
async def test_bad_arguments_exit_2(args: Sequence[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        str(COMMAND),
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2, stderr.decode()
    assert b"listening" not in stdout
    assert stderr.decode().startswith("protoface-emulator: ")

"""The `protoface-emulator` command as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
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


async def test_sigterm_mid_start_and_mid_request_still_closes_every_worker(
    tmp_path: Path,
) -> None:
    close_log = tmp_path / "closed.txt"
    async with emulator_process(
        "--api-key",
        "k",
        "--worker-factory",
        "standin_worker:starting_factory",
        "--faults",
        "GET /v1/status=late,delay=1",
        env={"STANDIN_CLOSE_LOG": str(close_log)},
    ) as running:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as http:
            ids = []
            for _ in range(3):
                async with http.post(running.url + "/v1/sessions", json=session_body()) as r:
                    ids.append((await r.json())["id"])
            in_flight = asyncio.ensure_future(http.get(running.url + "/v1/status"))
            await asyncio.sleep(0.3)  # the sessions are starting, the status call waits
            running.process.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(in_flight, timeout=30)
            assert answer.status == 200  # answered, not cut off
            answer.release()
        _, stderr = await asyncio.wait_for(running.process.communicate(), timeout=30)
    assert running.process.returncode == 0, stderr.decode()
    assert sorted(close_log.read_text().split()) == sorted(ids)


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


async def test_faults_flag_scripts_a_reply() -> None:
    spec = "GET /v1/status=reply,status=418,body=short%2C stout,header=X-Seen:1"
    async with emulator_process("--api-key", "k", "--faults", spec) as running:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": "Bearer k"}
            async with http.get(running.url + "/v1/status", headers=headers) as response:
                assert response.status == 418
                assert await response.text() == "short, stout"
                assert response.headers["X-Seen"] == "1"
        code, _ = await stop(running.process, signal.SIGTERM)
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--faults", "GET /v1/status=explode"],
        ["--worker-factory", "no_such_module:factory"],
        ["--max-concurrency", "0"],
        ["--port", "65536"],
        ["--port", "-1"],
        ["--port", "http"],
        ["--join-timeout", "0"],
        ["--join-timeout", "nan"],
        ["--api-key", "has space"],
        ["--api-key", "ключ"],
        ["--host", ""],
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
    assert stderr.decode().startswith(("protoface-emulator: ", "usage: protoface-emulator"))
    assert "Traceback" not in stderr.decode()


async def test_a_port_in_use_is_a_clear_error_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            str(COMMAND),
            "--port",
            str(port),
            "--api-key",
            "k",
            "--worker-factory",
            "standin_worker:factory",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(HERE)},
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert b"listening" not in stdout
    assert f"cannot listen on 127.0.0.1:{port}" in stderr.decode()
    assert "address already in use" in stderr.decode().lower()
    assert "Traceback" not in stderr.decode()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
async def test_ipv6_loopback_is_served_with_a_bracketed_url(host: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(COMMAND),
        "--host",
        host,
        "--port",
        "0",
        "--api-key",
        "k6",
        "--worker-factory",
        "standin_worker:factory",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
        match = re.fullmatch(r"listening on (http://\[::1\]:(\d+))", line)
        assert match, line
        assert await get(match.group(1), "k6", "/v1/status") == 200
        code, stderr = await stop(process, signal.SIGTERM)
        assert code == 0, stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

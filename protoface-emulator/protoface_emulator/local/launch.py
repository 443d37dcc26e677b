"""The `protoface-emulator` command as a child process, for demos, benchmarks and tests.

Starts it on a free loopback port, reads the URL from its `listening on` line,
and stops it with SIGTERM (it ends every session and waits for its workers).
The API key travels in the environment, never on the command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from protoface_emulator.server import generate_api_key

__all__ = ["EmulatorProcess", "start_emulator_process", "stop_process"]


@dataclass
class EmulatorProcess:
    """A running `protoface-emulator` command and how to reach it."""

    process: subprocess.Popen[str] = field(repr=False)
    url: str
    api_key: str = field(repr=False)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then wait for it; kill it if it will not go."""
        stop_process(self.process, timeout)


def stop_process(process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM `process`, wait up to `timeout` seconds, then kill it if it will not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_emulator_process(
    *,
    api_key: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: IO[bytes] | IO[str] | int | None = None,
    ready_timeout: float = 30.0,
) -> EmulatorProcess:
    """Run `protoface-emulator --host 127.0.0.1 --port 0 ARGS` and wait until it listens.

    Args:
        api_key: The key it accepts; generated when omitted.
        args: More command-line arguments (e.g. `["--log-level", "warning"]`).
        env: Extra environment variables for the child.
        stderr: Where its logs go (inherited by default).
        ready_timeout: Seconds to wait for the `listening on` line.

    Raises:
        RuntimeError: It exited or printed no `listening on` line in time.
    """
    key = api_key or generate_api_key()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "protoface_emulator.cli",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *args,
        ],
        env={**os.environ, **(env or {}), "PROTOFACE_API_KEY": key},
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("listening on "):
            return EmulatorProcess(process, line.removeprefix("listening on ").strip(), key)
    process.kill()
    process.wait(timeout=5)
    raise RuntimeError("protoface-emulator did not start: no 'listening on' line")

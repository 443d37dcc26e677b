"""The agent worker as a child process: started, its output relayed, its registration awaited.

The worker runs through `run_agent` (`python -m protoface_emulator.playground.run_agent
FILE`), with `LIVEKIT_*` and `PROTOFACE_*` pointing at the playground's servers, and
LiveKit Inference's credentials taken from the user's own environment, or named
when missing (`inference_check`).
Everything it prints goes to a log file; warnings, errors and whatever is not a log
line (prints, tracebacks) also go to stderr, all of it with `verbose`.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from protoface_emulator.local.launch import stop_process
from protoface_emulator.playground.inference_check import (
    inference_credentials,
    missing_variables,
)

__all__ = [
    "AgentProcess",
    "PlaygroundError",
    "registered_agent_name",
    "start_agent",
    "wait_registered",
]


class PlaygroundError(RuntimeError):
    """The playground could not start; the message says what to do."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines every run prints that say nothing to a playground user.
_NOISE = (
    "no warmed process available",
    "event loop blocked for",  # a busy machine; --verbose shows them
    "Attempted to drop unknown FFI handle",
)
_LOG_LEVEL = re.compile(r"\b(DEBUG|INFO|DEV|WARNING|WARN|ERROR|CRITICAL)\b")
_AGENT_NAME = re.compile(r'"agent_name": "((?:[^"\\]|\\.)*)"')


def registered_agent_name(line: str) -> str | None:
    """The agent name in livekit-agents' `registered worker` log line ("" when the
    worker takes every room), or None when `line` is not that line."""
    if "registered worker" not in line:
        return None
    found = _AGENT_NAME.search(line)
    return found.group(1) if found else ""


@dataclass
class AgentProcess:
    """The agent worker process and what its output told us."""

    process: subprocess.Popen[bytes]
    log_path: Path
    registered: threading.Event = field(default_factory=threading.Event)
    agent_name: str = ""  # what it registered as; "" takes every new room

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the agent wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the worker ends its jobs, which end their hosted sessions), then kill."""
        stop_process(self.process, timeout)


def start_agent(agent_file: Path, env: dict[str, str], *, verbose: bool) -> AgentProcess:
    """Run `agent_file` as a worker (see `run_agent`) and relay its output."""
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the agent
        prefix="playground-agent-", suffix=".log", delete=False
    )
    command = [sys.executable, "-m", "protoface_emulator.playground.run_agent", str(agent_file)]
    # `env` points LIVEKIT_API_KEY / _SECRET at the local server, which LiveKit
    # Inference would otherwise sign with: the user's own credentials go through.
    inference = inference_credentials(os.environ)
    missing = missing_variables(os.environ)
    if missing:
        command += ["--inference-missing", ",".join(missing)]
    process = subprocess.Popen(
        command,
        env={**os.environ, **env, **inference},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=agent_file.parent,
    )
    agent = AgentProcess(process, Path(log_file.name))
    thread = threading.Thread(
        target=_relay, args=(agent, log_file, verbose), name="agent-output", daemon=True
    )
    thread.start()
    return agent


def _relay(agent: AgentProcess, log_file: IO[bytes], verbose: bool) -> None:
    assert agent.process.stdout is not None
    show = True
    with log_file:
        for raw in agent.process.stdout:
            log_file.write(raw)
            log_file.flush()
            line = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
            name = registered_agent_name(line)
            if name is not None:
                agent.agent_name = name
                agent.registered.set()
            level = _LOG_LEVEL.search(line[:40])
            if level is not None:
                show = level.group(1) not in {"DEBUG", "INFO", "DEV"}
            if verbose or (show and not any(noise in line for noise in _NOISE)):
                print(f"agent | {line}", file=sys.stderr, flush=True)


async def wait_registered(
    agent: AgentProcess, agent_file: Path, timeout: float, stop: asyncio.Event
) -> None:
    """Wait until the worker registered with livekit-server (or `stop` is set).

    Raises:
        PlaygroundError: It exited or did not register in time (with its last output).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not agent.registered.is_set() and not stop.is_set():
        if agent.process.poll() is not None:
            raise PlaygroundError(
                f"the agent {agent_file} exited with code {agent.process.returncode} "
                f"before registering as a worker; its last output:\n{agent.log_tail()}"
            )
        if loop.time() > deadline:
            raise PlaygroundError(
                f"the agent {agent_file} did not register as a worker within {timeout:.0f} s; "
                "its last output:\n" + agent.log_tail()
            )
        await asyncio.sleep(0.1)

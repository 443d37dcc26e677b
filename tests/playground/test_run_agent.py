"""An older-style agent file (`cli.run_app(WorkerOptions(...))` under `__main__`) really
serves jobs when the playground runs it: its entrypoint, pickled by name into a job
process, connects to the room a person joins. No deprecation warning is printed.

Real livekit-server on loopback; the agent file runs in a child process as
`protoface-emulator playground --agent` runs it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from livekit import rtc

from protoface_emulator.local.launch import stop_process
from protoface_emulator.testing import LiveKitServer, eventually

pytestmark = pytest.mark.e2e

OLD_STYLE_AGENT = """
from livekit.agents import JobContext, WorkerOptions, cli


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    await ctx.room.local_participant.set_attributes({"served-by": "old-style entrypoint"})


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
"""


# What livekit-agents says when its deprecated CLI runs a file.
DEPRECATED_RUNS = ("built-in Python CLI is deprecated", "dev mode is deprecated")


def _run_agent(agent_file: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "protoface_emulator.playground.run_agent", str(agent_file)],
            cwd=agent_file.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def test_an_old_style_agent_file_serves_a_rooms_job(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    agent_file = tmp_path / "old_agent.py"
    agent_file.write_text(OLD_STYLE_AGENT)
    log_path = tmp_path / "agent.log"
    env = {
        **os.environ,
        "LIVEKIT_URL": livekit_server.url,
        "LIVEKIT_API_KEY": livekit_server.api_key,
        "LIVEKIT_API_SECRET": livekit_server.api_secret,
        "PYTHONWARNINGS": "always::DeprecationWarning",
    }
    agent = await asyncio.to_thread(_run_agent, agent_file, env, log_path)
    person = rtc.Room()
    try:

        def output() -> str:
            return log_path.read_text(errors="replace")

        await eventually(
            lambda: "registered worker" in output() or agent.poll() is not None,
            timeout=90,
            message=lambda: output()[-3000:],
        )
        assert agent.poll() is None, output()[-3000:]
        room = f"old-style-{uuid.uuid4().hex[:8]}"
        await person.connect(livekit_server.url, livekit_server.token("person", room))

        def served() -> bool:
            return any(
                p.attributes.get("served-by") == "old-style entrypoint"
                for p in person.remote_participants.values()
            )

        await eventually(served, timeout=90, message=lambda: output()[-3000:])
    finally:
        await person.disconnect()
        await asyncio.to_thread(stop_process, agent)
    assert not [notice for notice in DEPRECATED_RUNS if notice in output()], output()[-3000:]

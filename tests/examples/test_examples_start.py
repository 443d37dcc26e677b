"""Every example file starts, the way its docstring says to run it.

Agent files run as LiveKit Agents 1.8.9 recommends, `python -m livekit.agents
start --dev FILE`, in a process of their own against a real livekit-server and
the emulator on loopback; a viewer then joins a fresh room, the server
dispatches the agent to it, and the test waits for the avatar's video. Scripts
run to completion. Each run has every DeprecationWarning printed
(`PYTHONWARNINGS`), and none may come from our code paths: a warning attributed
to a file of this repository, or LiveKit's notice that its own CLI or `dev` mode
is deprecated (what an example calling `cli.run_app` or run as `FILE dev`
triggers).

The quickstart's models (LiveKit Inference strings) need a LiveKit Cloud
project; offline their calls fail in the background, after the avatar has
joined, which is as far as "starts" goes here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from fnmatch import fnmatch
from pathlib import Path

import pytest

from livekit.plugins.protoface import ProtofaceAPI
from protoface_emulator import Emulator
from protoface_emulator.local.launch import stop_process
from protoface_emulator.testing import LiveKitServer, eventually, viewer_in

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# scripts/check-wheels runs this file against copies of the examples, outside the
# repository, in a virtualenv with the built wheels.
EXAMPLES = Path(os.environ.get("PROTOFACE_EXAMPLES_DIR") or REPO / "examples").resolve()

# Agent files: started with the module CLI, proved started by the avatar's video.
AGENT_FILES = [
    "quickstart.py",
    "quickstart_offline.py",
    "agent.py",
    "handoff.py",
    "testing/my_agent.py",
]
# Scripts: each run to its end by a test of its own below.
SCRIPTS = ["manage_sessions.py", "offline_demo.py"]
# Files that are not run here (glob patterns), and what runs them instead.
NOT_RUN_HERE = {
    "testing/test_*.py": "tests of an agent: scripts/test-example-pip runs them from the wheels",
}

# Files under these are ours (the repository only when this file runs inside it).
OUR_ROOTS = tuple(
    str(root) + os.sep
    for root in (EXAMPLES, REPO)
    if root == EXAMPLES or (root / "livekit-plugins-protoface").is_dir()
)
# A warning line as Python prints it: `path:line: Category: message`.
WARNING_LINE = re.compile(r"^(?P<path>.+?):\d+: (?P<category>\w*DeprecationWarning): (?P<msg>.*)$")
# What livekit-agents logs (not warns) about the ways of running an agent it deprecates.
DEPRECATED_RUNS = ("built-in Python CLI is deprecated", "dev mode is deprecated")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONWARNINGS"] = "always::DeprecationWarning,always::PendingDeprecationWarning"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def our_deprecations(output: str) -> list[str]:
    """The deprecation warnings in `output` that our code paths are responsible for."""
    found = []
    for line in output.splitlines():
        match = WARNING_LINE.match(line.strip())
        if (match and _is_ours(match.group("path"))) or any(
            notice in line for notice in DEPRECATED_RUNS
        ):
            found.append(line.strip())
    return found


def _is_ours(path: str) -> bool:
    ours = ("livekit/plugins/protoface/", "protoface_emulator/", "/examples/")
    return any(part in path.replace(os.sep, "/") for part in ours) or path.startswith(OUR_ROOTS)


def test_every_example_file_is_run_here_or_says_what_runs_it() -> None:
    files = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.py")}
    run_here = set(AGENT_FILES) | set(SCRIPTS)
    unclassified = {
        f for f in files - run_here if not any(fnmatch(f, pattern) for pattern in NOT_RUN_HERE)
    }
    assert unclassified == set(), "classify the new example file(s) in this test"
    assert set(AGENT_FILES) | set(SCRIPTS) <= files


def test_the_warning_filter_finds_what_it_is_for() -> None:
    # The check below is only as good as this filter: it must see our warnings,
    # livekit-agents' deprecated-run notices, and leave third-party ones alone.
    output = "\n".join(
        [
            f"{EXAMPLES}/agent.py:3: DeprecationWarning: old",
            "/x/site-packages/livekit/plugins/protoface/avatar.py:9: DeprecationWarning: old",
            "/x/site-packages/google/protobuf/x.py:1: DeprecationWarning: not ours",
            "WARNING livekit.agents - dev mode is deprecated and will be removed",
        ]
    )
    assert len(our_deprecations(output)) == 3


def _start_agent_file(name: str, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m livekit.agents start --dev FILE`, as the examples' docstrings say."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "livekit.agents", "start", "--dev", str(EXAMPLES / name)],
            cwd=EXAMPLES / Path(name).parent,
            env=_env({}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.parametrize("name", AGENT_FILES)
async def test_agent_file_starts_with_the_module_cli(
    name: str, livekit_server: LiveKitServer, protoface_emulator: Emulator, tmp_path: Path
) -> None:
    log_path = tmp_path / "agent.log"
    agent = await asyncio.to_thread(_start_agent_file, name, log_path)
    try:

        def output() -> str:
            return log_path.read_text(errors="replace")

        await eventually(
            lambda: "registered worker" in output() or agent.poll() is not None, timeout=90
        )
        assert agent.poll() is None, f"{name} exited ({agent.returncode}):\n{output()[-4000:]}"

        # A room created after the worker registered: livekit-server dispatches the agent.
        room = f"example-{uuid.uuid4().hex[:8]}"
        async with viewer_in(livekit_server, room) as viewer:
            try:
                await viewer.wait_for_video(timeout=60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nagent output:\n{output()[-4000:]}") from None
        assert agent.poll() is None, f"{name} exited ({agent.returncode}):\n{output()[-4000:]}"
    finally:
        await asyncio.to_thread(stop_process, agent, 30)
    assert our_deprecations(output()) == []


async def test_manage_sessions_lists_and_ends_the_active_sessions(
    livekit_server: LiveKitServer, protoface_emulator: Emulator
) -> None:
    # A session whose worker waits in a real room for an agent that never comes:
    # active until the script ends it.
    room = f"manage-{uuid.uuid4().hex[:8]}"
    async with ProtofaceAPI() as api:  # the fixture pointed PROTOFACE_* at the emulator
        created = await api.start_session(
            avatar_id="av_stock_001",
            transport={
                "type": "livekit",
                "url": livekit_server.url,
                "room_name": room,
                "worker_token": livekit_server.token("protoface-avatar-agent", room),
            },
        )
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(EXAMPLES / "manage_sessions.py"), "--end"],
            env=_env({}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert created["id"] in result.stdout
        assert (await api.get_session(created["id"]))["status"] in {"ending", "ended"}
    assert our_deprecations(result.stderr) == []


async def test_offline_demo_runs_to_its_summary(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    # The demo starts its own livekit-server and emulator; `livekit_server` is
    # requested only so that a missing binary fails (CI) or skips like the rest.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(EXAMPLES / "offline_demo.py"), "--out", str(tmp_path)],
        env=_env({}),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["avatar_video_frames"] > 0
    assert summary["processes_left"] == 0
    assert our_deprecations(result.stderr) == []

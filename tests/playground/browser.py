"""The playground command in a real browser: start it, drive its page, stop it leaving nothing.

Shared by the playground's browser tests. `protoface-emulator playground` runs
as a user runs it (the console script of an environment: this one, or the
pip-installed one `PROTOFACE_PLAYGROUND_PYTHON` names, which
scripts/test-example-pip sets); headless Chromium (Debian's `chromium`, driven
by playwright-core from `web/node_modules`) opens the page with a fake
microphone, and `drive.mjs` reports what the page saw.

Under CI=true a missing browser, Node.js, npm package or livekit-server fails
the test; elsewhere it skips.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from protoface_emulator.local.livekit_binary import find_livekit_server

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "drive.mjs"
VOICE_WAV = ROOT / "examples" / "assets" / "hello.wav"
PLAYWRIGHT = ROOT / "web" / "node_modules" / "playwright-core" / "package.json"
READY_TIMEOUT = 240.0  # seconds: a busy 2-core machine starting four servers
DRIVE_TIMEOUT = 420.0
SPEAKING_LEVEL = 0.02  # avatar audio RMS counted as speech (drive.mjs uses the same)
SILENT_LEVEL = 0.005


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(message: str) -> None:
    """Skip for `message`, or fail under CI=true."""
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def find_tools() -> dict[str, str]:
    """Chromium, Node.js, playwright-core and livekit-server, or a skip (a failure in CI)."""
    chromium = _chromium()
    if chromium is None:
        missing("chromium not found: run scripts/install-playground-deps --browser")
    node = shutil.which("node")
    if node is None:
        missing("node not found: install Node.js 20+ with npm")
    if not PLAYWRIGHT.is_file():
        missing("web/node_modules is not installed: run scripts/install-playground-deps")
    livekit = find_livekit_server()
    if livekit is None:
        missing("livekit-server not found: run protoface-emulator install-livekit-server")
    assert chromium and node and livekit
    return {"chromium": chromium, "node": node, "livekit": livekit}


def playground_command() -> list[str]:
    """`protoface-emulator playground`, from `PROTOFACE_PLAYGROUND_PYTHON`'s environment
    (a pip-installed one) or this one."""
    python = Path(os.environ.get("PROTOFACE_PLAYGROUND_PYTHON") or sys.executable)
    script = python.parent / "protoface-emulator"
    if not script.is_file():
        pytest.fail(f"no protoface-emulator command beside {python}")
    return [str(script), "playground"]


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextmanager
def running_playground(
    tools: dict[str, str], args: Sequence[str], cwd: Path
) -> Iterator[dict[str, Any]]:
    """`protoface-emulator playground --port 0 ARGS` until its URL line; on exit,
    SIGTERM and a check that it exits 0 leaving no process behind. Its stderr
    goes to `cwd/playground.stderr` ("stderr" in what it yields)."""
    env = {**os.environ, "LIVEKIT_SERVER_BIN": tools["livekit"]}
    stderr_path = cwd / "playground.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*playground_command(), "--port", "0", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # our signals are not its signals
        )
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    url = None
    seen: list[str] = []
    try:
        while url is None:
            try:
                line = lines.get(timeout=READY_TIMEOUT)
            except queue.Empty:
                pytest.fail(
                    f"no 'playground: URL' line within {READY_TIMEOUT:.0f} s: {seen}\n"
                    + stderr_path.read_text(errors="replace")[-3000:]
                )
            if line is None:
                pytest.fail(
                    f"the playground exited with {process.wait()} before its URL: {seen}\n"
                    + stderr_path.read_text(errors="replace")[-3000:]
                )
            seen.append(line.rstrip())
            if line.startswith("playground: http://"):
                url = line.removeprefix("playground: ").strip()
        family = psutil.Process(process.pid).children(recursive=True)
        assert family, "the playground started no processes"
        yield {"url": url, "family": family, "process": process, "stderr": stderr_path}
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("the playground did not stop within 90 s of SIGTERM")
    assert code == 0, f"the playground exited with {code} after SIGTERM"
    left = [
        f"{p.pid} {' '.join(p.cmdline()[:3])}"
        for p in family
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert not left, f"processes left after SIGTERM: {left}"


def drive(
    tools: dict[str, str], url: str, out: Path, *, scenario: str, wav: Path = VOICE_WAV
) -> dict[str, Any]:
    """Run drive.mjs on the page; its report, with its stderr under "stderr"."""
    result = subprocess.run(
        [
            tools["node"],
            str(DRIVER),
            "--url",
            url,
            "--wav",
            str(wav),
            "--chromium",
            tools["chromium"],
            "--out",
            str(out),
            "--scenario",
            scenario,
        ],
        capture_output=True,
        text=True,
        timeout=DRIVE_TIMEOUT,
        cwd=ROOT,
    )
    report_path = out / "report.json"
    assert report_path.is_file(), f"drive.mjs wrote no report:\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = json.loads(report_path.read_text())
    report["stderr"] = result.stderr
    assert report["failed"] is None, f"{report['failed']}\n{report['stderr'][-3000:]}"
    return report


def assert_seen_and_heard(report: dict[str, Any], *, speaking_state: bool) -> None:
    """What every playground run must show: the page loaded only from its server,
    decoded avatar video whose frames advance, the avatar heard with its mouth
    moving, the microphone heard, and the conversation's billing in the panel."""
    final, samples = report["final"], report["samples"]
    assert final["hasLivekitClient"]
    assert report["offOriginRequests"] == []

    assert samples and min(s["w"] for s in samples) > 0 and min(s["h"] for s in samples) > 0
    frames = [s["frames"] for s in samples]
    assert frames[-1] > frames[0] + 50, f"video frames did not advance: {frames[0]}..{frames[-1]}"
    assert max(s["brightness"] for s in samples) > 20, "the video stayed black"
    # drive.mjs waited for the page to measure the fake microphone's speech.
    assert "microphone hears speech" in [step["name"] for step in report["steps"]]

    speaking = [
        s
        for s in samples
        if s["level"] > SPEAKING_LEVEL and (s["state"] == "speaking" or not speaking_state)
    ]
    silent = [s for s in samples if s["state"] == "listening" and s["level"] < SILENT_LEVEL]
    assert len(speaking) >= 5, "the avatar's audio was hardly heard"
    assert len(silent) >= 20, "the avatar was hardly seen listening"
    motion_speaking = sum(s["motion"] for s in speaking) / len(speaking)
    # The typical listening frame, not the mean: on a loaded machine the video runs
    # behind the audio, so the first frames after a line still show it spoken.
    motion_silent = statistics.median(s["motion"] for s in silent)
    assert motion_speaking > 1.0, f"the mouth hardly moved while speaking: {motion_speaking:.2f}"
    assert motion_speaking > 4 * motion_silent + 0.2, (motion_speaking, motion_silent)

    conversation = final["conversation"]
    mine = [s for s in final["sessions"] if s["room_name"] == final["room"]]
    assert conversation["sessionsStarted"] == len(mine) >= 1
    assert conversation["billableSeconds"] == sum(
        (s["usage"] or {}).get("billable_seconds", 0) for s in mine
    )
    assert conversation["billableSeconds"] >= 1

"""The playground in a real browser: avatar video, the echo, and talking over the avatar.

`scripts/playground`'s supervisor starts livekit-server, the emulator, the echo
agent and the page; headless Chromium (Debian's `chromium`, driven by
playwright-core from `web/node_modules`) opens the page with `?autoconnect=1` and
a fake microphone playing `examples/assets/hello.wav`. `drive.mjs` plays the
person and reports what the page saw; this test judges the report, then stops
the playground with SIGTERM and checks that no process is left.

Under CI=true a missing browser, Node.js, npm package or livekit-server fails
the test; elsewhere it skips. `PLAYGROUND_SCREENSHOT=PATH` copies the screenshot
taken while the avatar speaks to PATH (how docs/playground.png is made).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from protoface_emulator.testing.livekit_dev import find_livekit_server

ROOT = Path(__file__).resolve().parents[2]
PLAYGROUND = ROOT / "examples" / "playground" / "playground.py"
DRIVER = Path(__file__).resolve().parent / "drive.mjs"
VOICE_WAV = ROOT / "examples" / "assets" / "hello.wav"
PLAYWRIGHT = ROOT / "web" / "node_modules" / "playwright-core" / "package.json"
LIVEKIT_CLIENT = ROOT / "web" / "node_modules" / "livekit-client" / "dist"
READY_TIMEOUT = 240.0  # seconds: a busy 2-core machine starting four servers
DRIVE_TIMEOUT = 420.0
SPEAKING_LEVEL = 0.02  # avatar audio RMS counted as speech (drive.mjs uses the same)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(message: str) -> None:
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """Chromium, Node.js and livekit-server, or a skip (a failure under CI=true)."""
    chromium = _chromium()
    if chromium is None:
        _missing("chromium not found: run scripts/install-playground-deps --browser")
    node = shutil.which("node")
    if node is None:
        _missing("node not found: install Node.js 20+ with npm")
    if not PLAYWRIGHT.is_file() or not LIVEKIT_CLIENT.is_dir():
        _missing("web/node_modules is not installed: run scripts/install-playground-deps")
    livekit = find_livekit_server()
    if livekit is None:
        _missing("livekit-server not found: run scripts/install-livekit-server")
    assert chromium and node and livekit
    return {"chromium": chromium, "node": node, "livekit": livekit}


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope="module")
def playground(tools: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A running `examples/playground/playground.py --port 0`; checks it leaves nothing."""
    env = {**os.environ, "LIVEKIT_SERVER_BIN": tools["livekit"]}
    process = subprocess.Popen(
        [sys.executable, str(PLAYGROUND), "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
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
                pytest.fail(f"no 'playground: URL' line within {READY_TIMEOUT:.0f} s: {seen}")
            if line is None:
                pytest.fail(f"the playground exited with {process.wait()} before its URL: {seen}")
            seen.append(line.rstrip())
            if line.startswith("playground: http://"):
                url = line.removeprefix("playground: ").strip()
        family = psutil.Process(process.pid).children(recursive=True)
        assert family, "the playground started no processes"
        yield {"url": url, "family": family, "process": process}
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


def _drive(tools: dict[str, str], url: str, out: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            tools["node"],
            str(DRIVER),
            "--url",
            url,
            "--wav",
            str(VOICE_WAV),
            "--chromium",
            tools["chromium"],
            "--out",
            str(out),
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
    return report


def test_page_shows_avatar_echoes_and_stops_when_talked_over(
    tools: dict[str, str], playground: dict[str, Any], tmp_path: Path
) -> None:
    report = _drive(tools, playground["url"], tmp_path)
    screenshot = tmp_path / "speaking.png"
    if screenshot.is_file() and os.environ.get("PLAYGROUND_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["PLAYGROUND_SCREENSHOT"])
    assert report["failed"] is None, f"{report['failed']}\n{report['stderr'][-3000:]}"
    final, samples = report["final"], report["samples"]

    # The page loaded nothing from elsewhere; livekit-client came from the server.
    assert final["hasLivekitClient"]
    assert report["offOriginRequests"] == []

    # Decoded avatar video whose frames advance.
    assert samples and min(s["w"] for s in samples) > 0 and min(s["h"] for s in samples) > 0
    frames = [s["frames"] for s in samples]
    assert frames[-1] > frames[0] + 50, f"video frames did not advance: {frames[0]}..{frames[-1]}"
    assert max(s["brightness"] for s in samples) > 20, "the video stayed black"

    # The echo came back as the avatar's audio, with its mouth moving.
    speaking = [s for s in samples if s["level"] > SPEAKING_LEVEL and s["state"] == "speaking"]
    silent = [s for s in samples if s["state"] == "listening" and s["level"] < 0.005]
    assert len(speaking) >= 5, "the avatar's audio was hardly heard"
    assert len(silent) >= 20
    motion_speaking = sum(s["motion"] for s in speaking) / len(speaking)
    motion_silent = sum(s["motion"] for s in silent) / len(silent)
    assert motion_speaking > 1.0, f"the mouth hardly moved while speaking: {motion_speaking:.2f}"
    assert motion_speaking > 4 * motion_silent + 0.2, (motion_speaking, motion_silent)
    assert final["turns"]["heard"] >= 1
    assert any(t["who"] == "agent" and t["text"] for t in final["transcript"])

    # Talking over the avatar stopped it: the agent says so, and the avatar went
    # quiet while the person went on talking (drive.mjs waited for that).
    assert final["turns"]["interrupted"] >= 1
    after = [s for s in samples if s["wall"] > report["talkedOverAt"]]
    assert after and after[-1]["level"] < 0.005 and after[-1]["state"] != "speaking"
    assert after[-1]["mic"]

    # Ending the hosted session from the panel: the agent reported its avatar lost
    # and went on audio-only (drive.mjs heard the next echo from the agent itself).
    assert final["avatarState"] == "lost"
    mine = [s for s in final["sessions"] if s["room_name"] == final["room"]]
    assert mine and mine[0]["status"] == "ended" and mine[0]["usage"] is not None

    # The hosted session of this tab's room is listed, without its worker token.
    with urllib.request.urlopen(playground["url"] + "api/sessions", timeout=30) as response:
        body = response.read().decode()
    assert final["room"] in body
    assert "worker_token" not in body and "eyJ" not in body

"""The scale curve of `benchmarks/run` (`--only scale_curve`): N concurrent watched sessions.

For each N, a fresh `protoface-emulator` command (its default process pool) and
a load generator in a process of its own (this file, `--role load`): N agents
in N rooms, each speaking 2 s out of every 3 to its avatar over data streams,
and N viewers decoding the avatars' video. Over a steady window the load
generator counts each viewer's frames, and this process times `GET /v1/status`
every 50 ms and samples the CPU time of the emulator and all its worker
processes at the window's edges. N = 0 gives the API's latency with nothing
rendering.

Per N: viewer fps min and median, emulator CPU in total and per session (one
core = 100), API p50/p99 during the window, and lost sessions: failed, not
created, or no longer running when the window closed. A row is *held*
when every viewer got at least 90 % of the tier's frame rate (18 fps for
`standard`) and no session failed.

    uv run python benchmarks/scale_curve.py --sessions 1,2,4 --quality standard
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from protoface_emulator.avatar.options import VIDEO_TIERS
from protoface_emulator.testing import LiveKitServer, start_emulator_process

Json = dict[str, Any]
HERE = Path(__file__).resolve()
WORK = HERE.parent / ".work"  # the emulator's log per row, as bench.py keeps its processes'
SPEECH_RATE = 16000
HELD_FRACTION = 0.9
TIER_FPS = {q: t.fps for q, t in VIDEO_TIERS.items()}

FULL_PLAN: list[tuple[str, int]] = [("standard", n) for n in (0, 1, 2, 4, 8, 16)] + [
    ("mock", n) for n in (32, 64)
]
QUICK_PLAN: list[tuple[str, int]] = [("standard", n) for n in (0, 1, 4)] + [("mock", 8)]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 2)


def _cpu_seconds(root: psutil.Process) -> dict[int, float]:
    """CPU seconds so far of `root` and every descendant, by pid."""
    out: dict[int, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system + t.children_user + t.children_system
    return out


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, over all cores, so far."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- the load generator (its own process) ------------------------------------------


async def _load(job: Json) -> Json:
    """Run N watched sessions; report fps per viewer, status latencies and failures."""
    import aiohttp
    import numpy as np
    from livekit import rtc
    from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
    from livekit.agents.voice.avatar import DataStreamAudioOutput

    from protoface_emulator.testing import mint_token

    lk, emu = job["livekit"], job["emulator"]
    n, quality, window = int(job["sessions"]), job["quality"], float(job["seconds"])
    headers = {"Authorization": f"Bearer {emu['api_key']}"}

    def token(identity: str, room: str, **kw: Any) -> str:
        return mint_token(lk["api_key"], lk["api_secret"], identity, room, **kw)

    t = np.arange(int(SPEECH_RATE * 2.0)) / SPEECH_RATE
    envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    voice = np.sin(2 * np.pi * 180 * t) + 0.4 * np.sin(2 * np.pi * 360 * t)
    speech = (0.2 * envelope * voice * 32767).astype(np.int16)

    frames = [0] * n
    tasks: list[asyncio.Task[None]] = []
    rooms: list[rtc.Room] = []
    outputs: list[DataStreamAudioOutput] = []
    session_ids: list[str] = []
    create_errors: list[str] = []

    async def watch(index: int, track: rtc.Track) -> None:
        if track.kind != rtc.TrackKind.KIND_VIDEO:
            return
        async for _ in rtc.VideoStream(track):
            frames[index] += 1

    async def talk(out: DataStreamAudioOutput, offset: float) -> None:
        await asyncio.sleep(offset)
        while True:
            for start in range(0, len(speech), 1600):
                chunk = speech[start : start + 1600]
                await out.capture_frame(rtc.AudioFrame(chunk.tobytes(), SPEECH_RATE, 1, len(chunk)))
            out.flush()
            await out.wait_for_playout()
            await asyncio.sleep(1.0)

    async with aiohttp.ClientSession() as http:

        async def join(i: int) -> None:
            room = f"curve-{uuid.uuid4().hex[:8]}"
            agent_id, avatar_id = f"agent-{i}", f"avatar-{i}"
            agent, viewer = rtc.Room(), rtc.Room()
            rooms.extend([agent, viewer])
            # The agent sends speech and takes playback RPCs; like an agent that
            # does not watch its own avatar, it subscribes to nothing (so the load
            # generator receives each avatar's media once, at its viewer).
            await agent.connect(
                lk["url"],
                token(agent_id, room, kind="agent"),
                rtc.RoomOptions(auto_subscribe=False),
            )

            def subscribed(track: rtc.Track, *_: Any) -> None:
                tasks.append(asyncio.ensure_future(watch(i, track)))

            viewer.on("track_subscribed", subscribed)
            await viewer.connect(lk["url"], token(f"viewer-{i}", room))
            body = {
                "avatar_id": "av_stock_001",
                "quality": quality,
                "transport": {
                    "type": "livekit",
                    "url": lk["url"],
                    "room_name": room,
                    "worker_identity": avatar_id,
                    "worker_token": token(
                        avatar_id, room, attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: agent_id}
                    ),
                },
            }
            async with http.post(f"{emu['url']}/v1/sessions", json=body, headers=headers) as r:
                if r.status != 201:
                    create_errors.append(f"{r.status} {await r.text()}"[:200])
                    return
                session_ids.append((await r.json())["id"])
            outputs.append(
                DataStreamAudioOutput(
                    agent,
                    destination_identity=avatar_id,
                    sample_rate=SPEECH_RATE,
                    wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                )
            )

        # Join a few at a time, as a fleet of agents would ramp up; each agent
        # starts talking as soon as it has joined (its output waits for the
        # avatar's video), so no session sits idle while the rest ramp up and ends
        # on its idle timeout.
        talkers: list[asyncio.Task[None]] = []
        for first in range(0, n, 4):
            await asyncio.gather(*(join(i) for i in range(first, min(n, first + 4))))
            talkers.extend(
                asyncio.ensure_future(talk(out, 3.0 * (len(talkers) + k) / max(1, n)))
                for k, out in enumerate(outputs[len(talkers) :])
            )
        # Wait (bounded) for every avatar's video at its viewer.
        deadline = time.monotonic() + 30 + n
        while time.monotonic() < deadline and any(f == 0 for f in frames):  # noqa: ASYNC110 - counters, not events
            await asyncio.sleep(0.2)
        await asyncio.sleep(4.0)  # warm-up: encoders ramp up, first segments

        print(json.dumps({"event": "window_start"}), flush=True)
        frames0, began = list(frames), time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - began
        fps = [(f - f0) / elapsed for f, f0 in zip(frames, frames0, strict=True)]
        print(json.dumps({"event": "window_end"}), flush=True)

        statuses: dict[str, int] = {}
        failures: dict[str, int] = {}
        for session_id in session_ids:
            async with http.get(f"{emu['url']}/v1/sessions/{session_id}", headers=headers) as r:
                session = await r.json()
            statuses[session["status"]] = statuses.get(session["status"], 0) + 1
            if session.get("failure"):
                code = session["failure"]["code"]
                failures[code] = failures.get(code, 0) + 1
        for task in [*talkers, *tasks]:
            task.cancel()
        for joined in rooms:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(joined.disconnect(), 5)
    return {
        "fps": [round(f, 2) for f in fps],
        "statuses": statuses,
        "failures": failures,
        "create_errors": create_errors,
        "window_s": round(elapsed, 1),
    }


# -- the orchestrator --------------------------------------------------------------


async def _probe_status(url: str, api_key: str, latencies: list[float], errors: list[str]) -> None:
    """`GET /v1/status` every 50 ms until cancelled, from this (otherwise idle) process.

    Not from the load generator: its loop, busy decoding N videos, would add its
    own delays to what is meant to be the API's latency.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession() as http:
        while True:
            started = time.perf_counter()
            try:
                async with http.get(f"{url}/v1/status", headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(str(r.status))
            except aiohttp.ClientError as exc:
                errors.append(type(exc).__name__)
            latencies.append(1000 * (time.perf_counter() - started))
            await asyncio.sleep(0.05)


async def measure_point(livekit: LiveKitServer, quality: str, n: int, seconds: float) -> Json:
    """One row of the curve: a fresh emulator, N sessions, one window."""
    WORK.mkdir(parents=True, exist_ok=True)
    with (WORK / f"scale_curve-{quality}-{n}-emulator.log").open("wb") as log:
        emulator = start_emulator_process(
            args=["--log-level", "warning", "--join-timeout", str(30 + n)], stderr=log
        )
    try:
        root = psutil.Process(emulator.process.pid)
        job = {
            "sessions": n,
            "quality": quality,
            "seconds": seconds,
            "livekit": {
                "url": livekit.url,
                "api_key": livekit.api_key,
                "api_secret": livekit.api_secret,
            },
            "emulator": {"url": emulator.url, "api_key": emulator.api_key},
        }
        with (WORK / f"scale_curve-{quality}-{n}-load.log").open("wb") as load_log:
            load = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE),
                "--role",
                "load",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=load_log,
            )
        assert load.stdin is not None and load.stdout is not None
        load.stdin.write(json.dumps(job).encode())
        load.stdin.close()
        # Beside the emulator, what else shares the cores in the window: the SFU,
        # the load generator (N agents, N viewers decoding), and the machine as a whole.
        others = {
            "livekit": psutil.Process(livekit.process.pid),
            "load": psutil.Process(load.pid),
        }
        others0: dict[str, float] = {}
        others_cpu: dict[str, float] = {}
        machine0: float = 0.0
        machine_cpu: float | None = None
        cpu0: dict[int, float] = {}
        began = 0.0
        cpu_total: float | None = None
        api_cpu: float | None = None
        result: Json = {}
        latencies: list[float] = []
        probe_errors: list[str] = []
        prober: asyncio.Task[None] | None = None
        timeout = 120 + 3 * n + seconds
        async with asyncio.timeout(timeout):
            while line := await load.stdout.readline():
                message = json.loads(line)
                if message.get("event") == "window_start":
                    began, cpu0 = time.monotonic(), _cpu_seconds(root)
                    others0 = {k: sum(_cpu_seconds(p).values()) for k, p in others.items()}
                    machine0 = _busy_seconds()
                    prober = asyncio.ensure_future(
                        _probe_status(emulator.url, emulator.api_key, latencies, probe_errors)
                    )
                elif message.get("event") == "window_end":
                    if prober is not None:
                        prober.cancel()
                    elapsed = time.monotonic() - began
                    cpu1 = _cpu_seconds(root)
                    used = sum(cpu1[p] - cpu0.get(p, 0.0) for p in cpu1)
                    cpu_total = 100 * used / elapsed
                    # The API's own process (the command's), without its worker processes.
                    api_cpu = 100 * (cpu1.get(root.pid, 0.0) - cpu0.get(root.pid, 0.0)) / elapsed
                    others_cpu = {
                        k: 100 * (sum(_cpu_seconds(p).values()) - others0[k]) / elapsed
                        for k, p in others.items()
                    }
                    machine_cpu = 100 * (_busy_seconds() - machine0) / elapsed
                else:
                    result = message
            await load.wait()
    finally:
        emulator.stop()
    fps = result.get("fps", [])
    # Failed, never created, or no longer running when the window closed (ended on
    # a timeout, say): each is a session the load test lost.
    created = sum(result.get("statuses", {}).values())
    running = result.get("statuses", {}).get("running", 0)
    failed = len(result.get("create_errors", [])) + (created - running)
    tier_fps = TIER_FPS[quality]
    fps_min = round(min(fps), 1) if fps else None
    return {
        "quality": quality,
        "sessions": n,
        "viewer_fps_min": fps_min,
        "viewer_fps_median": round(statistics.median(fps), 1) if fps else None,
        "tier_fps": tier_fps,
        "emulator_cpu_percent": None if cpu_total is None else round(cpu_total, 1),
        "api_process_cpu_percent": _rounded(api_cpu),
        "emulator_cpu_percent_per_session": (
            None if cpu_total is None or n == 0 else round(cpu_total / n, 1)
        ),
        "livekit_cpu_percent": _rounded(others_cpu.get("livekit")),
        "load_generator_cpu_percent": _rounded(others_cpu.get("load")),
        "machine_cpu_percent": _rounded(machine_cpu),
        "machine_cpu_capacity": 100 * (os.cpu_count() or 1),
        "status_p50_ms": _percentile(latencies, 0.5),
        "status_p99_ms": _percentile(latencies, 0.99),
        "status_probes": len(latencies),
        "probe_errors": len(probe_errors),
        "failed_sessions": failed,
        "failures": result.get("failures", {}),
        "statuses": result.get("statuses", {}),
        "held": n > 0
        and failed == 0
        and fps_min is not None
        and len(fps) == n
        and fps_min >= HELD_FRACTION * tier_fps,
    }


async def measure_scale_curve(livekit: LiveKitServer, *, quick: bool = False) -> Json:
    """The whole curve (`QUICK_PLAN` or `FULL_PLAN`) against one `livekit-server`."""
    plan = QUICK_PLAN if quick else FULL_PLAN
    seconds = 10.0 if quick else 20.0
    rows = []
    for quality, n in plan:
        print(f"bench: scale_curve {quality} x{n} ...", file=sys.stderr, flush=True)
        try:
            rows.append(await measure_point(livekit, quality, n, seconds))
        except Exception as exc:
            rows.append(
                {"quality": quality, "sessions": n, "error": f"{type(exc).__name__}: {exc}"}
            )
    held = {
        q: max((r["sessions"] for r in rows if r.get("quality") == q and r.get("held")), default=0)
        for q in dict.fromkeys(q for q, _ in plan)
    }
    idle = next((r for r in rows if r.get("sessions") == 0), None)
    return {
        "rows": rows,
        "largest_held": held,
        "window_s": seconds,
        "cores": os.cpu_count(),
        "status_p99_idle_ms": None if idle is None else idle.get("status_p99_ms"),
    }


def main() -> None:
    """Run a curve (or, with --role load, the load generator the orchestrator starts)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["bench", "load"], default="bench")
    parser.add_argument("--sessions", default="0,1,4", help="comma-separated N")
    parser.add_argument("--quality", default="standard", choices=list(TIER_FPS))
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    if args.role == "load":
        print(json.dumps(asyncio.run(_load(json.loads(sys.stdin.read())))), flush=True)
        return

    from protoface_emulator.testing import local_livekit_server

    async def curve() -> list[Json]:
        with local_livekit_server() as livekit:
            return [
                await measure_point(livekit, args.quality, int(n), args.seconds)
                for n in args.sessions.split(",")
            ]

    for row in asyncio.run(curve()):
        print(json.dumps(row))


if __name__ == "__main__":
    main()

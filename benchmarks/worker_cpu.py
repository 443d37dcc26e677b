"""CPU cost of the emulator's avatar worker, per session, in a real LiveKit room.

Starts `livekit-server --dev` on loopback, runs N avatar workers in a child
process (the "host", standing in for the emulator), and plays each worker's
agent and viewer from this process: the agent streams speech over data streams
(2 s of voiced audio, 1 s pause, repeated), the viewer subscribes to the
avatar's video and audio as a browser would. The host's CPU time (user+system,
all threads, including LiveKit's native encoder) is sampled with psutil over a
steady-state window and divided by the number of sessions.

    uv run python benchmarks/worker_cpu.py                      # 1 session, defaults
    uv run python benchmarks/worker_cpu.py --sessions 3 --seconds 30
    uv run python benchmarks/worker_cpu.py --width 384 --height 384 --fps 25
    uv run python benchmarks/worker_cpu.py --quality mock          # a session quality tier

Results on the 2-core development container (Python 3.11, livekit 1.1.21,
livekit-agents 1.8.9, livekit-server 1.13.5), percent of one core:

    config                         per session   idle face   livekit-server (total)
    320x320 @ 20 fps (default), 1  4.4-5.7       3.6-4.8     1.7-1.9
    320x320 @ 20 fps, 3 sessions   4.4           3.6         4.3
    320x320 @ 20 fps, 5 sessions   4.5           3.4         6.3
    384x384 @ 25 fps, 1            5.4           4.4         1.7
    512x512 @ 25 fps, 1            7.8           7.2         2.1

(Viewers receive 20 fps even from a 25 fps source: LiveKit's default encoding
for video this small caps the frame rate at 20.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import psutil
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import DataStreamAudioOutput

from protoface_emulator.avatar.options import VIDEO_TIERS, WorkerOptions
from protoface_emulator.avatar.worker import make_worker_factory
from protoface_emulator.lifecycle import WorkerSpec
from protoface_emulator.testing import local_livekit_server

SPEECH_RATE = 16000


@dataclass
class Result:
    """One measurement."""

    sessions: int
    quality: str
    width: int
    height: int
    fps: float
    seconds: float
    host_cpu_percent_total: float
    host_cpu_percent_per_session: float
    host_cpu_percent_idle_per_session: float
    livekit_server_cpu_percent: float
    viewer_video_frames_per_second: float
    host_cpu_percent_by_thread: dict[str, float]


def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(SPEECH_RATE * seconds)) / SPEECH_RATE
    envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    voice = np.sin(2 * np.pi * 180 * t) + 0.4 * np.sin(2 * np.pi * 360 * t)
    return (0.2 * envelope * voice * 32767).astype(np.int16)


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each of a process's threads so far, summed by thread name (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        # utime and stime are fields 14 and 15; [0] here is field 3.
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        name = "python (main)" if task == str(pid) else name.rstrip("0123456789-_ ")
        by_name[name] = by_name.get(name, 0.0) + seconds
    return by_name


class _NullEvents:
    def on_connecting(self) -> None: ...
    def on_first_frame(self) -> None: ...
    def on_audio(self) -> None: ...
    def on_frames(self, count: int) -> None: ...
    def on_failed(self, code: str, message: str) -> None:
        print(f"worker failed: {code}: {message}", file=sys.stderr, flush=True)


def _override_publish_options(overrides: dict[str, bool]) -> None:
    """An experiment: publish every track with `overrides` (e.g. simulcast=False)."""
    original = rtc.LocalParticipant.publish_track

    async def publish_track(
        self: rtc.LocalParticipant,
        track: rtc.LocalTrack,
        options: rtc.TrackPublishOptions | None = None,
    ) -> rtc.LocalTrackPublication:
        options = options or rtc.TrackPublishOptions()
        for name, value in overrides.items():
            setattr(options, name, value)
        return await original(self, track, options)

    rtc.LocalParticipant.publish_track = publish_track  # type: ignore[method-assign]


async def _host(specs: list[dict[str, str]], options: WorkerOptions) -> None:
    """The child process: run the workers until SIGTERM."""
    factory = make_worker_factory(options)
    handles = [
        factory(
            WorkerSpec(
                session_id=spec["session_id"],
                url=spec["url"],
                room_name=spec["room_name"],
                identity=spec["identity"],
                quality=spec["quality"],
                token=spec["token"],
            ),
            _NullEvents(),
        )
        for spec in specs
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await asyncio.gather(*(h.aclose() for h in handles))


async def _measure(args: argparse.Namespace) -> Result:
    livekit = contextlib.ExitStack()
    server = livekit.enter_context(local_livekit_server())
    host: subprocess.Popen[bytes] | None = None
    rooms: list[rtc.Room] = []
    try:
        specs = []
        for i in range(args.sessions):
            room = f"bench-{i}"
            specs.append(
                {
                    "session_id": f"sess_bench_{i}",
                    "url": server.url,
                    "room_name": room,
                    "identity": f"avatar-{i}",
                    "quality": args.quality,
                    "token": server.token(
                        f"avatar-{i}",
                        room,
                        attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: f"agent-{i}"},
                    ),
                }
            )
        host = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; we never wait on it here
            [
                sys.executable,
                __file__,
                "--role",
                "host",
                "--width",
                str(args.width),
                "--height",
                str(args.height),
                "--fps",
                str(args.fps),
                *(["--cprofile", args.cprofile] if args.cprofile else []),
                *(["--publish", args.publish] if args.publish else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert host.stdin is not None and host.stdout is not None
        host.stdin.write(json.dumps(specs).encode())
        host.stdin.close()
        host.stdout.readline()  # "ready"

        video_frames = 0

        async def watch(track: rtc.Track) -> None:
            nonlocal video_frames
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                async for _ in rtc.VideoStream(track):
                    video_frames += 1
            else:
                async for _ in rtc.AudioStream(track):
                    pass

        outputs: list[DataStreamAudioOutput] = []
        tasks: list[asyncio.Task[None]] = []
        for i in range(args.sessions):
            agent = rtc.Room()
            await agent.connect(server.url, server.token(f"agent-{i}", f"bench-{i}", kind="agent"))
            viewer = rtc.Room()
            viewer.on(
                "track_subscribed",
                lambda track, *_: tasks.append(asyncio.ensure_future(watch(track))),
            )
            await viewer.connect(server.url, server.token(f"viewer-{i}", f"bench-{i}"))
            rooms += [agent, viewer]
            outputs.append(
                DataStreamAudioOutput(
                    agent,
                    destination_identity=f"avatar-{i}",
                    sample_rate=SPEECH_RATE,
                    wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                )
            )

        proc = psutil.Process(host.pid)
        lk_proc = psutil.Process(server.process.pid)

        def cpu_seconds(p: psutil.Process) -> float:
            t = p.cpu_times()
            return float(t.user + t.system)

        # Idle phase: faces on screen, nobody speaking.
        await asyncio.sleep(3.0)
        idle_start, idle_cpu = time.monotonic(), cpu_seconds(proc)
        await asyncio.sleep(min(10.0, args.seconds / 2))
        idle_percent = 100 * (cpu_seconds(proc) - idle_cpu) / (time.monotonic() - idle_start)

        speech = _speech(2.0)

        async def talk(out: DataStreamAudioOutput) -> None:
            while True:
                for start in range(0, len(speech), 1600):
                    chunk = speech[start : start + 1600]
                    await out.capture_frame(
                        rtc.AudioFrame(chunk.tobytes(), SPEECH_RATE, 1, len(chunk))
                    )
                out.flush()
                await out.wait_for_playout()
                await asyncio.sleep(1.0)

        talkers = [asyncio.ensure_future(talk(out)) for out in outputs]
        await asyncio.sleep(3.0)  # warm-up: encoder ramp-up, first segments
        start, cpu0, lk0, frames0 = (
            time.monotonic(),
            cpu_seconds(proc),
            cpu_seconds(lk_proc),
            video_frames,
        )
        threads0 = _thread_cpu(host.pid)
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - start
        threads1 = _thread_cpu(host.pid)
        by_thread = {
            name: round(100 * (seconds - threads0.get(name, 0.0)) / elapsed, 1)
            for name, seconds in sorted(threads1.items(), key=lambda kv: -kv[1])
        }
        total = 100 * (cpu_seconds(proc) - cpu0) / elapsed
        lk_total = 100 * (cpu_seconds(lk_proc) - lk0) / elapsed
        fps_seen = (video_frames - frames0) / elapsed / args.sessions
        for t in talkers + tasks:
            t.cancel()
        tier = _options(args).for_quality(args.quality)
        return Result(
            sessions=args.sessions,
            quality=args.quality,
            width=tier.video_width,
            height=tier.video_height,
            fps=tier.video_fps,
            seconds=round(elapsed, 1),
            host_cpu_percent_total=round(total, 1),
            host_cpu_percent_per_session=round(total / args.sessions, 1),
            host_cpu_percent_idle_per_session=round(idle_percent / args.sessions, 1),
            livekit_server_cpu_percent=round(lk_total, 1),
            viewer_video_frames_per_second=round(fps_seen, 1),
            host_cpu_percent_by_thread={k: v for k, v in by_thread.items() if v >= 0.1},
        )
    finally:
        for joined in rooms:
            await joined.disconnect()
        if host is not None and host.poll() is None:
            host.send_signal(signal.SIGTERM)
            try:
                host.wait(timeout=10)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()
        livekit.close()


def _options(args: argparse.Namespace) -> WorkerOptions:
    return WorkerOptions(video_width=args.width, video_height=args.height, video_fps=args.fps)


def main() -> None:
    """Run the benchmark (or, with --role host, the worker process it measures)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["bench", "host"], default="bench")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    defaults = WorkerOptions()
    parser.add_argument("--width", type=int, default=defaults.video_width)
    parser.add_argument("--height", type=int, default=defaults.video_height)
    parser.add_argument("--fps", type=float, default=defaults.video_fps)
    parser.add_argument(
        "--quality",
        choices=list(VIDEO_TIERS),
        default="standard",
        help="the sessions' quality tier (standard: --width/--height/--fps)",
    )
    parser.add_argument(
        "--cprofile", metavar="FILE", help="write a cProfile of the host's Python thread here"
    )
    parser.add_argument(
        "--publish",
        metavar="NAME=0|1,...",
        help="experiment: override TrackPublishOptions fields, e.g. simulcast=0,red=0,dtx=1",
    )
    args = parser.parse_args()
    options = _options(args)
    if args.role == "host" and args.publish:
        _override_publish_options(
            {k: v == "1" for k, v in (part.split("=") for part in args.publish.split(","))}
        )
    if args.role == "host":
        specs = json.loads(sys.stdin.read())
        if not args.cprofile:
            asyncio.run(_host(specs, options))
            return
        import cProfile

        with cProfile.Profile() as profile:
            asyncio.run(_host(specs, options))
        profile.dump_stats(args.cprofile)
        return
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = asyncio.run(_measure(args))
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()

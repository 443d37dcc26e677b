"""The offline demo: a talking Protoface avatar with no account and no network.

    scripts/demo [--out DIR]          (or: uv run python examples/offline_demo.py)

It starts a real `livekit-server --dev` and the `protoface-emulator` command on
loopback, runs a LiveKit Agents worker whose agent puts a Protoface avatar in the
room and speaks a bundled line through it, and has a viewer participant record
what a person in the room would see and hear. Then it shuts everything down and
writes:

- `DIR/avatar.png`: a contact sheet of the avatar frames the viewer received
  across the utterance (a green bar marks frames received while the agent spoke);
- `DIR/summary.json`: timings, frame and audio counts, how much the mouth moved
  while speaking and while silent, the hosted session's statuses, and how many
  child processes were still alive at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from livekit import api, rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobExecutorType
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.testing import (
    AvatarViewer,
    LiveKitServer,
    local_livekit_server,
    play,
    start_emulator_process,
    wav_frames,
)
from protoface_emulator.testing.png import contact_sheet, write_png

HERE = Path(__file__).resolve().parent
LINE_WAV = HERE / "assets" / "hello.wav"
LINE_TEXT = "Hello! I am your Protoface avatar, running completely offline. Nice to meet you."
AGENT_NAME = "protoface-offline-demo"
AVATAR_IDENTITY = "protoface-avatar-agent"
SILENCE_BEFORE = 1.5  # seconds the avatar idles before speaking, to show a still mouth
SILENCE_AFTER = 1.0
SHEET_FRAMES = 24

log = logging.getLogger("offline_demo")


@dataclass
class AgentReport:
    """What the agent's job tells the demo (written from the job's thread)."""

    start_called_at: float | None = None
    joined_at: float | None = None
    speech_started_at: float | None = None
    speech_ended_at: float | None = None
    session_id: str | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _line_seconds() -> float:
    with wave.open(str(LINE_WAV), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def load_line() -> list[rtc.AudioFrame]:
    """The bundled spoken line, as 20 ms frames."""
    return wav_frames(LINE_WAV)


def make_entrypoint(report: AgentReport) -> Any:
    """The agent: what a user's entrypoint looks like, plus timestamps for the summary."""

    async def entrypoint(ctx: JobContext) -> None:
        try:
            await ctx.connect()
            session: AgentSession[None] = AgentSession()
            # PROTOFACE_API_URL / PROTOFACE_API_KEY / LIVEKIT_* come from the environment.
            avatar = protoface.AvatarSession()
            report.start_called_at = time.monotonic()
            await avatar.start(session, room=ctx.room)
            report.session_id = avatar.session_id
            await session.start(
                agent=Agent(instructions="You greet people."),
                room=ctx.room,
                room_options=RoomOptions(audio_input=False, text_input=False),
            )
            await avatar.wait_for_join(timeout=30)
            report.joined_at = time.monotonic()
            await asyncio.sleep(SILENCE_BEFORE)
            handle = session.say(LINE_TEXT, audio=play(load_line()), add_to_chat_ctx=False)
            report.speech_started_at = time.monotonic()
            await handle.wait_for_playout()
            report.speech_ended_at = time.monotonic()
            await asyncio.sleep(SILENCE_AFTER)
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            log.exception("the demo agent failed")
        finally:
            report.done.set()
            ctx.shutdown(reason="demo finished")

    return entrypoint


async def watch_statuses(api_url: str, api_key: str, report: AgentReport, seen: list[str]) -> None:
    """Record each status the hosted session goes through, in order."""
    async with protoface.ProtofaceAPI(api_url=api_url, api_key=api_key) as client:
        while True:
            if report.session_id is not None:
                with contextlib.suppress(Exception):
                    status = (await client.get_session(report.session_id))["status"]
                    if not seen or seen[-1] != status:
                        seen.append(status)
                    if status in {"ended", "failed", "canceled"}:
                        return
            await asyncio.sleep(0.05)


def summarise(
    viewer: AvatarViewer, report: AgentReport, statuses: list[str], processes_left: int
) -> dict[str, Any]:
    """The numbers summary.json holds."""
    started = report.start_called_at
    assert started is not None
    speak_from, speak_to = report.speech_started_at, report.speech_ended_at
    speaking = viewer.video_between(speak_from, speak_to) if speak_from and speak_to else []
    silent_to = speak_from or float("inf")
    silent = [s for s in viewer.video if s.received_at < silent_to]
    silent = silent[1:]  # the first frame has no predecessor to move from

    def mean_motion(samples: list[Any]) -> float:
        return round(float(np.mean([s.mouth_motion for s in samples])), 3) if samples else 0.0

    def ms_since_start(t: float | None) -> float | None:
        return None if t is None else round((t - started) * 1000, 1)

    return {
        "time_to_avatar_joined_ms": ms_since_start(report.joined_at),
        "time_to_first_avatar_frame_ms": ms_since_start(viewer.first_video_at),
        "avatar_video_frames": len(viewer.video),
        "avatar_video_size": list(viewer.video_size) if viewer.video_size else None,
        "avatar_audio_seconds": round(viewer.audio_seconds(), 3),
        "avatar_speech_seconds": round(viewer.audio_seconds(min_level=0.05), 3),
        "agent_speech_seconds": round((speak_to or 0) - (speak_from or 0), 3),
        "line_seconds": round(_line_seconds(), 3),
        "mouth_motion_speaking": mean_motion(speaking),
        "mouth_motion_silent": mean_motion(silent),
        "mouth_open_frames_speaking": sum(s.mouth_open for s in speaking),
        "mouth_open_frames_silent": sum(s.mouth_open for s in silent),
        "hosted_session_id": report.session_id,
        "hosted_session_statuses": statuses,
        "processes_left": processes_left,
        "error": report.error,
    }


def write_sheet(viewer: AvatarViewer, report: AgentReport, path: Path) -> None:
    """Contact sheet: frames evenly spread from shortly before the speech to its end."""
    if not viewer.snapshots:
        raise RuntimeError("the viewer received no avatar video")
    start = (report.speech_started_at or viewer.snapshots[0][0]) - 0.5
    end = (report.speech_ended_at or viewer.snapshots[-1][0]) + 0.3
    window = [snap for snap in viewer.snapshots if start <= snap[0] <= end] or viewer.snapshots
    picks = np.linspace(0, len(window) - 1, min(SHEET_FRAMES, len(window))).round().astype(int)
    chosen = [window[i] for i in picks]
    speaking = [
        report.speech_started_at is not None
        and report.speech_ended_at is not None
        and report.speech_started_at <= t <= report.speech_ended_at
        for t, _ in chosen
    ]
    write_png(path, contact_sheet([frame for _, frame in chosen], marks=speaking))


async def run(out: Path) -> dict[str, Any]:
    """Start everything, run the agent once, record, shut down; returns the summary."""
    me = psutil.Process()
    with local_livekit_server() as livekit:
        summary_input = await _run_with(livekit)
    left = [p for p in me.children(recursive=True) if p.is_running() and p.status() != "zombie"]
    viewer, report, statuses = summary_input
    summary = summarise(viewer, report, statuses, processes_left=len(left))
    write_sheet(viewer, report, out / "avatar.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


async def _run_with(livekit: LiveKitServer) -> tuple[AvatarViewer, AgentReport, list[str]]:
    """The demo against a running LiveKit server: emulator, agent worker, viewer."""
    emulator = start_emulator_process(args=["--log-level", "warning"])
    emulator_url, protoface_key = emulator.url, emulator.api_key
    os.environ.update(
        {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret,
            "PROTOFACE_API_URL": emulator_url,
            "PROTOFACE_API_KEY": protoface_key,
        }
    )
    report = AgentReport()
    statuses: list[str] = []
    room = f"demo-{uuid.uuid4().hex[:8]}"
    viewer = AvatarViewer(avatar_identity=AVATAR_IDENTITY, keep_every=1)
    worker = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        ws_url=livekit.url,
        api_key=livekit.api_key,
        api_secret=livekit.api_secret,
        port=0,
        num_idle_processes=0,
        # livekit-server only dispatches to workers reporting a load below its target,
        # and the default load is this machine's CPU, which the avatar video we are
        # about to watch keeps busy on 2 cores: report the worker idle instead.
        load_fnc=lambda: 0.0,
    )
    worker.rtc_session(make_entrypoint(report), agent_name=AGENT_NAME)
    registered = asyncio.Event()
    worker.on("worker_registered", lambda *_: registered.set())
    worker_task = asyncio.create_task(worker.run(devmode=True))
    try:
        await asyncio.wait_for(registered.wait(), timeout=30)
        await viewer.connect(livekit.url, livekit.token("demo-viewer", room))
        watcher = asyncio.create_task(watch_statuses(emulator_url, protoface_key, report, statuses))
        async with livekit.api() as lk:
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room)
            )
        await asyncio.to_thread(report.done.wait, 90)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(watcher, timeout=15)
        watcher.cancel()
    finally:
        await viewer.aclose()
        await worker.aclose()
        worker_task.cancel()
        await asyncio.gather(worker_task, return_exceptions=True)
        emulator.stop()
    return viewer, report, statuses


def main() -> int:
    """Run the demo and print where its results are."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "out", help="output folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The native SDK warns about handles it already dropped while rooms close.
    logging.getLogger("livekit").setLevel(logging.ERROR)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = asyncio.run(run(out))
    print("Protoface offline demo")
    print(f"  avatar joined after     {summary['time_to_avatar_joined_ms']} ms")
    print(f"  first frame seen after  {summary['time_to_first_avatar_frame_ms']} ms")
    print(
        f"  viewer received         {summary['avatar_video_frames']} frames, "
        f"{summary['avatar_audio_seconds']} s of avatar audio"
    )
    print(
        f"  mouth motion            {summary['mouth_motion_speaking']} speaking vs "
        f"{summary['mouth_motion_silent']} silent"
    )
    print(f"  hosted session          {' -> '.join(summary['hosted_session_statuses'])}")
    print(f"  processes left          {summary['processes_left']}")
    print(f"  wrote {out / 'avatar.png'} and {out / 'summary.json'}")
    ok = summary["error"] is None and summary["avatar_video_frames"] > 0
    if not ok:
        print(f"  demo failed: {summary['error']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The avatar path end to end: our plugin, a real LiveKit room, the emulator's real worker.

Run by the orchestrator (`bench.py`) with the workspace interpreter, as its own
process; it prints one JSON result on stdout:

    python benchmarks/e2e.py '{"livekit": {...}, "runs": 20, "cpu_sessions": 3, ...}'

It starts the `protoface-emulator` command (real LiveKit worker, with the
timestamping generator of `probe_worker.py`), then:

1. `runs` times, one after another, in a fresh room each: a viewer
   (`protoface_emulator.testing.AvatarViewer`) joins; an agent participant joins;
   `t0`; `AvatarSession.start()`; `AgentSession.start()`; the viewer's first
   avatar video frame (`first_frame_ms` = its arrival - `t0`). After a second of
   idle face, the agent says 1.5 s of synthetic voiced audio (loud from its first
   sample) through `session.say(audio=...)`. `audio_to_mouth_ms` runs from the
   moment the first voiced audio frame is handed to the avatar's audio output
   (`DataStreamAudioOutput.capture_frame`, the plugin's hand-off to the data
   stream) to the arrival of the first viewer frame whose mouth is open
   (`VideoSample.mouth_open`). Stage timestamps (hosted session `started_at` and
   `first_frame_at`, the avatar joining, the track subscription, the probe lines)
   give the profile of both.
2. `cpu_sessions` sessions at once, each speaking 2 s and pausing 1 s in a loop,
   watched by a viewer each: the emulator process's CPU time (user + system, all
   threads, including LiveKit's native video encoder) over `cpu_seconds`, per
   session, in percent of one core. The same while the faces are idle.

Everything is on 127.0.0.1; every process and room started here is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.testing import (
    AvatarViewer,
    EmulatorProcess,
    mint_token,
    pcm_frames,
    start_emulator_process,
)

HERE = Path(__file__).resolve().parent
AVATAR_IDENTITY = "protoface-avatar-agent"
SPEECH_RATE = 16000
FRAME_MS = 20
IDLE_BEFORE_SPEECH = 1.0
SPEECH_SECONDS = 1.5

log = logging.getLogger("bench.e2e")
Json = dict[str, Any]


# -- the emulator command ------------------------------------------------------


def start_emulator(log_path: Path, probe_path: Path) -> EmulatorProcess:
    """Start the emulator command with the probing real worker; wait for its URL."""
    pythonpath = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    with log_path.open("ab") as errors:
        return start_emulator_process(
            args=["--log-level", "warning", "--worker-factory", "probe_worker:factory"],
            env={"PYTHONPATH": pythonpath, "BENCH_PROBE_LOG": str(probe_path)},
            stderr=errors,
        )


# -- speech and the capture probe ------------------------------------------------


def speech_frames(seconds: float) -> list[rtc.AudioFrame]:
    """Voiced synthetic speech, loud from its first sample, as 20 ms frames."""
    t = np.arange(int(SPEECH_RATE * seconds)) / SPEECH_RATE
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3.0 * t))
    voice = np.sin(2 * np.pi * 180 * t) + 0.4 * np.sin(2 * np.pi * 360 * t)
    return pcm_frames((0.25 * envelope * voice * 32767).astype(np.int16), SPEECH_RATE, FRAME_MS)


def _voiced(frame: rtc.AudioFrame) -> bool:
    return bool(np.any(np.frombuffer(frame.data, dtype=np.int16)))


@dataclass
class CaptureProbe:
    """When the first voiced frame reaches `DataStreamAudioOutput.capture_frame`, once armed."""

    armed: bool = False
    first_capture: float | None = None
    first_yield: float | None = None

    def arm(self) -> None:
        self.armed = True
        self.first_capture = None
        self.first_yield = None

    def install(self) -> None:
        original = DataStreamAudioOutput.capture_frame
        probe = self

        async def capture_frame(output: DataStreamAudioOutput, frame: rtc.AudioFrame) -> None:
            if probe.armed and probe.first_capture is None and _voiced(frame):
                probe.first_capture = time.monotonic()
            await original(output, frame)

        DataStreamAudioOutput.capture_frame = capture_frame  # type: ignore[method-assign,assignment]

    async def play(self, frames: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
        for frame in frames:
            if self.armed and self.first_yield is None:
                self.first_yield = time.monotonic()
            yield frame


PROBE = CaptureProbe()


# -- one agent + avatar + viewer -------------------------------------------------


def _token(lk: Json, identity: str, room: str, *, agent: bool = False) -> str:
    return mint_token(
        lk["api_key"], lk["api_secret"], identity, room, kind="agent" if agent else "standard"
    )


@dataclass
class Party:
    """One room's viewer, agent participant, AgentSession and AvatarSession."""

    room_name: str
    viewer: AvatarViewer
    agent_room: rtc.Room = field(default_factory=rtc.Room)
    session: AgentSession[None] | None = None
    avatar: protoface.AvatarSession | None = None
    events: dict[str, float] = field(default_factory=dict)

    def _mark(self, name: str) -> None:
        self.events.setdefault(name, time.monotonic())

    async def join(self, lk: Json) -> None:
        """The viewer, then the agent participant, join the room."""

        def on_participant(participant: rtc.RemoteParticipant) -> None:
            if participant.identity == AVATAR_IDENTITY:
                self._mark("avatar_joined")

        def on_track(
            track: rtc.Track, _pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
        ) -> None:
            if who.identity == AVATAR_IDENTITY and track.kind == rtc.TrackKind.KIND_VIDEO:
                self._mark("video_subscribed")

        self.viewer.room.on("participant_connected", on_participant)
        self.viewer.room.on("track_subscribed", on_track)
        suffix = uuid.uuid4().hex[:6]
        await self.viewer.connect(lk["url"], _token(lk, f"viewer-{suffix}", self.room_name))
        await self.agent_room.connect(
            lk["url"], _token(lk, f"agent-{suffix}", self.room_name, agent=True)
        )

    async def start_agent(self, lk: Json, emulator: EmulatorProcess) -> None:
        """What a user's entrypoint does: avatar.start(), then session.start()."""
        self.session = AgentSession()
        self.avatar = protoface.AvatarSession(api_url=emulator.url, api_key=emulator.api_key)
        self.events["t0"] = time.monotonic()
        self.events["t0_wall"] = time.time()
        await self.avatar.start(
            self.session,
            self.agent_room,
            livekit_url=lk["url"],
            livekit_api_key=lk["api_key"],
            livekit_api_secret=lk["api_secret"],
        )
        self._mark("avatar_start_returned")
        await self.session.start(
            agent=Agent(instructions="You speak pre-rendered lines."),
            room=self.agent_room,
            room_options=RoomOptions(audio_input=False, text_input=False),
        )
        self._mark("session_start_returned")

    async def aclose(self) -> None:
        """Leave nothing: the session, the hosted avatar, both participants."""
        if self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.aclose(), 15)
        if self.avatar is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.avatar.aclose(), 15)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.agent_room.disconnect(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.viewer.aclose(), 10)


def _parse_wall(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _read_probe(path: Path) -> dict[str, dict[str, list[float]]]:
    events: dict[str, dict[str, list[float]]] = {}
    if not path.exists():
        return events
    for line in path.read_text().splitlines():
        item = json.loads(line)
        events.setdefault(item["session_id"], {}).setdefault(item["event"], []).append(item["t"])
    return events


async def one_run(index: int, lk: Json, emulator: EmulatorProcess, probe_path: Path) -> Json:
    """One fresh room: first frame, then audio to mouth. Returns the run's timings."""
    party = Party(f"e2e-{index}-{uuid.uuid4().hex[:6]}", AvatarViewer(AVATAR_IDENTITY))
    try:
        await party.join(lk)
        await party.start_agent(lk, emulator)
        first = await party.viewer.wait_first_video(timeout=20)
        assert party.avatar is not None and party.session is not None
        session_id = party.avatar.session_id
        t0, t0_wall = party.events["t0"], party.events["t0_wall"]

        async with protoface.ProtofaceAPI(api_url=emulator.url, api_key=emulator.api_key) as c:
            hosted = await c.get_session(session_id or "")

        await asyncio.sleep(IDLE_BEFORE_SPEECH)
        PROBE.arm()
        handle = party.session.say(
            "benchmark line",
            audio=PROBE.play(speech_frames(SPEECH_SECONDS)),
            add_to_chat_ctx=False,
        )
        await asyncio.wait_for(handle.wait_for_playout(), timeout=20)
        await asyncio.sleep(0.3)
        capture, said = PROBE.first_capture, PROBE.first_yield
        PROBE.armed = False

        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - t0) * 1000, 1)

        def wall_ms(value: object) -> float | None:
            wall = _parse_wall(value)
            return None if wall is None else round((wall - t0_wall) * 1000, 1)

        mouth_at: float | None = None
        open_before = 0
        if capture is not None:
            before = party.viewer.video_between(capture - 0.5, capture)
            open_before = sum(s.mouth_open for s in before)
            mouth_at = next(
                (
                    s.received_at
                    for s in party.viewer.video
                    if s.received_at > capture and s.mouth_open
                ),
                None,
            )
        voiced_audio_at = next(
            (
                s.received_at
                for s in party.viewer.audio
                if capture is not None and s.received_at > capture and s.level > 0.05
            ),
            None,
        )
        probe = _read_probe(probe_path).get(session_id or "", {})
        audio_in = next((t for t in probe.get("audio_in", []) if capture and t >= capture), None)
        mouth_frame = next(
            (t for t in probe.get("mouth_frame", []) if capture and t >= capture), None
        )
        worker_first = next(iter(probe.get("first_frame", [])), None)
        worker_first_sent = next(iter(probe.get("first_frame_sent", [])), None)
        mouth_sent = next(
            (t for t in probe.get("mouth_frame_sent", []) if capture and t >= capture), None
        )

        def since_capture(t: float | None) -> float | None:
            return None if t is None or capture is None else round((t - capture) * 1000, 1)

        return {
            "run": index,
            "session_id": session_id,
            "first_frame_ms": ms(first),
            "stages_ms": {
                "avatar_start_returned": ms(party.events.get("avatar_start_returned")),
                "session_start_returned": ms(party.events.get("session_start_returned")),
                "worker_connecting": wall_ms(hosted.get("started_at")),
                "avatar_joined_room": ms(party.events.get("avatar_joined")),
                "worker_first_frame_out": ms(worker_first),
                "worker_first_frame_sent": ms(worker_first_sent),
                "first_frame_at_hosted": wall_ms(hosted.get("first_frame_at")),
                "video_subscribed": ms(party.events.get("video_subscribed")),
                "first_frame_received": ms(first),
            },
            "audio_to_mouth_ms": since_capture(mouth_at),
            "mouth_stages_ms": {
                "say_to_capture": (
                    None if said is None or capture is None else round((capture - said) * 1000, 1)
                ),
                "worker_audio_in": since_capture(audio_in),
                "worker_mouth_frame_out": since_capture(mouth_frame),
                "worker_mouth_frame_sent": since_capture(mouth_sent),
                "viewer_mouth_open": since_capture(mouth_at),
                "viewer_voiced_audio": since_capture(voiced_audio_at),
            },
            "mouth_open_frames_before_speech": open_before,
            "video_frames": len(party.viewer.video),
        }
    finally:
        PROBE.armed = False
        await party.aclose()


# -- CPU per session -------------------------------------------------------------


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _cpu_window(processes: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    """Percent of one core used by each process over the next `seconds`."""
    before = {name: _cpu_seconds(p) for name, p in processes.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    return {
        name: round(100 * (_cpu_seconds(p) - before[name]) / elapsed, 1)
        for name, p in processes.items()
    }


async def cpu_per_session(
    lk: Json, emulator: EmulatorProcess, sessions: int, seconds: float
) -> Json:
    """`sessions` avatars streaming at once; the emulator's CPU per session."""
    parties = [
        Party(f"cpu-{i}-{uuid.uuid4().hex[:6]}", AvatarViewer(AVATAR_IDENTITY))
        for i in range(sessions)
    ]
    talkers: list[asyncio.Task[None]] = []
    try:
        for party in parties:
            await party.join(lk)
            await party.start_agent(lk, emulator)
        await asyncio.gather(*(p.viewer.wait_first_video(timeout=30) for p in parties))
        processes = {
            "emulator": psutil.Process(emulator.process.pid),
            "livekit_server": psutil.Process(int(lk["pid"])),
            "agents_and_viewers": psutil.Process(),
        }
        await asyncio.sleep(2.0)  # encoder ramp-up
        idle = await _cpu_window(processes, min(5.0, seconds / 2))
        speech = speech_frames(2.0)

        async def talk(party: Party) -> None:
            assert party.session is not None
            while True:
                handle = party.session.say(
                    "benchmark", audio=PROBE.play(speech), add_to_chat_ctx=False
                )
                await handle.wait_for_playout()
                await asyncio.sleep(1.0)

        talkers = [asyncio.create_task(talk(p)) for p in parties]
        await asyncio.sleep(2.0)
        frames_before = sum(len(p.viewer.video) for p in parties)
        started = time.monotonic()
        speaking = await _cpu_window(processes, seconds)
        fps = (sum(len(p.viewer.video) for p in parties) - frames_before) / (
            (time.monotonic() - started) * sessions
        )
        return {
            "sessions": sessions,
            "window_s": seconds,
            "emulator_cpu_total_pct": speaking["emulator"],
            "emulator_cpu_per_session_pct": round(speaking["emulator"] / sessions, 1),
            "emulator_cpu_idle_per_session_pct": round(idle["emulator"] / sessions, 1),
            "livekit_server_cpu_pct": speaking["livekit_server"],
            "agents_and_viewers_cpu_pct": speaking["agents_and_viewers"],
            "viewer_fps_per_session": round(fps, 1),
        }
    finally:
        for task in talkers:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)
        await asyncio.gather(*(p.aclose() for p in parties), return_exceptions=True)


# -- main ------------------------------------------------------------------------


async def _bounded(
    name: str, aw: Awaitable[Json], timeout: float, errors: list[str]
) -> Json | None:
    try:
        return await asyncio.wait_for(aw, timeout)
    except Exception as exc:
        log.exception("%s failed", name)
        errors.append(f"{name}: {type(exc).__name__}: {exc}"[:400])
        return None


async def run(job: Json) -> Json:
    lk: Json = job["livekit"]
    work = Path(job["work_dir"])
    probe_path = work / "probe.jsonl"
    PROBE.install()
    emulator = start_emulator(work / "e2e-emulator.log", probe_path)
    errors: list[str] = []
    runs: list[Json] = []
    cpu: Json | None = None
    left_running: int | None = None
    deadline = time.monotonic() + float(job["deadline_s"])
    try:
        for index in range(int(job["runs"])):
            if time.monotonic() > deadline:
                errors.append(f"stopped after {index} runs: deadline")
                break
            result = await _bounded(
                f"run {index}", one_run(index, lk, emulator, probe_path), 60, errors
            )
            if result is not None:
                runs.append(result)
        cpu = await _bounded(
            "cpu",
            cpu_per_session(lk, emulator, int(job["cpu_sessions"]), float(job["cpu_seconds"])),
            120,
            errors,
        )
        async with protoface.ProtofaceAPI(api_url=emulator.url, api_key=emulator.api_key) as c:
            left_running = 0
            async for _ in c.list_sessions(status=["queued", "starting", "running", "ending"]):
                left_running += 1
    finally:
        emulator.stop()
    return {
        "runs": runs,
        "cpu": cpu,
        "errors": errors,
        "hosted_sessions_left_running": left_running,
        "emulator_exit_code": emulator.process.returncode,
        "probe_lines": sum(1 for _ in probe_path.open()) if probe_path.exists() else 0,
    }


def main() -> int:
    """Run the e2e measurement from the JSON job on argv; print one JSON result."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    job: Json = json.loads(sys.argv[1])
    work = Path(job["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "probe.jsonl").unlink(missing_ok=True)
    result = asyncio.run(run(job))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One conversation of the lifetime benchmark, run by either plugin's interpreter.

    python benchmarks/lifetime_client.py '<job json>'

The job names a scenario, a LiveKit server, the emulator, and the tokens the
orchestrator minted for the agent and the viewer (this script mints none). It
prints one JSON line with what the viewer heard and saw:

- `leave`: the avatar is removed from the room mid-conversation; seconds until
  the viewer hears the agent again (from any participant), and, for a plugin
  that recovers, until `"avatar_restored"` and the replacement's first frame;
- `steady`: a quiet conversation (a short line every 10 s) for the window the
  orchestrator counts API requests in;
- `cap`: a conversation longer than `max_duration_seconds`; the viewer's
  video gaps, the speech heard from avatars and from the agent's own track.

Only public names of the plugin are used, so the published 1.8.9 runs it too
(its `AvatarSession` emits no lifetime events; those fields stay None).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import api, rtc
from livekit.agents import Agent, AgentSession, utils
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

Json = dict[str, Any]
RATE = 16000
HEARD = 0.05


@dataclass
class Viewer:
    """Records, per participant, when video frames and audible audio arrived."""

    agent_identity: str
    room: rtc.Room = field(default_factory=rtc.Room)
    video: dict[str, list[float]] = field(default_factory=dict)
    audible: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def connect(self, url: str, token: str) -> None:
        self.room.on("track_subscribed", self._subscribed)
        self.room.on("track_unsubscribed", self._unsubscribed)
        await self.room.connect(url, token)

    def _subscribed(
        self, track: rtc.Track, _: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
    ) -> None:
        coro = (
            self._video(track, who.identity)
            if track.kind == rtc.TrackKind.KIND_VIDEO
            else (self._audio(track, who.identity))
        )
        self.tasks[track.sid] = asyncio.ensure_future(coro)

    def _unsubscribed(
        self, track: rtc.Track, _: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
    ) -> None:
        # A stream left open on a track that is gone can be handed another
        # track's frames by the native SDK: stop reading it.
        task = self.tasks.pop(track.sid, None)
        if task is not None:
            task.cancel()

    async def _video(self, track: rtc.Track, identity: str) -> None:
        times = self.video.setdefault(identity, [])
        async for _ in rtc.VideoStream(track):
            times.append(time.monotonic())

    async def _audio(self, track: rtc.Track, identity: str) -> None:
        heard = self.audible.setdefault(identity, [])
        async for event in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float32)
            level = float(np.sqrt(np.mean(samples**2))) / 32768.0 if samples.size else 0.0
            if level > HEARD:
                heard.append((time.monotonic(), event.frame.duration))

    def heard_since(self, since: float, *, avatars_only: bool = False) -> float:
        return sum(
            duration
            for identity, items in self.audible.items()
            if not (avatars_only and identity == self.agent_identity)
            for at, duration in items
            if at >= since
        )

    def own_track_heard(self) -> float:
        return sum(d for _, d in self.audible.get(self.agent_identity, []))

    def avatar_frames(self) -> list[float]:
        return sorted(
            t
            for identity, times in self.video.items()
            if identity != self.agent_identity
            for t in times
        )

    async def aclose(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.room.disconnect()


def tone(seconds: float) -> list[rtc.AudioFrame]:
    """A voiced test signal (a 220 Hz tone) in 20 ms frames."""
    per = RATE // 50
    frames = []
    for index in range(int(seconds * 50)):
        t = (np.arange(per) + index * per) / RATE
        samples = (0.3 * 32767 * np.sin(2 * math.pi * 220 * t)).astype(np.int16)
        frames.append(rtc.AudioFrame(samples.tobytes(), RATE, 1, per))
    return frames


async def frames_of(frames: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame


async def say(session: AgentSession[Any], seconds: float, timeout: float = 30.0) -> bool:
    handle = session.say("line", audio=frames_of(tone(seconds)), add_to_chat_ctx=False)
    try:
        await asyncio.wait_for(handle.wait_for_playout(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


async def until(predicate: Any, timeout: float) -> float | None:
    """Seconds until `predicate()` held, or None if it did not within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    return None


async def scenario_leave(job: Json, agent: Json, viewer: Viewer, lk: Json) -> Json:
    session, avatar = agent["session"], agent["avatar"]
    restored_at: list[float] = []
    if hasattr(protoface, "AvatarRestoredEvent"):
        avatar.on("avatar_restored", lambda ev: restored_at.append(time.monotonic()))
    await say(session, 1.0)
    async with api.LiveKitAPI(lk["http_url"], lk["api_key"], lk["api_secret"]) as admin:
        await admin.room.remove_participant(
            api.RoomParticipantIdentity(room=job["room"], identity=avatar.avatar_identity)
        )
    removed = time.monotonic()
    await asyncio.sleep(0.3)  # the agent's next line comes right after
    spoken = asyncio.ensure_future(say(session, 3.0, timeout=25.0))
    heard = await until(lambda: viewer.heard_since(removed) > 0.2, timeout=20.0)
    await spoken
    recovers = hasattr(protoface, "AvatarRestoredEvent")
    restored = await until(lambda: bool(restored_at), timeout=45.0) if recovers else None
    first_frames = {i: t[0] for i, t in viewer.video.items() if t}
    replacement = [t for i, t in first_frames.items() if i.endswith("-2")]
    return {
        "heard_again_s": heard,
        "restored_s": round(restored_at[0] - removed, 3) if restored_at else None,
        "replacement_first_frame_s": round(replacement[0] - removed, 3) if replacement else None,
        "recovers": recovers,
        "restored_wait_s": restored,
    }


async def scenario_steady(job: Json, agent: Json, viewer: Viewer, lk: Json) -> Json:
    session = agent["session"]
    start = time.monotonic()
    lines = 0
    while time.monotonic() - start < job["seconds"]:
        await say(session, 1.0)
        lines += 1
        await asyncio.sleep(max(0.0, 10.0 * lines - (time.monotonic() - start)))
    return {"window": [start, time.monotonic()], "lines": lines}


async def scenario_cap(job: Json, agent: Json, viewer: Viewer, lk: Json) -> Json:
    session = agent["session"]
    start = time.monotonic()
    spoken = 0.0
    played = 0
    while time.monotonic() - start < job["seconds"]:
        played += int(await say(session, job["line_s"]))
        spoken += job["line_s"]
        await asyncio.sleep(job["pause_s"])
    await asyncio.sleep(1.0)
    frames = [t for t in viewer.avatar_frames() if t >= start]
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    return {
        "window": [start, time.monotonic()],
        "spoken_s": round(spoken, 2),
        "lines_played_out": played,
        "heard_from_avatars_s": round(viewer.heard_since(start, avatars_only=True), 2),
        "heard_from_agent_track_s": round(viewer.own_track_heard(), 2),
        "max_video_gap_s": round(max(gaps), 3) if gaps else None,
        "video_gaps_over_0_5_s": [round(g, 3) for g in gaps if g > 0.5],
        "avatar_identities_seen": sorted(i for i in viewer.video if i != viewer.agent_identity),
        "video_until_end": bool(frames) and frames[-1] > time.monotonic() - 3.0,
    }


SCENARIOS = {"leave": scenario_leave, "steady": scenario_steady, "cap": scenario_cap}


async def run(job: Json) -> Json:
    lk = job["livekit"]
    viewer = Viewer(agent_identity=job["agent_identity"])
    room = rtc.Room()
    await room.connect(lk["url"], job["agent_token"])
    await viewer.connect(lk["url"], job["viewer_token"])
    session: AgentSession[Any] = AgentSession()
    avatar = protoface.AvatarSession(
        api_url=job["emulator"]["url"], api_key=job["emulator"]["api_key"], **job["options"]
    )
    try:
        await avatar.start(
            session,
            room,
            livekit_url=lk["url"],
            livekit_api_key=lk["api_key"],
            livekit_api_secret=lk["api_secret"],
        )
        await session.start(
            agent=Agent(instructions="benchmark"),
            room=room,
            room_options=RoomOptions(audio_input=False, text_input=False),
        )
        joined = await until(lambda: bool(viewer.avatar_frames()), timeout=30.0)
        if joined is None:
            return {"error": "the avatar never showed video"}
        result = await SCENARIOS[job["scenario"]](
            job, {"session": session, "avatar": avatar}, viewer, lk
        )
        result["session_ids"] = list(getattr(avatar, "session_ids", []) or [avatar.session_id])
        # Out before the teardown: the native SDK has been seen to abort the
        # process while rooms close, and the measurement is complete by now.
        print(json.dumps(result), flush=True)
        return result
    finally:
        await session.aclose()
        await avatar.aclose()
        await viewer.aclose()
        await room.disconnect()


async def in_http_context(job: Json) -> Json:
    # The published plugin only works inside a job's HTTP context; ours in both.
    async with utils.http_context.open():
        return await run(job)


def main() -> int:
    job = json.loads(sys.argv[1])
    result = asyncio.run(in_http_context(job))
    if "error" in result:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The parity measurements of `benchmarks/run` (`--only parity`): with and without the avatar.

The same agent, in the same run, once speaking through a Protoface avatar (the
in-process emulator) and once through its own audio track, each heard by a
viewer participant in a real room (`livekit-server --dev`):

- `first_audio`: `say()` to the first audible audio at the viewer (p50);
- `barge_in`: `SpeechHandle.interrupt()` to the last audible audio at the
  viewer (p50, p90), to the handle settling, and (avatar) to the mouth closed;
- `storm`: 12 interruptions in a row, how many handles were unsettled 3 s on;
- `false_interruption`: through livekit-agents' own path (a user's 0.8 s noise
  with no words, 1.5 s into an 8 s line, with the kit's `LevelVAD` and
  `NoWordsSTT`): resumed or not, seconds of the line heard, the audio gap;
- `pause`: (avatar) `pause()` to silence at the viewer, and the line heard
  after `resume()`;
- `barge_in_under_load`: the barge-in above, avatar and own track, with two
  CPU-bound processes beside (`bargein_load.py`);
- `hard_death`: (avatar) the worker SIGKILLed, the worker frozen, the whole
  emulator SIGKILLed, then a 3 s line said 2 s later: its start to the first
  audio heard in the room (the mute time), to `avatar_lost`, to its playout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from livekit import api, rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.hosting import ProcessPool
from protoface_emulator.local.launch import start_emulator_process
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AgentInRoom, AvatarViewer, LiveKitServer, agent_in, viewer_in
from protoface_emulator.testing.audio import tone
from protoface_emulator.testing.user import UserInRoom, listening_session, user_in

Json = dict[str, Any]
HEARD = 0.05
MODES = ("avatar", "none")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.array(values), q)), 3)


def _loud(viewer: AvatarViewer, since: float) -> list[float]:
    return [s.received_at for s in viewer.audio if s.level > HEARD and s.received_at >= since]


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@asynccontextmanager
async def _conversation(
    livekit: LiveKitServer,
    emu: Any,
    mode: str,
    *,
    session: AgentSession[Any] | None = None,
    user: UserInRoom | None = None,
    room: str | None = None,
    options: Json | None = None,
) -> AsyncIterator[tuple[AgentInRoom[Any], AvatarViewer, AvatarViewer]]:
    """An agent in a fresh room, a viewer of what speaks for it, and one of its own track."""
    room = room or f"parity-{mode}-{uuid.uuid4().hex[:6]}"
    identity = f"agent-{uuid.uuid4().hex[:6]}"
    room_options = (
        RoomOptions(audio_input=True, text_input=False, participant_identity=user.identity)
        if user is not None
        else RoomOptions(audio_input=False, text_input=False)
    )

    async def start(agent_session: AgentSession[Any], agent_room: rtc.Room) -> Any:
        avatar = None
        if mode == "avatar":
            avatar = protoface.AvatarSession(
                api_url=emu.url, api_key=emu.api_key, **(options or {})
            )
            await avatar.start(
                agent_session,
                agent_room,
                livekit_url=livekit.url,
                livekit_api_key=livekit.api_key,
                livekit_api_secret=livekit.api_secret,
            )
        await agent_session.start(
            agent=Agent(instructions="You speak pre-rendered lines."),
            room=agent_room,
            room_options=room_options,
        )
        return avatar

    async with (
        viewer_in(livekit, room, None if mode == "avatar" else identity) as viewer,
        viewer_in(livekit, room, identity) as own,
        agent_in(livekit, room, start, session=session, identity=identity) as agent,
    ):
        if agent.avatar is not None:
            await agent.avatar.wait_for_join(timeout=90)
            await viewer.wait_first_video(timeout=60)
        yield agent, viewer, own


async def _first_audio(agent: AgentInRoom[Any], viewer: AvatarViewer, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        handle = agent.say(tone(1.0))
        if await _until(lambda t0=t0: bool(_loud(viewer, t0)), 20):  # type: ignore[misc]
            out.append(_loud(viewer, t0)[0] - t0)
        await asyncio.wait_for(handle.wait_for_playout(), 30)
        await asyncio.sleep(0.5)
    return out


async def _barge_in(agent: AgentInRoom[Any], viewer: AvatarViewer, runs: int) -> Json:
    silence, settle, mouth = [], [], []
    for _ in range(runs):
        t0 = time.monotonic()
        handle = agent.say(tone(6.0))
        if not await _until(lambda t0=t0: len(_loud(viewer, t0)) >= 50, 20):  # type: ignore[misc]
            continue
        at = time.monotonic()
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 15)
        settle.append(time.monotonic() - at)
        await asyncio.sleep(1.5)
        loud = _loud(viewer, at)
        silence.append((loud[-1] - at) if loud else 0.0)
        open_frames = [v.received_at for v in viewer.video if v.received_at >= at and v.mouth_open]
        mouth.append((open_frames[-1] - at) if open_frames else 0.0)
        await asyncio.sleep(0.5)
    return {
        "runs": len(silence),
        "silence_p50_s": _pct(silence, 50),
        "silence_p90_s": _pct(silence, 90),
        "settled_p50_s": _pct(settle, 50),
        "mouth_closed_p50_s": _pct(mouth, 50) if agent.avatar is not None else None,
    }


async def _after_replacement(
    livekit: LiveKitServer, agent: AgentInRoom[Any], viewer: AvatarViewer, runs: int
) -> Json:
    """Barge-in on the avatar that replaced a lost one (the first removed from the room)."""
    restored = asyncio.Event()
    agent.avatar.on("avatar_restored", lambda _: restored.set())
    lost = agent.avatar.avatar_identity
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        await lk.room.remove_participant(
            api.RoomParticipantIdentity(room=agent.room.name, identity=lost)
        )
    await asyncio.wait_for(restored.wait(), 90)
    await viewer.wait_for_new_avatar(other_than=[lost], timeout=60)
    return await _barge_in(agent, viewer, runs)


async def _storm(agent: AgentInRoom[Any]) -> Json:
    handles = []
    for _ in range(12):
        handle = agent.say(tone(3.0))
        await asyncio.sleep(0.3)
        handle.interrupt()
        handles.append(handle)
    await asyncio.sleep(3.0)
    unsettled = sum(1 for h in handles if not h.done())
    for handle in handles:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(handle.wait_for_playout(), 15)
    return {"interruptions": len(handles), "unsettled_after_3s": unsettled}


async def _false_interruption(livekit: LiveKitServer, emu: Any, mode: str) -> Json:
    room = f"parity-false-{mode}-{uuid.uuid4().hex[:6]}"
    session = listening_session()
    resumed: list[bool] = []
    session.on("agent_false_interruption", lambda ev: resumed.append(ev.resumed))
    line = 8.0
    async with (
        user_in(livekit, room) as user,
        _conversation(livekit, emu, mode, session=session, user=user, room=room) as (
            agent,
            viewer,
            _,
        ),
    ):
        t0 = time.monotonic()
        handle = agent.say(tone(line))
        await _until(lambda: len(_loud(viewer, t0)) >= 75, 20)  # 1.5 s heard
        user.noise(0.8)
        await asyncio.wait_for(handle.wait_for_playout(), 60)
        await asyncio.sleep(1.5)
        loud = _loud(viewer, t0)
        gaps = [b - a for a, b in itertools.pairwise(loud)]
        return {
            "resumed": bool(resumed and resumed[0]),
            "interrupted": handle.interrupted,
            "line_s": line,
            "heard_s": round(viewer.audio_seconds(min_level=HEARD, since=t0), 2),
            "audio_gap_s": round(max(gaps), 3) if gaps else None,
        }


async def _pause(agent: AgentInRoom[Any], viewer: AvatarViewer) -> Json:
    output = agent.session.output.audio
    assert output is not None
    t0 = time.monotonic()
    handle = agent.say(tone(5.0))
    await _until(lambda: len(_loud(viewer, t0)) >= 75, 20)
    paused_at = time.monotonic()
    output.pause()
    await asyncio.sleep(1.5)
    loud = _loud(viewer, paused_at)
    silent_after = (loud[-1] - paused_at) if loud else 0.0
    output.resume()
    await asyncio.wait_for(handle.wait_for_playout(), 30)
    await asyncio.sleep(1.5)
    return {
        "silent_after_s": round(silent_after, 3),
        "line_s": 5.0,
        "heard_s": round(viewer.audio_seconds(min_level=HEARD, since=t0), 2),
        "interrupted": handle.interrupted,
    }


async def _hard_death(livekit: LiveKitServer, how: str) -> Json:
    """Kill or freeze the avatar, wait 2 s, say a 3 s line: how long is the room mute?"""
    command = None
    pool = None
    if how == "emulator_killed":
        command = start_emulator_process(
            args=["--log-level", "warning", "--join-timeout", "90", "--worker-processes", "0"]
        )
        emu_cm: Any = contextlib.nullcontext(command)
    else:
        pool = ProcessPool(1, log_level="warning")
        emu_cm = Emulator(worker_factory=pool, join_timeout=90)
    lost_at: list[float] = []
    try:
        async with (
            emu_cm as emu,
            _conversation(livekit, emu, "avatar", options={"recovery": False}) as (
                agent,
                _,
                own,
            ),
        ):
            agent.avatar.on("avatar_lost", lambda _: lost_at.append(time.monotonic()))
            await agent.speak(tone(1.0), timeout=30)
            killed_at = time.monotonic()
            if command is not None:
                command.process.kill()
            elif how == "worker_killed":
                assert pool is not None
                pool.kill(agent.avatar.session_id)
            else:
                assert pool is not None
                pool.hang(agent.avatar.session_id)
            await asyncio.sleep(2.0)
            t0 = time.monotonic()
            handle = agent.say(tone(3.0))
            await asyncio.wait_for(handle.wait_for_playout(), 60)
            played = time.monotonic() - t0
            await _until(lambda: own.audio_seconds(min_level=HEARD, since=t0) >= 2.7, 15)
            loud = _loud(own, t0)
            if pool is not None:
                pool.thaw()
            return {
                "mute_s": round(loud[0] - t0, 3) if loud else None,
                "lost_after_line_start_s": round(lost_at[0] - t0, 3) if lost_at else None,
                "lost_after_death_s": round(lost_at[0] - killed_at, 3) if lost_at else None,
                "playout_s": round(played, 3),
                "heard_s": round(own.audio_seconds(min_level=HEARD, since=t0), 2),
            }
    finally:
        if command is not None:
            command.stop()


async def measure_parity(livekit: LiveKitServer, *, quick: bool) -> Json:
    """Every parity measurement, avatar and no avatar, in one run."""
    started = time.monotonic()
    runs = 3 if quick else 6
    result: Json = {"runs": runs}
    async with Emulator() as emu:
        for mode in MODES:
            async with _conversation(livekit, emu, mode) as (agent, viewer, _):
                first = await _first_audio(agent, viewer, runs)
                row: Json = {
                    "first_audio_p50_s": _pct(first, 50),
                    "barge_in": await _barge_in(agent, viewer, runs),
                    "storm": await _storm(agent),
                }
                if mode == "avatar":
                    row["pause"] = await _pause(agent, viewer)
                    row["barge_in_after_replacement"] = await _after_replacement(
                        livekit, agent, viewer, runs=max(2, runs // 2)
                    )
            row["false_interruption"] = await _false_interruption(livekit, emu, mode)
            result[mode] = row
    deaths: Json = {}
    for how in ("worker_killed", "worker_frozen", "emulator_killed"):
        samples = [await _hard_death(livekit, how) for _ in range(1 if quick else 3)]
        mute = [s["mute_s"] for s in samples if s.get("mute_s") is not None]
        lost = [
            s["lost_after_line_start_s"]
            for s in samples
            if s.get("lost_after_line_start_s") is not None
        ]
        deaths[how] = {
            "runs": len(samples),
            "mute_p50_s": _pct(mute, 50),
            "mute_max_s": max(mute) if mute else None,
            "lost_after_line_start_p50_s": _pct(lost, 50),
            "samples": samples,
        }
    result["hard_death"] = deaths
    # Imported here: bargein_load builds on this module's conversation and barge-in.
    from bargein_load import measure_bargein_load

    result["barge_in_under_load"] = await measure_bargein_load(livekit, runs=runs)
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result

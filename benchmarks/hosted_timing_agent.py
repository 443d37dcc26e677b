"""The agent of the hosted-timing CPU measurement, in a process of its own.

    python benchmarks/hosted_timing_agent.py '<job json>'

It does what a LiveKit Agents job does for one conversation: join the room as
an agent participant, start the avatar (`mode` "avatar") and the
`AgentSession`, then speak `speak_s` of speech and keep quiet `quiet_s`, in
turn, for `window_s`. It prints one JSON line: this process's CPU seconds
(user + system, its children included) over that window and per minute of it.
The LiveKit and Protoface settings come from the environment
(`LIVEKIT_URL`, `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`, `PROTOFACE_API_URL`,
`PROTOFACE_API_KEY`), as a deployed agent gets them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import psutil
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.testing import mint_token, play, speech

Json = dict[str, Any]


def cpu_seconds(process: psutil.Process) -> tuple[float, float]:
    """User and system CPU seconds of `process` and its children so far."""
    times = process.cpu_times()
    return (
        times.user + times.children_user,
        times.system + times.children_system,
    )


async def say(session: AgentSession[Any], frames: list[rtc.AudioFrame]) -> None:
    """Say `frames` and wait until they played out."""
    handle = session.say("(pre-rendered)", audio=play(frames), add_to_chat_ctx=False)
    await asyncio.wait_for(handle.wait_for_playout(), 60)


async def converse(session: AgentSession[Any], job: Json) -> Json:
    """Speak and keep quiet in turn for the window; this process's CPU over it."""
    me = psutil.Process()
    frames = speech(job["speak_s"])  # made once, before the window
    cycle = job["speak_s"] + job["quiet_s"]
    cycles = max(1, round(job["window_s"] / cycle))
    user0, sys0 = cpu_seconds(me)
    start = time.monotonic()
    for index in range(cycles):
        await say(session, frames)
        # The quiet part of the cycle: the next line starts on the cycle's beat.
        await asyncio.sleep(max(0.0, start + (index + 1) * cycle - time.monotonic()))
    end = time.monotonic()
    user1, sys1 = cpu_seconds(me)
    wall = end - start
    cpu = (user1 - user0) + (sys1 - sys0)
    return {
        "cycles": cycles,
        "spoken_s": round(cycles * job["speak_s"], 2),
        "wall_s": round(wall, 2),
        "cpu_user_s": round(user1 - user0, 3),
        "cpu_system_s": round(sys1 - sys0, 3),
        "cpu_per_minute_s": round(cpu / wall * 60, 3),
        "cpu_share_of_one_core": round(cpu / wall, 4),
        "threads": me.num_threads(),
        "rss_mb": round(me.memory_info().rss / 2**20, 1),
        "window_monotonic": [start, end],
    }


async def run(job: Json) -> Json:
    """Join, start, warm up with one line, then the measured conversation."""
    me = psutil.Process()
    room = rtc.Room()
    token = mint_token(
        os.environ["LIVEKIT_API_KEY"],
        os.environ["LIVEKIT_API_SECRET"],
        job["identity"],
        job["room"],
        kind="agent",
    )
    await room.connect(os.environ["LIVEKIT_URL"], token)
    session: AgentSession[Any] = AgentSession()
    avatar = protoface.AvatarSession() if job["mode"] == "avatar" else None
    lost: list[str] = []
    try:
        if avatar is not None:
            avatar.on("avatar_lost", lambda ev: lost.append(str(ev.reason)))
            await avatar.start(session, room)
        await session.start(
            agent=Agent(instructions="You speak pre-rendered lines."),
            room=room,
            room_options=RoomOptions(audio_input=False, text_input=False),
        )
        if avatar is not None:
            await avatar.wait_for_join(timeout=60)
        await say(session, speech(1.0))  # first-utterance costs are not the steady state
        setup_user, setup_sys = cpu_seconds(me)
        result = await converse(session, job)
        result["setup_cpu_s"] = round(setup_user + setup_sys, 3)
        result["losses"] = lost
        result["sessions"] = len(avatar.session_ids) if avatar is not None else 0
        return result
    finally:
        await session.aclose()
        if avatar is not None:
            await avatar.aclose()
        await room.disconnect()


def main() -> int:
    """Run the job given as the first argument; print the result as one JSON line."""
    job: Json = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(job))), flush=True)
    return 0


if __name__ == "__main__":
    # Without the interpreter's finalization, where livekit-rtc's native runtime can
    # abort after the result is printed (see client.leave).
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

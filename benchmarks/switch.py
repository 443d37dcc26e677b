"""The video gap of `AvatarSession.switch()` at a viewer, measured (standalone).

    uv run python benchmarks/switch.py --rounds 10 --quality lite --out /tmp/switch.json

One `livekit-server --dev` and one in-process emulator with real workers; per
round a fresh room and conversation: the avatar joins, says a line, and while a
second line plays, `switch()` to the next stock face; then one more line. A
`FaceWatch` viewer classifies every received frame from its pixels. Recorded per
round: seconds from `switch()` to its return (it waits for the line in flight),
the largest gap between frames of a known face at the viewer from the call
until 1.5 s after the old avatar left, how long both faces were on screen
together, and whether the viewer ended on the new face.

Not part of `benchmarks/run` (its report lives in `report.py`); prints one JSON
object and, with `--out`, writes it there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from livekit.agents import Agent, AgentSession
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.local.livekit_dev import local_livekit_server
from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer, agent_in, wav_frames
from protoface_emulator.testing.faces import FaceWatch

SPEECH = Path(__file__).resolve().parents[1] / "examples" / "assets" / "hello.wav"
FACES = ["av_stock_001", "av_stock_002", "av_stock_003"]


async def one_round(
    server: LiveKitServer, emulator: Emulator, quality: str, index: int
) -> dict[str, Any]:
    """One conversation with one switch; what the viewer saw."""
    room = f"bench-switch-{uuid.uuid4().hex[:8]}"
    old_face, new_face = FACES[index % 3], FACES[(index + 1) % 3]
    watch = FaceWatch()
    await watch.connect(server.url, server.token("face-watch", room))

    async def start(session: AgentSession[Any], agent_room: Any) -> protoface.AvatarSession:
        avatar = protoface.AvatarSession(
            avatar_id=old_face, api_url=emulator.url, api_key=emulator.api_key, quality=quality
        )
        await avatar.start(
            session,
            agent_room,
            livekit_url=server.url,
            livekit_api_key=server.api_key,
            livekit_api_secret=server.api_secret,
        )
        await session.start(
            agent=Agent(instructions="pre-rendered lines"),
            room=agent_room,
            room_options=RoomOptions(audio_input=False, text_input=False),
        )
        return avatar

    try:
        async with agent_in(server, room, start) as agent:
            await agent.avatar.wait_for_join(timeout=60)
            await watch.wait_for_face(old_face, timeout=60)
            await agent.speak(wav_frames(SPEECH, seconds=1.0), timeout=30)
            line = agent.say(wav_frames(SPEECH, seconds=2.0))
            await asyncio.sleep(0.5)  # the line is under way
            asked = time.monotonic()
            await asyncio.wait_for(agent.avatar.switch(avatar_id=new_face), timeout=120)
            returned = time.monotonic()
            await asyncio.wait_for(line.wait_for_playout(), timeout=30)
            await agent.speak(wav_frames(SPEECH, seconds=1.0), timeout=30)
            await watch.wait_for_face(new_face, timeout=30, since=returned)
            await asyncio.sleep(3.0)  # past the old avatar's overlap and departure
            first_new = watch.first_seen(new_face)
            last_old = watch.last_seen(old_face)
            return {
                "switch_seconds": returned - asked,
                "gap_ms": 1000 * watch.largest_gap(since=asked),
                "overlap_ms": 1000 * ((last_old or 0.0) - (first_new or 0.0)),
                "ends_on_new_face": watch.faces()[-5:] == [new_face] * 5,
            }
    finally:
        await watch.aclose()


async def main(rounds: int, quality: str) -> str:
    """Run the rounds; the figures as JSON text."""
    with local_livekit_server() as server:
        async with Emulator(join_timeout=60) as emulator:
            results = [await one_round(server, emulator, quality, i) for i in range(rounds)]
    gaps = sorted(r["gap_ms"] for r in results)
    summary = {
        "rounds": rounds,
        "quality": quality,
        "gap_ms_p50": statistics.median(gaps),
        "gap_ms_max": gaps[-1],
        "switch_seconds_p50": statistics.median(r["switch_seconds"] for r in results),
        "overlap_ms_min": min(r["overlap_ms"] for r in results),
        "all_end_on_new_face": all(r["ends_on_new_face"] for r in results),
        "per_round": results,
    }
    return json.dumps(summary, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quality", default="lite", choices=["mock", "lite", "standard", "pro"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = asyncio.run(main(args.rounds, args.quality))
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")

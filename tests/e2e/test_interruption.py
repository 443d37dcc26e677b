"""Interrupting the agent stops the avatar's speech at once, and the agent knows."""

from __future__ import annotations

import asyncio

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

from .harness import agent_in, audio_seconds, eventually, load_speech, play, room_name, viewer_in

AVATAR = "protoface-avatar-agent"


async def test_interruption_stops_avatar_speech_and_reports_interrupted(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("interrupt")
    speech = load_speech()  # ~6 s, far longer than we let it play
    async with (
        viewer_in(livekit_server, room, AVATAR) as viewer,
        agent_in(livekit_server, emulator, room) as agent,
    ):
        await agent.avatar.wait_for_join(timeout=20)
        await viewer.wait_first_video(timeout=10)
        loop = asyncio.get_running_loop()

        handle = agent.session.say("long line", audio=play(speech), add_to_chat_ctx=False)
        started = loop.time()
        # Interrupt once the viewer hears the avatar speaking.
        await eventually(
            lambda: viewer.audio_seconds(min_level=0.05) > 0.8,
            timeout=15,
            message="the avatar never started speaking",
        )
        interrupted_at = loop.time()
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), timeout=5)
        assert handle.interrupted

        # Give the room time to deliver what was already in flight, then the
        # avatar must be silent and its mouth shut for the rest.
        await asyncio.sleep(2.5)
        settle = interrupted_at + 1.0
        after = [s for s in viewer.audio if s.received_at >= settle]
        loud_after = sum(s.duration for s in after if s.level > 0.05)
        assert loud_after < 0.1, f"avatar still spoke {loud_after:.2f} s after the interruption"
        frames_after = viewer.video_between(settle, loop.time())
        assert len(frames_after) > 10
        assert not any(s.mouth_open for s in frames_after)

        heard = viewer.audio_seconds(min_level=0.05)
        assert heard < audio_seconds(speech) * 0.75, (heard, audio_seconds(speech))
        assert interrupted_at - started < audio_seconds(speech)

        # The session stays usable: the next utterance plays out in full.
        short = load_speech(seconds=1.0)
        handle2 = agent.session.say("again", audio=play(short), add_to_chat_ctx=False)
        await asyncio.wait_for(handle2.wait_for_playout(), timeout=15)
        assert not handle2.interrupted

"""Interrupting the agent stops the avatar's speech at once, and the agent knows."""

from __future__ import annotations

import asyncio

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

from .harness import agent_in, audio_seconds, load_speech, play, room_name, viewer_in

AVATAR = "protoface-avatar-agent"


async def test_interruption_stops_avatar_speech_and_reports_interrupted(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("interrupt")
    speech = load_speech() * 2  # ~12 s, far longer than we let it play
    async with (
        viewer_in(livekit_server, room, AVATAR) as viewer,
        agent_in(livekit_server, emulator, room) as agent,
    ):
        await agent.avatar.wait_for_join(timeout=30)
        await viewer.wait_first_video(timeout=30)
        loop = asyncio.get_running_loop()

        handle = agent.session.say("long line", audio=play(speech), add_to_chat_ctx=False)
        # Interrupt once the viewer hears the avatar speaking.
        await viewer.wait_for_audio(0.8, timeout=30)
        interrupted_at = loop.time()
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), timeout=15)
        assert handle.interrupted

        # Uninterrupted, the avatar would speak for most of 12 s more: it falls silent
        # and shuts its mouth well before that (what was in flight arrives first),
        # and stays so.
        def loud_since(moment: float) -> float:
            return sum(
                s.duration for s in viewer.audio if s.received_at >= moment and s.level > 0.05
            )

        def quiet() -> bool:
            recent = viewer.video[-10:]
            return (
                len(recent) == 10
                and recent[0].received_at > interrupted_at
                and not any(s.mouth_open for s in recent)
                and loud_since(loop.time() - 0.5) == 0.0
            )

        remaining = audio_seconds(speech) - 0.8
        await viewer.wait_until(quiet, timeout=remaining / 2, what="silence after the interruption")
        quiet_from = loop.time()
        await viewer.wait_until(
            lambda: len(viewer.video_between(quiet_from, loop.time())) >= 20,
            timeout=30,
            what="20 frames after the avatar fell silent",
        )
        assert loud_since(quiet_from) < 0.1, "the avatar spoke again after the interruption"
        assert not any(s.mouth_open for s in viewer.video_between(quiet_from, loop.time()))

        heard = viewer.audio_seconds(min_level=0.05)
        assert heard < audio_seconds(speech) * 0.75, (heard, audio_seconds(speech))

        # The session stays usable: the next utterance plays out in full.
        short = load_speech(seconds=1.0)
        handle2 = agent.session.say("again", audio=play(short), add_to_chat_ctx=False)
        await asyncio.wait_for(handle2.wait_for_playout(), timeout=30)
        assert not handle2.interrupted

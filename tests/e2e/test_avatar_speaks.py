"""A viewer in a real room sees and hears the avatar speak for the agent.

Real parts only: livekit-server --dev, the emulator with its LiveKit worker, an
AgentSession speaking pre-rendered audio, and a viewer participant.
"""

from __future__ import annotations

import asyncio

from livekit.agents.metrics.base import AvatarMetrics

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

from .harness import (
    agent_in,
    audio_seconds,
    eventually,
    load_speech,
    mean,
    play,
    room_name,
    viewer_in,
)

AVATAR = "protoface-avatar-agent"


async def test_viewer_sees_mouth_move_with_speech_and_hears_it(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("speaks")
    speech = load_speech(seconds=3.0)
    metrics: list[AvatarMetrics] = []
    async with viewer_in(livekit_server, room, AVATAR) as viewer:
        async with agent_in(livekit_server, emulator, room) as agent:
            agent.avatar.on("metrics_collected", metrics.append)
            await agent.avatar.wait_for_join(timeout=30)
            await viewer.wait_first_video(timeout=30)

            # The avatar publishes on the agent's behalf.
            await eventually(
                lambda: AVATAR in agent.room.remote_participants,
                timeout=30,
                message="the agent never saw the avatar join",
            )
            avatar = agent.room.remote_participants[AVATAR]
            assert avatar.attributes.get("lk.publish_on_behalf") == agent.identity

            loop = asyncio.get_running_loop()
            silent_from = loop.time()
            await viewer.wait_until(
                lambda: len(viewer.video_between(silent_from, loop.time())) >= 20,
                timeout=30,
                what="20 frames of the idle face",
            )
            silent_to = loop.time()

            handle = agent.session.say("hello", audio=play(speech), add_to_chat_ctx=False)
            speak_from = loop.time()
            await asyncio.wait_for(handle.wait_for_playout(), timeout=30)
            speak_to = loop.time()
            assert not handle.interrupted
            # What was sent arrives when the room delivers it: wait for it.
            await viewer.wait_for_audio(0.5 * audio_seconds(speech), timeout=30)

        silent = viewer.video_between(silent_from, silent_to)
        speaking = viewer.video_between(speak_from, speak_to)
        assert len(silent) > 10 and len(speaking) > 20, (len(silent), len(speaking))
        silent_motion = mean(s.mouth_motion for s in silent)
        speaking_motion = mean(s.mouth_motion for s in speaking)
        # Still while silent (video coding noise only), clearly moving while speaking.
        assert silent_motion < 1.0, silent_motion
        assert speaking_motion > 5 * max(silent_motion, 0.2), (speaking_motion, silent_motion)
        assert not any(s.mouth_open for s in silent)
        assert sum(s.mouth_open for s in speaking) > len(speaking) // 4

        # The speech is heard from the avatar's own audio track.
        heard = viewer.audio_seconds(min_level=0.05)
        assert heard > 0.5 * audio_seconds(speech), (heard, audio_seconds(speech))

    joined = [m for m in metrics if m.avatar_joined_time is not None]
    assert joined and joined[0].metadata is not None
    assert joined[0].metadata.model_provider == "protoface"

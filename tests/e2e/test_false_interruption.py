"""A noise in the user's room pauses the agent; with no words, the same line resumes on the avatar.

Through livekit-agents' own false-interruption path: a user participant
publishes a burst of noise 1.5 s into an 8 s line; the agent session's VAD
sees speech, pauses its audio output (the avatar), the STT finds no words, and
after `false_interruption_timeout` the session resumes the line. Without
pause support in the avatar's output the line is interrupted for good.

Two stand-ins from the kit (`protoface_emulator.testing.user`), because
nothing real can run here: `LevelVAD` replaces a model-based VAD (silero needs
onnxruntime and its model, which this suite does not install) with a level
threshold that sees the user's noise; `NoWordsSTT` replaces a speech-to-text
service (none is reachable offline) with one that hears no words, which is
what makes the interruption false. Everything else is real: livekit-server,
the emulator's avatar, the user's and the viewer's participants, the agent
session's turn handling.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from livekit.agents.voice.events import AgentFalseInterruptionEvent

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer
from protoface_emulator.testing.audio import tone
from protoface_emulator.testing.user import listening_session, user_in

from .harness import agent_in, eventually, room_name, viewer_in

HEARD = 0.05


async def test_a_noise_without_words_pauses_the_avatar_and_the_line_resumes(
    livekit_server: LiveKitServer, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    room = room_name("false-interruption")
    line = 8.0
    session = listening_session()
    false_interruptions: list[AgentFalseInterruptionEvent] = []
    session.on("agent_false_interruption", false_interruptions.append)

    async with (
        user_in(livekit_server, room) as user,
        viewer_in(livekit_server, room) as viewer,
        agent_in(livekit_server, emulator, room, session=session, listen_to=user.identity) as agent,
    ):
        await agent.avatar.wait_for_join(timeout=30)
        await viewer.wait_first_video(timeout=30)
        handle = agent.say(tone(line))
        await viewer.wait_for_audio(1.5, timeout=30)
        user.noise(0.8)

        await asyncio.wait_for(handle.wait_for_playout(), 60)
        await eventually(
            lambda: bool(false_interruptions), timeout=15, message="no false interruption"
        )
        assert false_interruptions[0].resumed, "the framework did not resume the line"
        assert not handle.interrupted
        await viewer.wait_until(
            lambda: viewer.audio_seconds(min_level=HEARD) >= line - 0.5,
            timeout=15,
            what="the whole line, resumed",
        )
        assert viewer.audio_seconds(min_level=HEARD) <= line + 0.3  # nothing said twice
    # livekit-agents warns at start when an output cannot pause; ours can.
    assert not [r for r in caplog.records if "does not support pause" in r.getMessage()]

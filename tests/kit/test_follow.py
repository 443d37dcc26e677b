"""The `avatar_viewer` fixture follows the avatar through a handover, in a real room.

A session capped at 12 s gets a successor (`protoface-avatar-agent-2`) before
its cap; the agent's speech moves to it. The fixture's viewer, given no
identity, records both and its waits see the successor speak, as a person in
the room would. (A replacement after a loss is pinned by
examples/testing/test_recovery.py, which CI runs from pip-installed packages.)
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.server import Emulator
from protoface_emulator.testing import (
    AVATAR_IDENTITY,
    AvatarViewer,
    LiveKitServer,
    agent_in,
    eventually,
    speech,
)

pytestmark = pytest.mark.e2e

CAP_SECONDS = 12


async def _start_capped(session: AgentSession[Any], room: rtc.Room) -> protoface.AvatarSession:
    avatar = protoface.AvatarSession(max_duration_seconds=CAP_SECONDS)
    await avatar.start(session, room)
    await session.start(
        agent=Agent(instructions="You speak pre-rendered lines."),
        room=room,
        room_options=RoomOptions(audio_input=False, text_input=False),
    )
    return avatar


async def test_the_viewer_follows_the_successor_of_a_handover(
    livekit_server: LiveKitServer, protoface_emulator: Emulator, avatar_viewer: AvatarViewer
) -> None:
    async with agent_in(livekit_server, avatar_viewer.room_name, _start_capped) as agent:
        handovers: list[protoface.AvatarHandoverEvent] = []
        agent.avatar.on("avatar_handover", handovers.append)
        await agent.avatar.wait_for_join(timeout=30)
        assert await avatar_viewer.wait_for_video(timeout=30) == AVATAR_IDENTITY

        await eventually(lambda: handovers, timeout=60, message="no avatar_handover in 60 s")
        successor = handovers[0].avatar_identity
        assert successor != AVATAR_IDENTITY
        assert await avatar_viewer.wait_for_new_avatar(other_than=[AVATAR_IDENTITY]) == successor

        said_at = time.monotonic()
        agent.say(speech(2.0))
        await avatar_viewer.wait_for_mouth_open(timeout=20)  # "the avatar": the one now
        await avatar_viewer.wait_for_audio(1.0, since=said_at, timeout=20)
        assert avatar_viewer.audio_seconds(since=said_at, identity=successor) >= 1.0
        assert avatar_viewer.audio_seconds(since=said_at, identity=AVATAR_IDENTITY) == 0
        assert avatar_viewer.avatars[:2] == [AVATAR_IDENTITY, successor]
        # The predecessor leaves once it is ended; the successor is the current one.
        await eventually(
            lambda: avatar_viewer.current_identity == successor,
            timeout=30,
            message=lambda: f"current: {avatar_viewer.current_identity}",
        )

"""Losing the avatar mid-conversation: warn with the reason, emit an event, carry on audio-only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from livekit import api, rtc
from livekit.plugins import protoface

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

from .harness import AgentSide, agent_in, eventually, load_speech, play, room_name, viewer_in

AVATAR = "protoface-avatar-agent"


async def _end_remotely(server: LiveKitServer, emulator: Emulator, agent: AgentSide) -> None:
    async with protoface.ProtofaceAPI(api_url=emulator.url, api_key=emulator.api_key) as client:
        assert agent.avatar.session_id is not None
        await client.end_session(agent.avatar.session_id)


async def _remove_worker(server: LiveKitServer, emulator: Emulator, agent: AgentSide) -> None:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        await lk.room.remove_participant(
            api.RoomParticipantIdentity(room=agent.room.name, identity=AVATAR)
        )


async def _wait_for_max_duration(
    server: LiveKitServer, emulator: Emulator, agent: AgentSide
) -> None:
    return None  # the session was created with max_duration_seconds=4


LOSSES: list[Any] = [
    # Recovery off: these pin the fallback; tests/e2e/test_lifetime.py pins recovery.
    pytest.param(_end_remotely, {"recovery": False}, "end_requested", id="ended-remotely"),
    pytest.param(_remove_worker, {"recovery": False}, "worker_lost", id="worker-gone"),
    pytest.param(
        _wait_for_max_duration,
        {"max_duration_seconds": 4, "recovery": False},
        "max_duration_reached",
        id="max-duration",
    ),
]


@pytest.mark.parametrize(("lose", "avatar_options", "reason"), LOSSES)
async def test_losing_the_avatar_falls_back_to_agent_audio(
    livekit_server: LiveKitServer,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    lose: Callable[[LiveKitServer, Emulator, AgentSide], Awaitable[None]],
    avatar_options: dict[str, Any],
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="livekit.plugins.protoface")
    room = room_name("lost")
    lost: list[protoface.AvatarLostEvent] = []
    async with (
        viewer_in(livekit_server, room, AVATAR) as avatar_view,
        agent_in(livekit_server, emulator, room, avatar_options=avatar_options) as agent,
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        agent.avatar.on("avatar_lost", lost.append)
        await agent.avatar.wait_for_join(timeout=20)
        handle = agent.session.say(
            "before", audio=play(load_speech(seconds=1.0)), add_to_chat_ctx=False
        )
        await asyncio.wait_for(handle.wait_for_playout(), timeout=15)
        assert avatar_view.audio_seconds(min_level=0.05) > 0.3
        assert agent_view.audio_seconds() == 0  # the agent itself was not publishing audio

        await lose(livekit_server, emulator, agent)
        await eventually(lambda: bool(lost), timeout=15, message="no avatar_lost event")
        event = lost[0]
        assert event.session_id == agent.avatar.session_id
        assert event.reason == reason

        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and reason in r.getMessage()
        ]
        assert warnings, "no warning naming the reason"
        await eventually(
            lambda: AVATAR not in agent.room.remote_participants,
            timeout=10,
            message="the avatar stayed in the room",
        )

        # The conversation goes on: the viewer hears the next line from the agent.
        line = load_speech(seconds=1.5)
        handle = agent.session.say("after", audio=play(line), add_to_chat_ctx=False)
        await asyncio.wait_for(handle.wait_for_playout(), timeout=20)
        await eventually(
            lambda: agent_view.audio_seconds(min_level=0.05) > 0.5,
            timeout=10,
            message="the viewer did not hear the agent after the avatar was lost",
        )
        assert len(lost) == 1


async def test_fallback_can_be_turned_off(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("nofallback")
    lost: list[protoface.AvatarLostEvent] = []
    async with (
        agent_in(livekit_server, emulator, room, avatar_options={"audio_fallback": False}) as agent,
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        agent.avatar.on("avatar_lost", lost.append)
        await agent.avatar.wait_for_join(timeout=20)
        await _end_remotely(livekit_server, emulator, agent)
        await eventually(lambda: bool(lost), timeout=15, message="no avatar_lost event")
        assert lost[0].reason == "end_requested"

        handle = agent.session.say(
            "after", audio=play(load_speech(seconds=1.0)), add_to_chat_ctx=False
        )
        await asyncio.sleep(3)
        handle.interrupt()
        # No audio route back to the room: the agent publishes nothing.
        assert agent_view.audio_seconds() == 0
        published = agent.room.local_participant.track_publications.values()
        assert not any(pub.kind == rtc.TrackKind.KIND_AUDIO for pub in published)

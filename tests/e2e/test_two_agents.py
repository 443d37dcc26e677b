"""Two agents in one room, each with a Protoface avatar at its defaults: each keeps its own face.

A viewer per agent follows only the avatars speaking for that agent (paired
by `lk.publish_on_behalf`, as LiveKit's frontends pair them): each line must
be heard from its own agent's avatar, and never from the other's.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
from livekit import api
from livekit.plugins import protoface

from protoface_emulator.hosting import ProcessPool
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer
from protoface_emulator.testing.audio import tone

from .harness import AgentSide, agent_in, eventually, room_name, viewer_in

DEFAULT = "protoface-avatar-agent"
HEARD = 0.05
LINE = 2.5


class Side(NamedTuple):
    """One agent, what a viewer following its avatars receives, and its avatar's losses."""

    agent: AgentSide
    view: AvatarViewer
    lost: list[protoface.AvatarLostEvent]


@asynccontextmanager
async def two_agents(
    livekit_server: LiveKitServer, emulator: Emulator, room: str
) -> AsyncIterator[tuple[Side, Side]]:
    """Agent A starts alone in `room`, then agent B joins it; both avatars have joined."""
    async with agent_in(livekit_server, emulator, room) as a:
        await a.avatar.wait_for_join(timeout=60)
        async with (
            agent_in(livekit_server, emulator, room) as b,
            viewer_in(livekit_server, room, agent_identity=a.identity) as a_view,
            viewer_in(livekit_server, room, agent_identity=b.identity) as b_view,
        ):
            await b.avatar.wait_for_join(timeout=60)
            sides = (Side(a, a_view, []), Side(b, b_view, []))
            for side in sides:
                side.agent.avatar.on("avatar_lost", side.lost.append)
                await side.view.wait_first_video(timeout=60)
            yield sides


async def say_and_hear(speaker: Side, other: Side, seconds: float = LINE) -> None:
    """`speaker` says a line: its own avatar is heard saying it, the other agent's is not."""
    for view in (speaker.view, other.view):  # the tail of the previous line has arrived
        await view.wait_until(
            lambda v=view: v.audio_seconds(min_level=HEARD, since=time.monotonic() - 0.5) == 0,
            timeout=20,
            what="a quiet room",
        )
    before = time.monotonic()
    await speaker.agent.speak(tone(seconds))
    await speaker.view.wait_until(
        lambda: speaker.view.audio_seconds(min_level=HEARD, since=before) >= seconds - 0.5,
        timeout=20,
        what=f"the line of {speaker.agent.identity} from its own avatar",
    )
    assert other.view.audio_seconds(min_level=HEARD, since=before) < 0.2, other.view.describe()


async def test_two_agents_at_their_defaults_each_keep_their_own_avatar(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("two-agents")
    async with two_agents(livekit_server, emulator, room) as (a, b):
        # The first, alone when it started, keeps the published default identity.
        assert a.agent.avatar.avatar_identity == DEFAULT
        assert b.agent.avatar.avatar_identity != DEFAULT
        assert b.agent.identity in b.agent.avatar.avatar_identity
        for line in range(12):  # about a minute of interleaved lines
            speaker, other = (a, b) if line % 2 == 0 else (b, a)
            await say_and_hear(speaker, other)
        assert a.lost == [] and b.lost == [], (a.lost, b.lost)
        assert len(a.agent.avatar.session_ids) == 1 and len(b.agent.avatar.session_ids) == 1
        assert set(a.view.avatars) == {DEFAULT}
        assert set(b.view.avatars) == {b.agent.avatar.avatar_identity}


async def test_one_agents_avatar_removed_leaves_the_other_speaking(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("two-agents-removed")
    async with two_agents(livekit_server, emulator, room) as (a, b):
        gone = a.agent.avatar.avatar_identity
        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=gone))
        # While A's avatar is lost and replaced, B's lines go on from B's avatar.
        for _ in range(3):
            await say_and_hear(b, a)
        await eventually(lambda: bool(a.lost), timeout=30, message="A's loss was not noticed")
        assert b.lost == [], b.lost
        assert len(b.agent.avatar.session_ids) == 1
        # A's replacement has an identity of its own, and A is heard from it.
        await a.agent.avatar.wait_for_join(timeout=60)
        await eventually(
            lambda: a.agent.avatar.avatar_identity != gone,
            timeout=60,
            message="A's avatar was not replaced",
        )
        assert a.agent.avatar.avatar_identity != b.agent.avatar.avatar_identity
        await say_and_hear(a, b)
        await say_and_hear(b, a)
        assert b.lost == [], b.lost


@pytest.mark.parametrize("signum", [signal.SIGKILL], ids=["sigkill"])
async def test_one_agents_avatar_killed_leaves_the_other_speaking(
    livekit_server: LiveKitServer, signum: int
) -> None:
    """Each avatar renders in its own worker process; A's is killed (no leave, no answer)."""
    pool = ProcessPool(2, log_level="warning")
    room = room_name("two-agents-killed")
    options: dict[str, Any] = {"worker_factory": pool, "join_timeout": 90}
    async with (
        Emulator(**options) as emulator,
        two_agents(livekit_server, emulator, room) as (a, b),
    ):
        assert a.agent.avatar.session_id is not None and b.agent.avatar.session_id is not None
        hosts = [p for p in pool.processes if p.hosts(a.agent.avatar.session_id)]
        assert hosts and not hosts[0].hosts(b.agent.avatar.session_id), "one process each"
        assert hosts[0].signal(signum)
        for _ in range(3):
            await say_and_hear(b, a)
        before = time.monotonic()
        await a.agent.speak(tone(LINE))  # heard from A's own track, or its replacement
        await eventually(lambda: bool(a.lost), timeout=30, message="A's loss was not noticed")
        assert b.view.audio_seconds(min_level=HEARD, since=before) < 0.2, b.view.describe()
        await say_and_hear(b, a)
        assert b.lost == [], b.lost
        assert len(b.agent.avatar.session_ids) == 1


async def test_an_identity_another_agents_avatar_holds_is_refused_at_start(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("two-agents-taken")
    async with agent_in(livekit_server, emulator, room) as a:
        await a.avatar.wait_for_join(timeout=60)
        taken = {"avatar_participant_identity": a.avatar.avatar_identity}
        with pytest.raises(protoface.ProtofaceValueError) as refused:
            async with agent_in(livekit_server, emulator, room, avatar_options=taken):
                pass
        message = str(refused.value)
        assert a.avatar.avatar_identity in message and a.identity in message
        assert "avatar_participant_identity" in message
        assert a.avatar.avatar_identity in a.room.remote_participants  # A's avatar untouched

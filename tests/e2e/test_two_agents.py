"""Two agents in one room, each with a Protoface avatar at its defaults: each keeps its own face.

A viewer per agent follows only the avatars speaking for that agent (paired
by `lk.publish_on_behalf`, as LiveKit's frontends pair them): each line must
be heard from its own agent's avatar, and never from the other's.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
from livekit import api, rtc
from livekit.agents import Agent, AgentSession, JobContext
from livekit.agents.testing import fake_job_context
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF, RoomOptions
from livekit.plugins import protoface

from protoface_emulator.hosting import ProcessPool
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer, mint_token
from protoface_emulator.testing.audio import tone

from .harness import (
    AgentSide,
    agent_in,
    eventually,
    play,
    room_name,
    thread_agent_server,
    viewer_in,
)

DEFAULT = "protoface-avatar-agent"
JOB_AGENT = "the-jobs-own-agent"
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


async def speak_and_hear(agent: AgentSide, view: AvatarViewer, what: str) -> None:
    """`agent` says a line; `view` hears nearly all of it."""
    before = time.monotonic()
    await agent.speak(tone(LINE))
    await view.wait_until(
        lambda: view.audio_seconds(min_level=HEARD, since=before) >= LINE - 0.5,
        timeout=20,
        what=what,
    )


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


async def test_an_agent_that_starts_its_avatar_before_connecting_does_not_take_the_default(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    """Agent B runs as the quickstart does: `avatar.start()` before the room is connected.

    B's own room lists nobody then; B must still see A's avatar on the default
    identity (LiveKit would drop A's avatar for B's) and take one of its own.
    """
    room = room_name("two-agents-blind")
    started: dict[str, str] = {}
    finish = threading.Event()

    async def entrypoint(ctx: JobContext) -> None:
        session: AgentSession[None] = AgentSession()
        avatar = protoface.AvatarSession(api_url=emulator.url, api_key=emulator.api_key)
        try:
            assert not ctx.room.isconnected()
            await avatar.start(
                session,
                room=ctx.room,
                livekit_url=livekit_server.url,
                livekit_api_key=livekit_server.api_key,
                livekit_api_secret=livekit_server.api_secret,
            )
            started["chosen"] = avatar.avatar_identity
            await session.start(
                agent=Agent(instructions="You speak pre-rendered lines."),
                room=ctx.room,
                room_options=RoomOptions(audio_input=False, text_input=False),
            )
            await avatar.wait_for_join(timeout=60)
            started["agent"] = ctx.room.local_participant.identity
            started["avatar"] = avatar.avatar_identity
            await session.say("hi", audio=play(tone(LINE)), add_to_chat_ctx=False)
            started["spoke"] = "yes"
            await asyncio.to_thread(finish.wait, 60)
        except Exception as exc:  # reported to the test, which fails on it
            started["error"] = repr(exc)
        ctx.shutdown(reason="test finished")

    worker = thread_agent_server(livekit_server)
    worker.rtc_session(entrypoint, agent_name="protoface-blind")
    registered = asyncio.Event()
    worker.on("worker_registered", lambda *_: registered.set())
    run = asyncio.create_task(worker.run(devmode=True))
    try:
        await asyncio.wait_for(registered.wait(), timeout=30)
        async with agent_in(livekit_server, emulator, room) as a:
            await a.avatar.wait_for_join(timeout=60)
            lost: list[protoface.AvatarLostEvent] = []
            a.avatar.on("avatar_lost", lost.append)
            async with api.LiveKitAPI(
                livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
            ) as lk:
                await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name="protoface-blind", room=room)
                )
            await eventually(
                lambda: "spoke" in started or "error" in started,
                timeout=90,
                message=lambda: f"agent B never spoke: {started}",
            )
            assert "error" not in started, started
            assert started["chosen"] != DEFAULT, started
            assert started["chosen"] == started["avatar"], started
            assert a.avatar.avatar_identity == DEFAULT
            assert lost == [], lost
            b_identity = started["agent"]
            async with viewer_in(livekit_server, room, agent_identity=a.identity) as a_view:
                await a_view.wait_first_video(timeout=30)
                await speak_and_hear(
                    a, a_view, "agent A heard from its own avatar beside agent B's"
                )
            assert b_identity in started["avatar"]
            assert lost == [], lost
    finally:
        finish.set()
        await worker.aclose()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_second_agent_of_one_job_gets_an_avatar_speaking_for_it(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    """A job that joins its room a second time, as a second agent, starts that agent's
    avatar with the second connection: the avatar publishes on behalf of the second
    agent (the room's own participant), not of the job's agent.

    The job is `livekit.agents.testing.fake_job_context`, holding the room token a
    worker would receive for its own agent (stand-in: the harness connects agents
    itself, not through a worker); the rooms, the emulator and its worker are real.
    """
    room = room_name("second-connection")
    with fake_job_context(room=rtc.Room(), agent_identity=JOB_AGENT) as job:
        job._info.token = mint_token(
            livekit_server.api_key, livekit_server.api_secret, JOB_AGENT, room, kind="agent"
        )
        assert job.local_participant_identity == JOB_AGENT
        async with (
            agent_in(livekit_server, emulator, room) as second,
            viewer_in(livekit_server, room, agent_identity=second.identity) as view,
        ):
            await second.avatar.wait_for_join(timeout=60)
            await view.wait_first_video(timeout=60)
            identity = second.avatar.avatar_identity
            assert identity is not None
            await eventually(
                lambda: identity in second.room.remote_participants,
                timeout=30,
                message="the avatar never appeared in the agent's room",
            )
            behalf = second.room.remote_participants[identity].attributes
            assert behalf.get(ATTRIBUTE_PUBLISH_ON_BEHALF) == second.identity, behalf
            await speak_and_hear(second, view, "the second agent's line from its own avatar")

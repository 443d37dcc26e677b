"""Two agents in the playground's room, each with a Protoface avatar: what test_two_agents runs.

The job's agent starts as usual (its avatar takes the default identity). The
same job then joins the room a second time as another agent participant,
`second-agent`, whose avatar is `second-avatar`: a room of two agents, as two
dispatched workers would make it. Each agent says the repository's recording
every few seconds. Everything the second agent holds is closed when the job
ends.

    protoface-emulator playground --agent tests/playground/two_agents.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from livekit import api, rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext
from livekit.agents.utils.audio import audio_frames_from_file
from livekit.plugins import protoface

SECOND_AGENT = "second-agent"
SECOND_AVATAR = "second-avatar"
GREETING = Path(__file__).resolve().parents[2] / "examples" / "assets" / "hello.wav"
EVERY = 6.0  # seconds between one agent's lines


async def start(
    session: AgentSession[Any], room: rtc.Room, **avatar: Any
) -> protoface.AvatarSession:
    """Start `session` in `room` with an avatar, as the plugin requires (avatar first)."""
    face = protoface.AvatarSession(avatar_id="av_stock_001", **avatar)
    await face.start(session, room=room)
    await session.start(agent=Agent(instructions="You greet visitors."), room=room)
    await face.wait_for_join(timeout=60)
    return face


async def keep_greeting(session: AgentSession[Any], offset: float) -> None:
    """Say the recording every `EVERY` seconds, starting `offset` seconds in."""
    await asyncio.sleep(offset)
    while True:
        session.say("Hello!", audio=audio_frames_from_file(str(GREETING)), add_to_chat_ctx=False)
        await asyncio.sleep(EVERY)


def second_token(room_name: str) -> str:
    """A token joining `room_name` as the second agent (from the playground's LiveKit env)."""
    grants = api.VideoGrants(room_join=True, room=room_name, agent=True)
    token = api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
    return token.with_identity(SECOND_AGENT).with_kind("agent").with_grants(grants).to_jwt()


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """The job: the first agent, then the second, both greeting in turn."""
    await ctx.connect()
    first: AgentSession[Any] = AgentSession()
    await start(first, ctx.room)

    second_room = rtc.Room()
    second: AgentSession[Any] = AgentSession()
    greetings: list[asyncio.Task[None]] = []
    faces: list[protoface.AvatarSession] = []

    async def close_second() -> None:
        for task in greetings:
            task.cancel()
        for face in faces:  # ends its hosted session
            await face.aclose()
        with contextlib.suppress(Exception):
            await second.aclose()
        await second_room.disconnect()

    ctx.add_shutdown_callback(close_second)
    await second_room.connect(os.environ["LIVEKIT_URL"], second_token(ctx.room.name))
    faces.append(await start(second, second_room, avatar_participant_identity=SECOND_AVATAR))
    greetings.append(asyncio.create_task(keep_greeting(first, 0.0)))
    greetings.append(asyncio.create_task(keep_greeting(second, EVERY / 2)))

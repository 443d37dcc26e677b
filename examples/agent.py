"""A LiveKit Agents 1.8 voice agent with a Protoface avatar.

The agent listens, thinks and speaks through LiveKit Inference models named by
environment variables; the Protoface avatar joins the room and lip-syncs the
agent's speech. If the avatar is lost mid-conversation, the agent keeps talking
audio-only.

Environment:
    LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET   your LiveKit project
    PROTOFACE_API_KEY                                  your Protoface key
    PROTOFACE_API_URL        optional, e.g. a local emulator
    PROTOFACE_AVATAR_ID      optional, defaults to the stock avatar
    AGENT_STT / AGENT_LLM / AGENT_TTS   optional LiveKit Inference model strings

Run it as LiveKit Agents recommends, then open a room in the LiveKit Agents
Playground (or any LiveKit frontend):

    python -m livekit.agents start --dev examples/agent.py     # or: lk agent dev
"""

from __future__ import annotations

import asyncio
import logging
import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext
from livekit.plugins import protoface

logger = logging.getLogger("protoface-example")


class Assistant(Agent):
    """A short-spoken assistant that greets the user when it starts."""

    def __init__(self) -> None:
        super().__init__(
            instructions=(
                "You are a friendly assistant with a face. Answer in one or two short "
                "sentences, in plain spoken language without lists or markdown."
            )
        )

    async def on_enter(self) -> None:
        self.session.generate_reply(instructions="Greet the user and offer your help.")


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """Put the avatar in the room, then start the conversation (which connects)."""
    session: AgentSession[None] = AgentSession(
        stt=os.environ.get("AGENT_STT", "deepgram/nova-3"),
        llm=os.environ.get("AGENT_LLM", "openai/gpt-4.1-mini"),
        tts=os.environ.get("AGENT_TTS", "cartesia/sonic-2"),
    )

    avatar = protoface.AvatarSession(
        avatar_id=os.environ.get("PROTOFACE_AVATAR_ID", protoface.DEFAULT_STOCK_AVATAR_ID),
        # Per hosted session: a longer call hands over to a successor before it.
        max_duration_seconds=1800,
        # Only ends a session whose agent died: while the agent listens, the
        # plugin keeps the session from idling out.
        idle_timeout_seconds=30,
        metadata={"room": ctx.room.name},
    )

    def on_avatar_lost(event: protoface.AvatarLostEvent) -> None:
        # The plugin already routes the agent's audio back to the room (and brings
        # a replacement when the cause is recoverable); say so.
        logger.info("avatar gone (%s); continuing audio-only", event.reason)
        session.say("My video just dropped, but I can still hear you.")

    def on_avatar_restored(event: protoface.AvatarRestoredEvent) -> None:
        logger.info("avatar back as %s (session %s)", event.avatar_identity, event.session_id)

    avatar.on("avatar_lost", on_avatar_lost)
    avatar.on("avatar_restored", on_avatar_restored)

    # Start the avatar first: it takes over the agent's audio output.
    await avatar.start(session, room=ctx.room)
    await session.start(agent=Assistant(), room=ctx.room)

    try:
        await avatar.wait_for_join(timeout=30)
    except protoface.AvatarSessionFailedError as exc:
        # Reported within seconds (e.g. `livekit_auth_failed`), not after 30 s of silence.
        logger.error("the avatar could not join (%s); continuing audio-only", exc.failure_code)
    except asyncio.TimeoutError:
        logger.warning("the avatar has not joined after 30 s; still waiting in the background")

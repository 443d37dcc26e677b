"""Two agents in one conversation, each with its own face: reception hands over to a specialist.

LiveKit Agents hands a conversation to another `Agent` when a function tool
returns one. Here each agent has its own Protoface avatar id; when an agent
takes over (`on_enter`), it asks the conversation's one `AvatarSession` to
`switch()` to its face. The new avatar joins while the old one still shows,
the agent's speech moves to it between utterances, and the old hosted session
is ended: callers see the face change with no gap in the video and hear every
line once.

Environment:
    LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET   your LiveKit project
    PROTOFACE_API_KEY                                  your Protoface key
    PROTOFACE_API_URL        optional, e.g. a local emulator
    RECEPTIONIST_AVATAR_ID   optional, defaults to av_stock_001 (Ada)
    SPECIALIST_AVATAR_ID     optional, defaults to av_stock_002 (Bram)
    AGENT_STT / AGENT_LLM / AGENT_TTS   optional LiveKit Inference model strings

Run it as LiveKit Agents recommends:

    python -m livekit.agents start --dev examples/handoff.py     # or: lk agent dev
"""

from __future__ import annotations

import logging
import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, RunContext, function_tool
from livekit.plugins import protoface

logger = logging.getLogger("protoface-handoff")

RECEPTIONIST_AVATAR_ID = os.environ.get("RECEPTIONIST_AVATAR_ID", "av_stock_001")
SPECIALIST_AVATAR_ID = os.environ.get("SPECIALIST_AVATAR_ID", "av_stock_002")


class FacedAgent(Agent):
    """An agent that shows its own avatar while it speaks for the conversation.

    Args:
        avatar: The conversation's avatar session (one for all its agents).
        avatar_id: This agent's face.
        instructions: What the agent is told to be.
    """

    def __init__(
        self, avatar: protoface.AvatarSession, *, avatar_id: str, instructions: str
    ) -> None:
        super().__init__(instructions=instructions)
        self.avatar = avatar
        self.avatar_id = avatar_id

    async def on_enter(self) -> None:
        """Show this agent's face (a switch, if another one shows), then greet."""
        if self.avatar.avatar_id != self.avatar_id:
            try:
                await self.avatar.switch(avatar_id=self.avatar_id)
            except protoface.ProtofaceException as exc:
                # The previous face goes on; the conversation does not stop for it.
                logger.warning("could not switch to %s: %s", self.avatar_id, exc)
        await self.greet()

    async def greet(self) -> None:
        """Say hello in this agent's role."""
        self.session.generate_reply(instructions="Introduce yourself in one short sentence.")


class Receptionist(FacedAgent):
    """Greets the caller and hands technical questions to the specialist."""

    def __init__(self, avatar: protoface.AvatarSession) -> None:
        super().__init__(
            avatar,
            avatar_id=RECEPTIONIST_AVATAR_ID,
            instructions=(
                "You are the receptionist. Be brief. When the caller has a technical "
                "question, call transfer_to_specialist."
            ),
        )

    @function_tool
    async def transfer_to_specialist(self, context: RunContext[None]) -> Agent:
        """Hand the caller to the technical specialist."""
        return Specialist(self.avatar)


class Specialist(FacedAgent):
    """Answers technical questions; can send the caller back to reception."""

    def __init__(self, avatar: protoface.AvatarSession) -> None:
        super().__init__(
            avatar,
            avatar_id=SPECIALIST_AVATAR_ID,
            instructions=(
                "You are the technical specialist. Answer in one or two short sentences. "
                "When the caller is done, call transfer_to_reception."
            ),
        )

    @function_tool
    async def transfer_to_reception(self, context: RunContext[None]) -> Agent:
        """Hand the caller back to reception."""
        return Receptionist(self.avatar)


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """One avatar session for the conversation; the receptionist starts."""
    session: AgentSession[None] = AgentSession(
        stt=os.environ.get("AGENT_STT", "deepgram/nova-3"),
        llm=os.environ.get("AGENT_LLM", "openai/gpt-4.1-mini"),
        tts=os.environ.get("AGENT_TTS", "cartesia/sonic-2"),
    )
    avatar = protoface.AvatarSession(avatar_id=RECEPTIONIST_AVATAR_ID)
    avatar.on(
        "avatar_switched",
        lambda ev: logger.info("now showing %s (session %s)", ev.avatar_id, ev.session_id),
    )
    avatar.on("avatar_usage", lambda usage: logger.info("avatar usage: %s", usage.describe()))
    await avatar.start(session, room=ctx.room)
    await session.start(agent=Receptionist(avatar), room=ctx.room)

"""A user's agent with a Protoface avatar, shaped so that a test can run it.

The entrypoint does what only a job can (connect, build the session with your
STT / LLM / TTS); `start_agent` holds the rest, the part worth testing: the
avatar starts before the session, as the plugin requires.

    python -m livekit.agents start --dev my_agent.py   # run it against your LiveKit project
    protoface-emulator playground --agent my_agent.py  # see and hear it, offline
    pytest                                             # test it (test_*.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext
from livekit.agents.utils.audio import audio_frames_from_file
from livekit.plugins import protoface

GREETING = Path(__file__).resolve().parent.parent / "assets" / "hello.wav"


class Greeter(Agent):
    """The agent: greets visitors."""

    def __init__(self) -> None:
        super().__init__(instructions="You greet visitors warmly, in one sentence.")


async def start_agent(session: AgentSession[Any], room: rtc.Room) -> protoface.AvatarSession:
    """Put the avatar in `room` for `session`, then start the agent; returns the avatar."""
    avatar = protoface.AvatarSession(avatar_id="av_stock_001")
    await avatar.start(session, room=room)  # before session.start()
    await session.start(agent=Greeter(), room=room)
    return avatar


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """The job: connect, start the agent with its avatar, greet."""
    await ctx.connect()
    session: AgentSession[Any] = AgentSession()  # your stt=, llm=, tts= here
    avatar = await start_agent(session, ctx.room)
    await avatar.wait_for_join(timeout=30)  # greet through the avatar, not before it is there
    # With a TTS: session.generate_reply(instructions="Greet the visitor."). This
    # example has none, so it greets with the repository's recording, if it is there.
    if GREETING.is_file():
        greeting = audio_frames_from_file(str(GREETING))
        session.say("Hello!", audio=greeting, add_to_chat_ctx=False)

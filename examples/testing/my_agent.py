"""A user's agent with a Protoface avatar, shaped so that a test can run it.

The entrypoint does what only a job can (connect, build the session with your
STT / LLM / TTS); `start_agent` holds the rest, the part worth testing: the
avatar starts before the session, as the plugin requires.

    python my_agent.py dev        # run it against your LiveKit project
    pytest                        # test it (test_my_agent.py)
"""

from __future__ import annotations

from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli
from livekit.plugins import protoface


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
    """The job: connect, then start the agent with its avatar."""
    await ctx.connect()
    session: AgentSession[Any] = AgentSession()  # your stt=, llm=, tts= here
    await start_agent(session, ctx.room)


if __name__ == "__main__":
    cli.run_app(server)

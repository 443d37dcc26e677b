"""The README's quickstart: a voice agent whose speech a Protoface avatar lip-syncs.

The models are LiveKit Inference model strings, served by a LiveKit Cloud
project; any LiveKit plugins' STT, LLM and TTS work in their place. Run it as
LiveKit Agents recommends:

    export LIVEKIT_URL=wss://<your-project>.livekit.cloud LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    export PROTOFACE_API_KEY=...
    python -m livekit.agents start --dev examples/quickstart.py     # or: lk agent dev

With no cloud at all, `examples/quickstart_offline.py` is the same agent
against a local livekit-server and the Protoface emulator.
"""

from livekit.agents import Agent, AgentServer, AgentSession, JobContext
from livekit.plugins import protoface

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-2"
    )
    avatar = protoface.AvatarSession(avatar_id="av_stock_001")
    await avatar.start(session, room=ctx.room)  # before session.start(): it takes the audio
    await session.start(agent=Agent(instructions="You are a friendly assistant."), room=ctx.room)
    session.generate_reply(instructions="Greet the user.")

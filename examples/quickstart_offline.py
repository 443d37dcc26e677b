"""The quickstart, offline: no Protoface account, no cloud, no STT/LLM/TTS keys.

The agent puts a Protoface avatar in every room it is sent to and, once the
avatar has joined, says one pre-recorded line through it (`session.say` with
audio: no text-to-speech). Run a local LiveKit server and the emulator, then
the agent, as LiveKit Agents recommends:

    protoface-emulator livekit-server &     # livekit-server --dev, with a long dev secret
    protoface-emulator --api-key dev-key &
    export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey
    export LIVEKIT_API_SECRET=protoface-dev-secret-local-livekit-only
    export PROTOFACE_API_URL=http://127.0.0.1:8790 PROTOFACE_API_KEY=dev-key
    python -m livekit.agents start --dev examples/quickstart_offline.py

Join a room on that server and the avatar greets you: `protoface-emulator join`
serves a page to open (in the same shell, with the exports above), and
`protoface-emulator token --room ROOM` prints a token for any LiveKit frontend.
It needs `protoface-emulator`, which brings the audio helpers used here.
"""

from pathlib import Path

from livekit.agents import Agent, AgentServer, AgentSession, JobContext
from livekit.plugins import protoface

from protoface_emulator.testing import play, speech, wav_frames

# The recorded line beside this file; a copy of this file elsewhere says a
# synthetic syllable-like line instead, which moves the mouth just the same.
LINE = Path(__file__).resolve().parent / "assets" / "hello.wav"

# livekit-server sends a room only to a worker reporting a load under 1, and a
# worker reports the machine's CPU use: on a machine busy with the avatars (or
# tests) this lone dev agent would get no room. Development only.
server = AgentServer(load_fnc=lambda: 0.0)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session: AgentSession[None] = AgentSession()  # no models: it only says its line
    avatar = protoface.AvatarSession(avatar_id="av_stock_001")
    await avatar.start(session, room=ctx.room)  # before session.start(): it takes the audio
    await session.start(agent=Agent(instructions="You greet people."), room=ctx.room)

    await avatar.wait_for_join(timeout=30)  # raises AvatarSessionFailedError early
    frames = wav_frames(LINE) if LINE.exists() else speech(3.0)
    session.say("Hello! I am your Protoface avatar, running offline.", audio=play(frames))

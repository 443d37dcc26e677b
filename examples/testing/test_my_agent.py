"""A complete test of my_agent.py: a real room, a real avatar, a viewer watching it."""

from livekit.plugins import protoface
from my_agent import start_agent

from protoface_emulator import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer, agent_in, speech


async def test_the_avatar_shows_up_and_speaks_for_the_agent(
    livekit_server: LiveKitServer, protoface_emulator: Emulator, avatar_viewer: AvatarViewer
) -> None:
    async with agent_in(livekit_server, avatar_viewer.room_name, start_agent) as agent:
        await agent.avatar.wait_for_join(timeout=30)
        await avatar_viewer.wait_for_video(timeout=30)

        handle = agent.say(speech(2.0))  # pre-rendered audio: no TTS needed
        await avatar_viewer.wait_for_mouth_open(timeout=15)
        await avatar_viewer.wait_for_audio(1.0, timeout=15)
        await handle.wait_for_playout()
        await avatar_viewer.wait_for_mouth_closed(timeout=15)
        session_id = agent.avatar.session_id

    assert session_id is not None
    async with protoface.ProtofaceAPI() as api:  # the fixture set PROTOFACE_API_URL/_KEY
        assert (await api.get_session(session_id))["status"] in {"ending", "ended"}

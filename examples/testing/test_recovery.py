"""My agent's avatar comes back when it is lost, and the viewer sees the new one.

Removing the avatar from the room (LiveKit's RoomService, as an operator or a
crash would) is a loss nobody chose: the plugin creates a replacement session,
whose avatar joins under an identity of its own (`protoface-avatar-agent-2`) and
speaks for the agent from then on. `avatar_viewer` follows every avatar that
publishes on the agent's behalf, so it sees the replacement as a person would.
"""

import time

from livekit import api
from livekit.plugins import protoface
from my_agent import start_agent

from protoface_emulator import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer, agent_in, eventually, speech


async def test_a_removed_avatar_is_replaced_and_the_replacement_speaks(
    livekit_server: LiveKitServer, protoface_emulator: Emulator, avatar_viewer: AvatarViewer
) -> None:
    async with agent_in(livekit_server, avatar_viewer.room_name, start_agent) as agent:
        restored: list[protoface.AvatarRestoredEvent] = []
        agent.avatar.on("avatar_restored", restored.append)
        await agent.avatar.wait_for_join(timeout=30)
        first = await avatar_viewer.wait_for_video(timeout=30)
        first_session = agent.avatar.session_id

        async with livekit_server.api() as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room=avatar_viewer.room_name, identity=first)
            )
        await eventually(lambda: restored, timeout=60, message="no avatar_restored in 60 s")
        replacement = restored[0].avatar_identity
        assert replacement != first
        assert restored[0].previous_session_id == first_session
        assert agent.avatar.avatar_identity == replacement

        # The viewer follows: new frames, from the new identity.
        assert await avatar_viewer.wait_for_new_avatar(other_than=[first]) == replacement
        assert avatar_viewer.current_identity == replacement

        said_at = time.monotonic()
        handle = agent.say(speech(2.0))
        await avatar_viewer.wait_for_mouth_open(timeout=15, identity=replacement)
        await avatar_viewer.wait_for_audio(1.0, since=said_at, identity=replacement, timeout=15)
        await handle.wait_for_playout()
        assert avatar_viewer.audio_seconds(since=said_at, identity=first) == 0
        sessions = agent.avatar.session_ids

    assert len(sessions) == 2
    async with protoface.ProtofaceAPI() as client:  # the fixture set PROTOFACE_API_URL/_KEY
        lost, replaced = [await client.get_session(s) for s in sessions]
    # The removed avatar's session failed (its worker left the room); the
    # replacement ended with the conversation. Neither is billed any more.
    failure = lost["failure"]
    assert lost["status"] == "failed" and failure is not None
    assert failure["code"] == "worker_lost"
    assert replaced["status"] in {"ending", "ended"}

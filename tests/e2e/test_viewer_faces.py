"""The kit's viewer reads every stock face's mouth: shut when quiet, open as the agent speaks.

Each stock avatar (Ada, Bram, Test Pattern) draws its own closed mouth, so a viewer
that compared every face with Ada's would see Bram's mouth always open.
"""

from __future__ import annotations

import pytest

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer, speech

from .harness import agent_in, room_name, viewer_in


@pytest.mark.parametrize("avatar_id", ["av_stock_002", "av_stock_003"])
async def test_the_viewer_sees_the_mouth_of_every_stock_face(
    livekit_server: LiveKitServer, emulator: Emulator, avatar_id: str
) -> None:
    room = room_name("faces-mouth")
    async with (
        viewer_in(livekit_server, room) as viewer,
        agent_in(livekit_server, emulator, room, avatar_options={"avatar_id": avatar_id}) as agent,
    ):
        await agent.avatar.wait_for_join(timeout=30)
        await viewer.wait_first_video(timeout=30)
        await viewer.wait_for_mouth_closed(frames=10, timeout=30)
        handle = agent.say(speech(3.0))
        await viewer.wait_for_mouth_open(timeout=30)
        await handle.wait_for_playout()
        await viewer.wait_for_mouth_closed(frames=10, timeout=30)

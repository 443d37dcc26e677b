"""The `hosted` timing in a real room: the avatar joins late but joins, and acknowledges late.

The kit's `protoface_emulator` (options: the `hosted` profile) with its real
worker, a real `livekit-server --dev`, and an "agent" participant that streams
speech to the avatar with livekit-agents' `DataStreamAudioOutput` and takes the
avatar's `lk.playback_started` itself. Elapsed times are checked only against
the configured minimum (a property, not a speed); conditions are waited for with
generous deadlines.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import DataStreamAudioOutput

from protoface_emulator.avatar.notices import RPC_PLAYBACK_STARTED
from protoface_emulator.hosting.timing import Timing
from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer, eventually, speech

pytestmark = pytest.mark.e2e

# The hosted profile, with an acknowledgement delay long enough to tell apart from
# the pipeline's own latency.
ACK_DELAY = 1.0
HOSTED = Timing.profile("hosted", seed=3).with_overrides(ack_delay=ACK_DELAY)


@pytest.fixture
def protoface_emulator_options() -> dict[str, Any]:
    """The kit's emulator, as slow as the hosted service."""
    return {"timing": HOSTED}


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def _session(http: aiohttp.ClientSession, emu: Emulator, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    method = "GET" if body is None else "POST"
    async with http.request(method, emu.url + path, json=body, headers=headers) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def test_under_hosted_the_avatar_joins_late_and_acknowledges_late(
    livekit_server: LiveKitServer, protoface_emulator: Emulator
) -> None:
    emu = protoface_emulator
    assert emu.timing == HOSTED
    room, agent_id, avatar_id = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in "rav")
    agent = rtc.Room()
    started_at: list[float] = []
    agent_token = livekit_server.token(agent_id, room, kind="agent")
    await agent.connect(livekit_server.url, agent_token)

    def playback_started(_data: rtc.RpcInvocationData) -> str:
        started_at.append(time.monotonic())
        return "ok"

    agent.local_participant.register_rpc_method(RPC_PLAYBACK_STARTED, playback_started)
    worker_token = livekit_server.token(
        avatar_id, room, attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: agent_id}
    )
    transport = {"type": "livekit", "url": livekit_server.url, "room_name": room}
    transport |= {"worker_identity": avatar_id, "worker_token": worker_token}
    body = {"avatar_id": "av_stock_001", "transport": transport}
    try:
        async with aiohttp.ClientSession() as http:
            created = await _session(http, emu, "/v1/sessions", body)
            assert created["status"] == "queued"
            path = f"/v1/sessions/{created['id']}"

            async def running() -> bool:
                return bool((await _session(http, emu, path))["status"] == "running")

            await eventually(running, timeout=60, message="the avatar never joined")
            session = await _session(http, emu, path)

            # It joined late, but joined: the cold start, then the first frame's delay.
            created_at, started = _time(session["created_at"]), _time(session["started_at"])
            first_frame = _time(session["first_frame_at"])
            assert (started - created_at).total_seconds() >= HOSTED.bounds("cold_start")[0]
            low = HOSTED.bounds("first_frame_delay")[0]
            assert (first_frame - started).total_seconds() >= low

            # Its acknowledgement of a segment comes at least ACK_DELAY after the audio.
            output = DataStreamAudioOutput(agent, destination_identity=avatar_id)
            sent_at = time.monotonic()
            for frame in speech(1.0):
                await output.capture_frame(frame)
            output.flush()
            await eventually(lambda: bool(started_at), timeout=30, message="no lk.playback_started")
            assert started_at[0] - sent_at >= ACK_DELAY
            finished = await asyncio.wait_for(output.wait_for_playout(), timeout=30)
            assert not finished.interrupted
    finally:
        await agent.disconnect()

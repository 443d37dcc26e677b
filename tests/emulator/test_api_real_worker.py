"""The emulator with its real default worker (protoface_emulator.worker).

Nothing listens at ws://127.0.0.1:1, so there the real worker cannot join: the
session must still reach `failed` with a failure code within a bound, never hang
in `queued`/`starting`. With the shared `livekit_server`, requests the API accepts
must give sessions that run.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from emulator_helpers import eventually, with_transport
from livekit import api, rtc
from protoface_sdk import ProtofaceClient, SessionStatus

from protoface_emulator.lifecycle import FAILURE_JOIN_TIMEOUT, FAILURE_LIVEKIT_UNREACHABLE
from protoface_emulator.livekit_dev import LiveKitServer
from protoface_emulator.server import Emulator

JOIN_TIMEOUT = 10.0


async def test_unreachable_livekit_url_fails_the_session_within_the_bound() -> None:
    async with Emulator(join_timeout=JOIN_TIMEOUT) as emu:  # worker_factory=None: the real one
        with ProtofaceClient(emu.api_key, base_url=emu.url) as client:
            created = await asyncio.to_thread(
                client.sessions.create, with_transport(url="ws://127.0.0.1:1")
            )
            record = emu.store.get_session(created.id)
            await eventually(
                lambda: record.status, lambda s: s == "failed", timeout=JOIN_TIMEOUT + 10
            )
            failed = await asyncio.to_thread(client.sessions.get, created.id)
    assert failed.status == SessionStatus.failed
    assert failed.failure is not None
    assert failed.failure.code in (FAILURE_LIVEKIT_UNREACHABLE, FAILURE_JOIN_TIMEOUT)
    assert failed.failed_at is not None


def _token(server: LiveKitServer, identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


async def test_track_audio_without_a_pinned_identity_runs(livekit_server: LiveKitServer) -> None:
    # The API takes audio_source="track" without subscribe_to_identity (the SDK's
    # model has it optional); the worker must then listen to whoever joins, not crash.
    room = f"api-track-{uuid.uuid4().hex[:8]}"
    speaker = rtc.Room()
    await speaker.connect(livekit_server.url, _token(livekit_server, "speaker", room))
    source = rtc.AudioSource(16000, 1)
    await speaker.local_participant.publish_track(
        rtc.LocalAudioTrack.create_audio_track("mic", source),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )
    tone = (0.2 * 32767 * np.sin(2 * np.pi * 200 * np.arange(160) / 16000)).astype(np.int16)
    try:
        async with Emulator(join_timeout=JOIN_TIMEOUT) as emu:
            body = with_transport(
                url=livekit_server.url,
                room_name=room,
                worker_identity="avatar-unpinned",
                worker_token=_token(livekit_server, "avatar-unpinned", room),
                audio_source="track",
            )
            with ProtofaceClient(emu.api_key, base_url=emu.url) as client:
                created = await asyncio.to_thread(client.sessions.create, body)
            record = emu.store.get_session(created.id)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + JOIN_TIMEOUT
            while record.status in ("queued", "starting") and loop.time() < deadline:
                for _ in range(10):  # 100 ms of sound per round; the worker waits for it
                    await source.capture_frame(rtc.AudioFrame(tone.tobytes(), 16000, 1, 160))
            assert record.status == "running", record.failure
    finally:
        await speaker.disconnect()

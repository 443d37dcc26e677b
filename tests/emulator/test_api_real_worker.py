"""The emulator with its real default worker (protoface_emulator.avatar.worker).

Nothing listens at ws://127.0.0.1:1, so there the real worker cannot join: the
session must still reach `failed`, with the code that says why
(`livekit_unreachable`), within a bound, never hang in `queued`/`starting`. With
the kit's `livekit_server`, requests the API accepts must give sessions that run.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from emulator_helpers import eventually, with_transport
from livekit import rtc
from protoface_sdk import ProtofaceClient, SessionStatus

from protoface_emulator.avatar.options import WorkerOptions
from protoface_emulator.lifecycle import FAILURE_LIVEKIT_UNREACHABLE
from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

JOIN_TIMEOUT = 10.0


async def test_unreachable_livekit_url_fails_the_session_as_unreachable() -> None:
    # The worker gives up joining after its connect bound and reports that nothing
    # answered (livekit_unreachable); the store's join timeout would report the
    # vaguer worker_join_timeout. Here the join timeout is well past the connect
    # bound, so only the worker's diagnosis can be the one reported.
    connect_bound = WorkerOptions().connect_timeout
    async with Emulator(join_timeout=connect_bound + 30) as emu:  # the real worker
        with ProtofaceClient(emu.api_key, base_url=emu.url) as client:
            created = await asyncio.to_thread(
                client.sessions.create, with_transport(url="ws://127.0.0.1:1")
            )
            record = emu.store.get_session(created.id)
            await eventually(
                lambda: record.status, lambda s: s == "failed", timeout=connect_bound + 20
            )
            failed = await asyncio.to_thread(client.sessions.get, created.id)
    assert failed.status == SessionStatus.failed
    assert failed.failure is not None
    assert failed.failure.code == FAILURE_LIVEKIT_UNREACHABLE, failed.failure
    assert "ws://127.0.0.1:1" in failed.failure.message
    assert failed.failed_at is not None


async def test_track_audio_without_a_pinned_identity_runs(livekit_server: LiveKitServer) -> None:
    # The API takes audio_source="track" without subscribe_to_identity (the SDK's
    # model has it optional); the worker must then listen to whoever joins, not crash.
    room = f"api-track-{uuid.uuid4().hex[:8]}"
    speaker = rtc.Room()
    await speaker.connect(livekit_server.url, livekit_server.token("speaker", room))
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
                worker_token=livekit_server.token("avatar-unpinned", room),
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

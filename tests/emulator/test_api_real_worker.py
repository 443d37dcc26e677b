"""The emulator with its real default worker (protoface_emulator.worker), no LiveKit.

Nothing listens at ws://127.0.0.1:1, so the real worker cannot join: the session
must still reach `failed` with a failure code within a bound, never hang in
`queued`/`starting`.
"""

from __future__ import annotations

import asyncio

from emulator_helpers import eventually, with_transport
from protoface_sdk import ProtofaceClient, SessionStatus

from protoface_emulator.lifecycle import FAILURE_JOIN_TIMEOUT, FAILURE_LIVEKIT_UNREACHABLE
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

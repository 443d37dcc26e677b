"""`LiveKitServer.stall(seconds)`: the kit's server freezes, then carries on.

A room API call sent during a stall is not answered while the process is
stopped, and is answered once it is continued; a cancelled stall continues the
server at once; bad values are refused. The state of the process is read from
`/proc` (`T` = stopped), so "frozen" is a fact about the process, not a timing.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from pathlib import Path

import pytest
from livekit import api

from protoface_emulator.local.livekit_dev import MAX_STALL_SECONDS
from protoface_emulator.testing import LiveKitServer, eventually

pytestmark = pytest.mark.e2e


def _stopped(server: LiveKitServer) -> bool:
    """Whether the server process is stopped (state `T` in /proc/PID/stat)."""
    stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    # The state follows the command name, which is in parentheses.
    return stat.rpartition(")")[2].split()[0] in ("T", "t")


async def _list_rooms(server: LiveKitServer) -> int:
    async with server.api() as lk:
        listed = await lk.room.list_rooms(api.ListRoomsRequest())
    return len(listed.rooms)


async def test_a_stalled_server_answers_nothing_until_it_is_continued(
    livekit_server: LiveKitServer,
) -> None:
    await _list_rooms(livekit_server)  # answers before the stall
    stall = asyncio.create_task(livekit_server.stall(3.0))
    await eventually(lambda: _stopped(livekit_server), timeout=5)
    listing = asyncio.create_task(_list_rooms(livekit_server))
    # Frozen: the call cannot be answered while the process is stopped.
    done, _ = await asyncio.wait({listing}, timeout=1.0)
    assert not done and _stopped(livekit_server)
    await stall
    assert not _stopped(livekit_server)
    # Continued: the very same call is answered.
    assert await asyncio.wait_for(listing, timeout=20) >= 0


async def test_a_stall_freezes_data_between_participants(livekit_server: LiveKitServer) -> None:
    from livekit import rtc

    room = f"stall-{uuid.uuid4().hex[:8]}"
    sender, receiver = rtc.Room(), rtc.Room()
    received: list[bytes] = []
    receiver.on("data_received", lambda packet: received.append(packet.data))
    await receiver.connect(livekit_server.url, livekit_server.token("receiver", room))
    await sender.connect(livekit_server.url, livekit_server.token("sender", room))
    try:
        await eventually(lambda: "sender" in receiver.remote_participants, timeout=20)
        stall = asyncio.create_task(livekit_server.stall(3.0))
        await eventually(lambda: _stopped(livekit_server), timeout=5)
        await sender.local_participant.publish_data(b"during the stall", reliable=True)
        await asyncio.sleep(1.0)
        assert received == [] and _stopped(livekit_server)  # nothing got through
        await stall
        await eventually(lambda: received == [b"during the stall"], timeout=20)
    finally:
        await sender.disconnect()
        await receiver.disconnect()


async def test_a_cancelled_stall_continues_the_server_at_once(
    livekit_server: LiveKitServer,
) -> None:
    stall = asyncio.create_task(livekit_server.stall(MAX_STALL_SECONDS))
    await eventually(lambda: _stopped(livekit_server), timeout=5)
    stall.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stall
    assert not _stopped(livekit_server)
    assert await asyncio.wait_for(_list_rooms(livekit_server), timeout=20) >= 0


async def test_one_stall_at_a_time(livekit_server: LiveKitServer) -> None:
    stall = asyncio.create_task(livekit_server.stall(1.0))
    await eventually(lambda: _stopped(livekit_server), timeout=5)
    with pytest.raises(RuntimeError, match="already stalled; await that stall first"):
        await livekit_server.stall(1.0)
    await stall
    assert not _stopped(livekit_server)


@pytest.mark.parametrize("seconds", [0, -1.0, math.nan, math.inf, MAX_STALL_SECONDS + 0.1])
async def test_a_stall_out_of_range_is_refused_and_freezes_nothing(
    livekit_server: LiveKitServer, seconds: float
) -> None:
    with pytest.raises(ValueError, match=rf"at most {MAX_STALL_SECONDS:g} s; got"):
        await livekit_server.stall(seconds)
    assert not _stopped(livekit_server)


@pytest.mark.parametrize("seconds", ["2", True, None])
async def test_a_stall_of_no_number_is_refused(
    livekit_server: LiveKitServer, seconds: object
) -> None:
    with pytest.raises(ValueError, match="takes a number of seconds"):
        await livekit_server.stall(seconds)  # type: ignore[arg-type]

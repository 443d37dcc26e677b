"""`AvatarUsage`: the books one conversation keeps, and the billable seconds read after the end.

The recorder is driven here event by event with a hand-moved clock; the reads
go to the real emulator on loopback (its sessions driven by `ManualWorkers`, no
LiveKit). `tests/e2e/test_telemetry.py` checks the same figures through a real
room, against what the emulator reports.
"""

from __future__ import annotations

import asyncio

import pytest

from livekit.plugins.protoface import ProtofaceAPI
from livekit.plugins.protoface.events import (
    AvatarHandoverEvent,
    AvatarLostEvent,
    AvatarRestoredEvent,
    AvatarSwitchedEvent,
)
from livekit.plugins.protoface.telemetry import AvatarTelemetry
from livekit.plugins.protoface.usage import AvatarUsage, UsageRecorder
from protoface_emulator import Emulator
from protoface_emulator.lifecycle import ManualWorkers

from .helpers import API_KEY, add_session, eventually


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _recorder(clock: Clock) -> UsageRecorder:
    return UsageRecorder(AvatarTelemetry(avatar_id="av_stock_001", quality=None), clock=clock)


def test_the_books_count_each_kind_of_event_and_the_speech_without_the_avatar() -> None:
    clock = Clock()
    books = _recorder(clock)
    clock.now += 1.5
    books.joined("sess_a")
    books.speaking(True)  # heard through the avatar: not counted
    clock.now += 2.0
    books.lost(AvatarLostEvent("sess_a", "worker_lost", "failed"))
    clock.now += 3.0  # speaking, no avatar: 3 s
    books.speaking(False)
    clock.now += 4.0  # silent, no avatar: not counted
    books.speaking(True)
    clock.now += 0.5  # 0.5 s more
    books.restored(AvatarRestoredEvent("sess_b", "id-2", "sess_a", "worker_lost"))
    clock.now += 5.0  # through the replacement: not counted
    books.handed_over(AvatarHandoverEvent("sess_c", "id-3", "sess_b", "id-2"))
    books.lost(AvatarLostEvent("sess_c", "idle_timeout", "ended"))
    clock.now += 1.0  # 1 s
    books.switched(AvatarSwitchedEvent("sess_d", "id-4", "av_stock_002", "sess_c", "id-3", "x"))
    books.lost(AvatarLostEvent("sess_d", "worker_lost", "failed"))
    books.sessions_started(4)

    usage = books.usage()
    assert usage.join_latency == pytest.approx(1.5)
    assert dict(usage.losses) == {"worker_lost": 2, "idle_timeout": 1}
    assert usage.losses_total == 3
    assert (usage.replacements, usage.handovers, usage.switches) == (1, 1, 1)
    assert usage.speech_seconds_without_avatar == pytest.approx(4.5)
    assert usage.sessions_started == 4
    assert usage.billable_seconds == 0 and not usage.billable_seconds_final
    line = usage.describe()
    assert "4 hosted sessions" in line and "worker_lost=2" in line and "not final" in line


def test_a_snapshot_is_frozen_and_does_not_move_with_the_books() -> None:
    clock = Clock()
    books = _recorder(clock)
    before = books.usage()
    books.lost(AvatarLostEvent("sess_a", "worker_lost", "failed"))
    assert before.losses_total == 0 and books.usage().losses_total == 1
    with pytest.raises(AttributeError):
        before.switches = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        before.losses["x"] = 1  # type: ignore[index]
    assert AvatarUsage().join_latency is None


async def test_billable_seconds_are_the_sum_read_after_each_session_ended(
    emu: Emulator, workers: ManualWorkers
) -> None:
    first = await add_session(emu, workers, "running")
    second = await add_session(emu, workers, "running")
    never_joined = await add_session(emu, workers, "queued")
    # Billed by the started second: let the running ones bill something.
    await eventually(lambda: second.view()["usage"]["billable_seconds"] >= 1)
    for record in (first, second, never_joined):
        await emu.store.end_session(record.id)
    ids = [first.id, second.id, never_joined.id]
    expected = sum(r.view()["usage"]["billable_seconds"] for r in (first, second))
    assert expected > 0

    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url) as api:
        usage = await _recorder(Clock()).finish(api, ids)
    assert usage.billable_seconds == pytest.approx(expected, abs=1e-3)
    assert usage.billable_seconds_final and usage.sessions_billed == 3
    assert usage.sessions_started == 3


async def test_a_session_still_running_when_read_leaves_the_total_not_final(
    emu: Emulator, workers: ManualWorkers
) -> None:
    ended = await add_session(emu, workers, "running")
    await eventually(lambda: ended.view()["usage"]["billable_seconds"] >= 1)
    await emu.store.end_session(ended.id)
    running = await add_session(emu, workers, "running")

    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url) as api:
        usage = await _recorder(Clock()).finish(api, [ended.id, running.id], read_bound=0.2)
    assert not usage.billable_seconds_final
    assert usage.sessions_billed == 1
    assert usage.billable_seconds > 0


async def test_a_session_that_cannot_be_read_leaves_the_total_not_final(emu: Emulator) -> None:
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url) as api:
        usage = await _recorder(Clock()).finish(api, ["sess_unknown"], read_bound=0.2)
    assert not usage.billable_seconds_final and usage.sessions_billed == 0
    assert usage.billable_seconds == 0


async def test_reading_the_usage_is_bounded_when_protoface_does_not_answer() -> None:
    """A loopback aiohttp server that accepts the read and never answers it."""
    from aiohttp import web

    release = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/sessions/{id}", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with ProtofaceAPI(api_key=API_KEY, api_url=f"http://127.0.0.1:{port}") as api:
            # Generous: a close that hangs on Protoface would never come back.
            usage = await asyncio.wait_for(
                _recorder(Clock()).finish(api, ["sess_a", "sess_b"], read_bound=0.5), timeout=60
            )
    finally:
        release.set()
        await runner.cleanup()
    assert not usage.billable_seconds_final and usage.sessions_billed == 0
    assert usage.sessions_started == 2

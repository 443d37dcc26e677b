"""The acknowledgement and finish rule (watchdog.py), on its own: no route, no room.

Timers run on the test's event loop with short bounds; what is pinned is which
answer is owed when, and that what goes unanswered is reported once per route.
"""

from __future__ import annotations

import asyncio

from livekit.plugins.protoface.ledger import Segment, Utterance
from livekit.plugins.protoface.watchdog import Watchdog


def watchdog(
    *, ack_timeout: float = 0.05, finish_grace: float = 0.05
) -> tuple[Watchdog, list[str], list[int]]:
    unanswered: list[str] = []
    suspected: list[int] = []
    dog = Watchdog(
        ack_timeout=ack_timeout,
        finish_grace=finish_grace,
        on_unanswered=unanswered.append,
        on_suspect=lambda: suspected.append(1),
    )
    dog.new_route(avatar=True)
    dog.suspecting = True
    return dog, unanswered, suspected


def speech(seconds: float = 0.02) -> Segment:
    return Segment(Utterance(captured=seconds), 0.0, sent=seconds)


async def test_a_segment_never_acknowledged_is_reported_once() -> None:
    dog, unanswered, suspected = watchdog()
    dog.sent(speech())
    dog.sent(speech())
    await asyncio.sleep(0.2)
    assert len(unanswered) == 1 and "lk.playback_started" in unanswered[0]
    assert suspected  # the fallback was made ready first


async def reported(unanswered: list[str], timeout: float = 10.0) -> None:
    """Wait until something was reported unanswered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not unanswered:
        assert loop.time() < deadline, "nothing was reported unanswered"
        await asyncio.sleep(0.01)


async def test_an_acknowledged_segment_must_finish_after_its_audio() -> None:
    dog, unanswered, _ = watchdog()
    segment = speech(1.5)
    dog.sent(segment)
    dog.acknowledged(segment)
    dog.closed(segment)
    await asyncio.sleep(0.1)
    assert unanswered == []  # its 1.5 s of audio are not over yet
    await reported(unanswered)
    assert len(unanswered) == 1 and "lk.playback_finished" in unanswered[0]


async def test_a_finished_segment_owes_nothing() -> None:
    dog, unanswered, _ = watchdog()
    segment = speech()
    dog.sent(segment)
    dog.acknowledged(segment)
    dog.closed(segment)
    dog.finished(segment)
    await asyncio.sleep(0.2)
    assert unanswered == []


async def test_an_avatar_that_never_acknowledges_is_held_to_finishes_only() -> None:
    dog, unanswered, _ = watchdog()
    first = speech()
    dog.sent(first)
    dog.closed(first)
    dog.finished(first)  # played without a lk.playback_started
    assert not dog.acks_expected
    second = speech(1.5)
    dog.sent(second)
    dog.closed(second)
    await asyncio.sleep(0.2)
    assert unanswered == []  # no acknowledgement is owed any more (ack_timeout is 0.05 s)
    await reported(unanswered)
    assert len(unanswered) == 1 and "lk.playback_finished" in unanswered[0]


async def test_an_unanswered_clear_settles_first_then_reports() -> None:
    dog, unanswered, _ = watchdog()
    segment = speech()
    dog.sent(segment)
    dog.acknowledged(segment)
    expired: list[Segment] = []
    dog.clearing(segment, lambda s: expired.append(s) or True)
    await asyncio.sleep(0.2)
    assert expired == [segment]
    assert len(unanswered) == 1 and "lk.clear_buffer" in unanswered[0]


async def test_a_new_route_silences_the_old_routes_timers() -> None:
    dog, unanswered, _ = watchdog()
    dog.sent(speech())
    dog.new_route(avatar=True)
    await asyncio.sleep(0.2)
    assert unanswered == []


async def test_the_room_route_is_held_to_nothing() -> None:
    dog, unanswered, suspected = watchdog()
    dog.new_route(avatar=False)
    dog.sent(speech())
    await asyncio.sleep(0.2)
    assert unanswered == [] and suspected == []


async def test_forgiving_watches_afresh() -> None:
    dog, unanswered, _ = watchdog()
    dog.report("late")
    dog.report("later")
    assert unanswered == ["late"]
    dog.forgive()
    dog.report("again")
    assert unanswered == ["late", "again"]


def test_what_was_heard_stops_where_the_avatar_fell_silent() -> None:
    dog, _, _ = watchdog()
    segment = Segment(Utterance(captured=10.0), 2.0, sent=5.0, started_at=100.0)
    dog.silent_since = 101.5
    assert dog.heard(segment) == 3.5  # its base, and 1.5 s played before the silence
    assert dog.heard(Segment(Utterance(), 4.0, sent=1.0)) == 4.0  # never acknowledged

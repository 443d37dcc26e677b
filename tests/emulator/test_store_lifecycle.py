"""The session lifecycle in the store, driven by stand-in workers (no LiveKit here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from emulator_helpers import eventually, session_body
from protoface_sdk._generated import Session
from standin_worker import StandInWorker, StandInWorkers

from protoface_emulator.api.errors import ApiError
from protoface_emulator.api.limits import StoreConfig
from protoface_emulator.api.records import SessionRecord
from protoface_emulator.api.requests import SessionCreate, parse_session_create
from protoface_emulator.api.store import Store
from protoface_emulator.lifecycle import (
    END_REASON_IDLE_TIMEOUT,
    END_REASON_MAX_DURATION,
    END_REASON_METADATA_KEY,
    END_REASON_REQUESTED,
    END_REASON_SHUTDOWN,
    FAILURE_JOIN_TIMEOUT,
    FAILURE_WORKER_CRASHED,
    ManualWorkers,
    WorkerEvents,
    WorkerFactory,
    WorkerSpec,
)


def request(**overrides: Any) -> SessionCreate:
    return parse_session_create(session_body(**overrides))


def status_of(record: SessionRecord) -> str:
    """The status, after checking the resource validates under the SDK's model."""
    Session.model_validate(record.view())
    return record.status


MakeStore = Callable[..., Store]


@pytest.fixture
async def make_store() -> AsyncIterator[MakeStore]:
    """Builds stores (worker factory, config) and shuts every one down afterwards."""
    made: list[Store] = []

    def make(factory: WorkerFactory, config: StoreConfig | None = None) -> Store:
        made.append(Store(factory, config))
        return made[-1]

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
def store(workers: StandInWorkers, make_store: MakeStore) -> Store:
    return make_store(workers, StoreConfig(join_timeout_seconds=5.0))


async def test_queued_then_starting_then_running(store: Store) -> None:
    record, replayed = await store.create_session(request())
    assert not replayed
    assert record.status == "queued" and record.started_at is None
    await eventually(lambda: status_of(record), lambda s: s == "running")
    assert record.started_at is not None and record.first_frame_at is not None
    assert record.created_at <= record.started_at <= record.first_frame_at
    assert record.failure is None and record.ended_at is None


async def test_no_first_frame_within_the_bound_fails_and_closes_the_worker(
    make_store: MakeStore,
) -> None:
    silent = StandInWorkers(publish=False)
    store = make_store(silent, StoreConfig(join_timeout_seconds=0.3))
    record, _ = await store.create_session(request())
    await eventually(lambda: status_of(record), lambda s: s == "failed")
    assert record.failure is not None
    assert record.failure["code"] == FAILURE_JOIN_TIMEOUT
    assert record.failed_at is not None and record.first_frame_at is None
    assert store.active_count == 0
    [worker] = silent.started
    await eventually(lambda: worker.closed, bool)


async def test_worker_failure_fails_the_session(make_store: MakeStore) -> None:
    failing = StandInWorkers(fail_with=("livekit_unreachable", "nothing at ws://127.0.0.1:1"))
    store = make_store(failing)
    record, _ = await store.create_session(request())
    await eventually(lambda: status_of(record), lambda s: s == "failed")
    assert record.failure == {
        "code": "livekit_unreachable",
        "message": "nothing at ws://127.0.0.1:1",
    }
    assert END_REASON_METADATA_KEY not in record.metadata
    await eventually(lambda: failing.started[0].closed, bool)


async def test_a_failure_message_never_carries_the_worker_token(make_store: MakeStore) -> None:
    # The worker quotes LiveKit's errors, and LiveKit may quote the token back.
    echoing = StandInWorkers(
        fail_with=("livekit_auth_failed", "401: token secret-worker-jwt is not valid")
    )
    store = make_store(echoing)
    record, _ = await store.create_session(request())
    await eventually(lambda: status_of(record), lambda s: s == "failed")
    assert record.failure is not None
    assert "secret-worker-jwt" not in record.failure["message"]
    assert record.failure["message"] == "401: token [redacted] is not valid"


async def test_a_factory_that_raises_fails_the_session(make_store: MakeStore) -> None:
    def broken(spec: WorkerSpec, events: WorkerEvents) -> StandInWorker:
        raise RuntimeError("no worker for you")

    crashing = make_store(broken)
    record, _ = await crashing.create_session(request())
    assert record.status == "failed"
    assert record.failure is not None and record.failure["code"] == FAILURE_WORKER_CRASHED
    assert crashing.active_count == 0


async def test_a_failure_reported_inside_the_factory_still_closes_the_worker(
    make_store: MakeStore,
) -> None:
    made: list[StandInWorker] = []

    def fails_at_once(spec: WorkerSpec, events: WorkerEvents) -> StandInWorker:
        events.on_failed("livekit_auth_failed", "bad token")
        worker = StandInWorker(spec, events, StandInWorkers())
        made.append(worker)
        return worker

    store = make_store(fails_at_once)
    record, _ = await store.create_session(request())
    assert record.status == "failed" and record.handle is None
    await eventually(lambda: made[0].closed, bool)


async def test_end_closes_the_worker_and_records_the_reason(
    store: Store, workers: StandInWorkers
) -> None:
    record, _ = await store.create_session(request(metadata={"mine": 1}))
    await eventually(lambda: status_of(record), lambda s: s == "running")
    ended = await store.end_session(record.id)
    assert ended.status == "ended" and ended.ended_at is not None
    assert ended.metadata == {"mine": 1, END_REASON_METADATA_KEY: END_REASON_REQUESTED}
    assert workers.started[0].closed and workers.started[0].close_calls == 1
    again = await store.end_session(record.id)
    assert again is ended and again.ended_at == ended.ended_at
    assert workers.started[0].close_calls == 1


async def test_end_before_running_skips_billing(store: Store) -> None:
    record, _ = await store.create_session(request())
    ended = await store.end_session(record.id)
    assert ended.status == "ended"
    assert ended.first_frame_at is None
    assert ended.view()["usage"] == {"billable_seconds": 0, "frames": 0}


async def test_ending_a_failed_session_returns_it_unchanged(make_store: MakeStore) -> None:
    store = make_store(StandInWorkers(fail_with=("worker_lost", "gone")))
    record, _ = await store.create_session(request())
    await eventually(lambda: status_of(record), lambda s: s == "failed")
    assert (await store.end_session(record.id)).status == "failed"
    assert END_REASON_METADATA_KEY not in record.metadata


async def test_a_slow_worker_leaves_the_session_ending_until_it_is_gone(
    make_store: MakeStore,
) -> None:
    slow = StandInWorkers(close_delay=0.5)
    store = make_store(slow, StoreConfig(end_wait_seconds=0.05))
    record, _ = await store.create_session(request())
    answer = await store.end_session(record.id)
    assert answer.status == "ending"
    assert store.active_count == 1  # still counts against the plan while draining
    await eventually(lambda: status_of(record), lambda s: s == "ended")
    assert slow.started[0].closed and store.active_count == 0


async def test_a_worker_that_never_closes_is_abandoned_after_the_bound(
    make_store: MakeStore,
) -> None:
    stuck = StandInWorkers(close_delay=60)
    store = make_store(stuck, StoreConfig(end_wait_seconds=0.05, worker_close_timeout_seconds=0.2))
    record, _ = await store.create_session(request())
    await store.end_session(record.id)
    await eventually(lambda: status_of(record), lambda s: s == "ended", timeout=5)


async def test_max_duration_ends_the_session(make_store: MakeStore) -> None:
    store = make_store(StandInWorkers(send_audio=True))
    record, _ = await store.create_session(request(max_duration_seconds=1))
    await eventually(lambda: status_of(record), lambda s: s == "ended", timeout=10)
    assert record.metadata[END_REASON_METADATA_KEY] == END_REASON_MAX_DURATION
    assert record.view()["usage"]["billable_seconds"] in (1, 2)


async def test_idle_timeout_ends_a_session_without_audio(make_store: MakeStore) -> None:
    store = make_store(StandInWorkers(send_audio=False))
    record, _ = await store.create_session(request(idle_timeout_seconds=1))
    await eventually(lambda: status_of(record), lambda s: s == "running")
    await eventually(lambda: status_of(record), lambda s: s == "ended", timeout=10)
    assert record.metadata[END_REASON_METADATA_KEY] == END_REASON_IDLE_TIMEOUT


async def test_audio_keeps_a_session_from_idling(make_store: MakeStore) -> None:
    store = make_store(StandInWorkers(send_audio=True))
    record, _ = await store.create_session(request(idle_timeout_seconds=1))
    await eventually(lambda: status_of(record), lambda s: s == "running")
    await asyncio.sleep(2.5)
    assert record.status == "running"


async def test_idle_counting_starts_when_running(make_store: MakeStore) -> None:
    # The worker takes longer to show its first frame than the idle timeout: the
    # session must not end as idle for time spent joining.
    slow_join = StandInWorkers(send_audio=False, first_frame_delay=1.5)
    store = make_store(slow_join)
    record, _ = await store.create_session(request(idle_timeout_seconds=1))
    await eventually(lambda: status_of(record), lambda s: s == "running", timeout=10)
    await asyncio.sleep(0.5)
    assert record.status == "running"
    await eventually(lambda: status_of(record), lambda s: s == "ended", timeout=10)
    assert record.metadata[END_REASON_METADATA_KEY] == END_REASON_IDLE_TIMEOUT


async def test_usage_counts_running_seconds_rounded_up_and_frames(store: Store) -> None:
    record, _ = await store.create_session(request(quality="lite"))
    await eventually(lambda: status_of(record), lambda s: s == "running")
    await eventually(lambda: record.frames, lambda n: n >= 5)
    await store.end_session(record.id)
    usage = record.view()["usage"]
    assert usage["billable_seconds"] == 1
    assert usage["frames"] == record.frames
    assert record.first_frame_at is not None and record.running_until is not None
    summary = store.usage(record.first_frame_at, record.running_until)
    assert summary["sessions"] == 1 and summary["billable_seconds"] == 1
    assert summary["by_quality"]["lite"] == 1 and summary["by_quality"]["standard"] == 0


async def test_shutdown_ends_every_session_and_closes_every_worker(make_store: MakeStore) -> None:
    workers = StandInWorkers(close_delay=0.05)
    store = make_store(workers)
    records = [(await store.create_session(request()))[0] for _ in range(20)]
    await eventually(lambda: [r.status for r in records], lambda s: set(s) == {"running"})
    await store.aclose()
    assert {r.status for r in records} == {"ended"}
    assert {r.metadata[END_REASON_METADATA_KEY] for r in records} == {END_REASON_SHUTDOWN}
    assert all(w.closed for w in workers.started)
    with pytest.raises(ApiError) as refused:
        await store.create_session(request())
    assert (refused.value.status, refused.value.code) == (503, "shutting_down")


async def test_a_thousand_creates_and_ends_are_cheap(make_store: MakeStore) -> None:
    workers = StandInWorkers()
    store = make_store(workers)
    started = time.perf_counter()
    records = [(await store.create_session(request()))[0] for _ in range(1000)]
    await asyncio.gather(*(store.end_session(r.id) for r in records))
    elapsed = time.perf_counter() - started
    assert {r.status for r in records} == {"ended"}
    assert store.active_count == 0
    # Generous: the point is "not quadratic", which would take minutes here.
    assert elapsed < 30, elapsed


async def test_manual_workers_move_sessions_where_a_test_says(make_store: MakeStore) -> None:
    workers = ManualWorkers()
    store = make_store(workers)
    record, _ = await store.create_session(request())
    worker = workers.worker(record.id)
    assert status_of(record) == "queued"
    worker.connect()
    assert status_of(record) == "starting"
    worker.publish(frames=5)
    assert status_of(record) == "running" and record.frames == 5
    worker.fail("livekit_auth_failed", "token rejected")
    assert status_of(record) == "failed"
    assert record.failure == {"code": "livekit_auth_failed", "message": "token rejected"}
    await eventually(lambda: worker.closed, bool)
    with pytest.raises(KeyError):
        workers.worker("sess_unknown")


async def test_autostarted_manual_workers_reach_running_and_close_on_end(
    make_store: MakeStore,
) -> None:
    workers = ManualWorkers(autostart=True)
    store = make_store(workers)
    record, _ = await store.create_session(request())
    await eventually(lambda: record.status, "running".__eq__)
    ended = await store.end_session(record.id, reason=END_REASON_IDLE_TIMEOUT)
    assert status_of(ended) == "ended" and workers.worker(record.id).closed
    assert ended.metadata[END_REASON_METADATA_KEY] == END_REASON_IDLE_TIMEOUT


async def test_idle_timeout_counts_from_the_last_audio(make_store: MakeStore) -> None:
    """Audio early in a window moves the end to a full timeout after it, not later."""
    workers = ManualWorkers()
    store = make_store(workers)
    record, _ = await store.create_session(request(idle_timeout_seconds=2))
    worker = workers.worker(record.id)
    worker.connect()
    worker.publish()
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.2)
    worker.speak()
    spoke = loop.time()
    await eventually(lambda: status_of(record), lambda s: s == "ended", timeout=10)
    quiet_for = loop.time() - spoke
    # The check at 2 s finds 1.8 s of quiet and looks again 0.2 s later; waiting a
    # whole timeout instead would end it at 3.8 s.
    assert 1.95 <= quiet_for <= 3.0, quiet_for
    assert record.metadata[END_REASON_METADATA_KEY] == END_REASON_IDLE_TIMEOUT


async def test_usage_counts_only_the_running_time_inside_the_window(
    make_store: MakeStore,
) -> None:
    workers = ManualWorkers()
    store = make_store(workers)
    record, _ = await store.create_session(request())
    workers.worker(record.id).publish(frames=1)
    assert record.frames == 1  # a single frame counts
    await asyncio.sleep(2.2)
    await store.end_session(record.id)
    assert record.first_frame_at is not None and record.running_until is not None
    start, end = record.first_frame_at, record.running_until
    assert store.usage(start, end)["billable_seconds"] == 3
    late_start = store.usage(start + timedelta(seconds=1.5), end)
    assert (late_start["sessions"], late_start["billable_seconds"]) == (1, 1)
    early_end = store.usage(start - timedelta(seconds=10), start + timedelta(seconds=1))
    assert early_end["billable_seconds"] == 1
    before = store.usage(start - timedelta(seconds=10), start)
    assert (before["sessions"], before["billable_seconds"]) == (0, 0)


async def test_status_only_moves_forward_and_keeps_its_first_timestamps(
    make_store: MakeStore,
) -> None:
    workers = ManualWorkers()
    store = make_store(workers)
    record, _ = await store.create_session(request())
    worker = workers.worker(record.id)
    worker.connect()
    started_at = record.started_at
    await asyncio.sleep(0.05)
    worker.publish()
    assert record.started_at == started_at  # connecting set it; the first frame keeps it
    assert started_at is not None and record.first_frame_at is not None
    assert started_at < record.first_frame_at
    worker.connect()  # a late report changes nothing
    assert status_of(record) == "running" and record.started_at == started_at


async def test_a_view_is_a_copy_of_the_state(make_store: MakeStore) -> None:
    workers = ManualWorkers()
    store = make_store(workers)
    record, _ = await store.create_session(request(metadata={"k": "v"}))
    workers.worker(record.id).fail("worker_lost", "gone")
    view = record.view()
    view["transport"]["room_name"] = "changed"
    view["metadata"]["k"] = "changed"
    assert view["failure"] is not None
    view["failure"]["code"] = "changed"
    again = record.view()
    assert again["transport"]["room_name"] == "room-1"
    assert again["metadata"] == {"k": "v"}
    assert again["failure"] == {"code": "worker_lost", "message": "gone"}


async def test_sessions_from_one_request_do_not_share_metadata(make_store: MakeStore) -> None:
    store = make_store(ManualWorkers(autostart=True))
    create = request(metadata={"k": "v"})
    first, _ = await store.create_session(create)
    second, _ = await store.create_session(create)
    await store.end_session(first.id)
    assert END_REASON_METADATA_KEY in first.metadata
    assert second.metadata == {"k": "v"} and create.metadata == {"k": "v"}

"""The session monitor: failing before the join is reported, losing the avatar is handled.

No LiveKit server runs here: the room is an unconnected `rtc.Room` in a fake job,
so "joined" comes from the session resource (`first_frame_at`), and the avatar
leaving the room is a `participant_disconnected` event emitted by the test. The
API is the emulator, whose `ManualWorkers` report what the test says (joined,
failed), and whose store ends sessions as its timers would.
Audio reaching a viewer is for the real-room tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.room_io import _ParticipantAudioOutput
from livekit.rtc._proto import participant_pb2

from livekit.plugins.protoface import (
    AvatarLostEvent,
    AvatarSession,
    AvatarSessionFailedError,
    ProtofaceException,
)
from livekit.plugins.protoface.output import AvatarAudioOutput
from protoface_emulator import Emulator
from protoface_emulator.lifecycle import ManualWorkers

from .helpers import (
    API_KEY,
    END,
    FAST,
    GET_SESSION,
    assert_ended_by_the_client,
    envelope,
    leftover_tasks,
)

pytestmark = pytest.mark.usefixtures("livekit_env")


async def started(emu: Emulator, room: rtc.Room, **kwargs: Any) -> AvatarSession:
    kwargs.setdefault("conn_options", FAST)
    kwargs.setdefault("audio_fallback", False)
    kwargs.setdefault("recovery", False)  # these tests pin the monitor; recovery has its own
    avatar = AvatarSession(api_key=API_KEY, api_url=emu.url, **kwargs)
    await avatar.start(AgentSession(), room=room)
    return avatar


def first_frame(workers: ManualWorkers, session_id: str) -> None:
    """The avatar's worker joins and publishes: the session becomes `running`."""
    worker = workers.worker(session_id)
    worker.connect()
    worker.publish()


def reported_canceled(emu: Emulator, session_id: str) -> None:
    """From now on the API reports the session `canceled`, a status the emulator's
    own lifecycle never reaches (Protoface cancels a session on its side)."""
    emu.faults.reply(
        GET_SESSION,
        200,
        json=lambda _: {**emu.store.get_session(session_id).view(), "status": "canceled"},
        count=100_000,
    )


async def end_over(emu: Emulator, workers: ManualWorkers, session_id: str, status: str) -> None:
    """The session is over by Protoface's doing: `ended` (by someone else) or `canceled`."""
    if status == "canceled":
        reported_canceled(emu, session_id)
    else:
        await emu.store.end_session(session_id)


def lost_events(avatar: AvatarSession) -> asyncio.Queue[AvatarLostEvent]:
    queue: asyncio.Queue[AvatarLostEvent] = asyncio.Queue()
    avatar.on("avatar_lost", queue.put_nowait)
    return queue


def avatar_left(room: rtc.Room, identity: str = "protoface-avatar-agent") -> None:
    """Stand-in for LiveKit telling the room that the avatar participant left."""
    info = participant_pb2.ParticipantInfo(identity=identity)
    room.emit(
        "participant_disconnected",
        rtc.RemoteParticipant(participant_pb2.OwnedParticipant(info=info)),
    )


async def test_failure_before_join_makes_wait_for_join_raise_with_the_code(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room, caplog: pytest.LogCaptureFixture
) -> None:
    avatar = await started(emu, job_room)
    assert avatar.session_id is not None
    workers.worker(avatar.session_id).fail("livekit_auth_failed", "the server refused the token")

    with pytest.raises(AvatarSessionFailedError) as info:
        # The bound is the behaviour: reported within seconds, not at the 30 s timeout.
        await asyncio.wait_for(avatar.wait_for_join(timeout=30), timeout=5)

    error = info.value
    assert isinstance(error, ProtofaceException)
    assert error.failure_code == "livekit_auth_failed"
    assert error.session_id == avatar.session_id
    assert error.status == "failed"
    assert "livekit_auth_failed" in str(error)
    assert any(
        r.levelno == logging.ERROR
        and avatar.session_id in r.getMessage()
        and "livekit_auth_failed" in r.getMessage()
        for r in caplog.records
    )
    await avatar.aclose()


@pytest.mark.parametrize("status", ["ended", "canceled"])
async def test_session_over_before_join_also_raises(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room, status: str
) -> None:
    avatar = await started(emu, job_room)
    assert avatar.session_id is not None
    await end_over(emu, workers, avatar.session_id, status)

    with pytest.raises(AvatarSessionFailedError) as info:
        await asyncio.wait_for(avatar.wait_for_join(), timeout=5)

    assert info.value.status == status
    assert info.value.failure_code is None
    await avatar.aclose()


async def test_wait_for_join_returns_once_the_avatar_publishes(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    avatar = await started(emu, job_room)
    assert avatar.session_id is not None
    first_frame(workers, avatar.session_id)

    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)
    await avatar.aclose()


async def test_wait_for_join_still_times_out(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    avatar = await started(emu, job_room)
    with pytest.raises(asyncio.TimeoutError):
        await avatar.wait_for_join(timeout=0.3)
    await avatar.aclose()


async def test_aclose_releases_a_pending_wait_for_join(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    avatar = await started(emu, job_room)
    waiter = asyncio.create_task(avatar.wait_for_join(timeout=None))
    await asyncio.sleep(0)

    await avatar.aclose()

    with pytest.raises(ProtofaceException, match="closed"):
        await asyncio.wait_for(waiter, timeout=5)


Lose = Callable[[Emulator, ManualWorkers, str], Awaitable[None]]


async def _max_duration(emu: Emulator, workers: ManualWorkers, session_id: str) -> None:
    await emu.store.end_session(session_id, reason="max_duration_reached")


async def _idle(emu: Emulator, workers: ManualWorkers, session_id: str) -> None:
    await emu.store.end_session(session_id, reason="idle_timeout")


async def _lost(emu: Emulator, workers: ManualWorkers, session_id: str) -> None:
    workers.worker(session_id).fail("worker_lost", "gone")


async def _canceled(emu: Emulator, workers: ManualWorkers, session_id: str) -> None:
    reported_canceled(emu, session_id)


@pytest.mark.parametrize(
    ("lose", "reason", "status"),
    [
        (_max_duration, "max_duration_reached", "ended"),
        (_idle, "idle_timeout", "ended"),
        (_lost, "worker_lost", "failed"),
        (_canceled, "canceled", "canceled"),
    ],
    ids=["max-duration", "idle-timeout", "failed", "no-reason"],
)
async def test_avatar_lost_after_join_is_emitted_with_the_reason(
    emu: Emulator,
    workers: ManualWorkers,
    job_room: rtc.Room,
    caplog: pytest.LogCaptureFixture,
    lose: Lose,
    reason: str,
    status: str,
) -> None:
    avatar = await started(emu, job_room, poll_interval=0.05)
    events = lost_events(avatar)
    session_id = avatar.session_id
    assert session_id is not None
    first_frame(workers, session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)

    await lose(emu, workers, session_id)
    event = await asyncio.wait_for(events.get(), timeout=5)

    assert event == AvatarLostEvent(session_id=session_id, reason=reason, status=status)
    assert any(
        r.levelno == logging.WARNING and reason in r.getMessage() and session_id in r.getMessage()
        for r in caplog.records
    )
    await avatar.aclose()
    assert events.empty()  # once only


async def test_avatar_leaving_the_room_is_checked_at_once(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    """With a 60 s poll interval only the participant event can explain a prompt report."""
    avatar = await started(emu, job_room, poll_interval=60)
    events = lost_events(avatar)
    session_id = avatar.session_id
    assert session_id is not None
    first_frame(workers, session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)

    workers.worker(session_id).fail("worker_lost", "left")
    avatar_left(job_room)
    event = await asyncio.wait_for(events.get(), timeout=5)

    assert event.reason == "worker_lost"
    await avatar.aclose()


async def test_avatar_leaving_while_the_session_runs_is_a_loss(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    avatar = await started(emu, job_room, poll_interval=60)
    events = lost_events(avatar)
    session_id = avatar.session_id
    assert session_id is not None
    first_frame(workers, session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)

    avatar_left(job_room)
    event = await asyncio.wait_for(events.get(), timeout=10)

    assert event == AvatarLostEvent(
        session_id=session_id, reason="avatar_left_room", status="running"
    )
    await avatar.aclose()


async def test_other_participants_leaving_is_ignored(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    avatar = await started(emu, job_room, poll_interval=0.05)
    events = lost_events(avatar)
    assert avatar.session_id is not None
    first_frame(workers, avatar.session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)

    avatar_left(job_room, identity="some-user")
    # Past the grace the monitor gives an avatar that left (2 s), with polls going on.
    await asyncio.sleep(2.5)
    polls = len(emu.requests.matching(GET_SESSION))
    await emu.requests.wait_for(GET_SESSION, count=polls + 5, timeout=10)

    assert events.empty()
    await avatar.aclose()


async def test_transient_poll_errors_do_not_stop_the_monitor(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    avatar = await started(emu, job_room)
    assert avatar.session_id is not None
    errors = emu.faults.reply(
        GET_SESSION, 503, json=envelope("service_unavailable", "down"), count=6
    )
    workers.worker(avatar.session_id).fail("livekit_unreachable", "nothing answered")

    with pytest.raises(AvatarSessionFailedError) as info:
        await asyncio.wait_for(avatar.wait_for_join(), timeout=10)
    assert info.value.failure_code == "livekit_unreachable"
    assert errors.fired == 6  # the failure was read after six failed polls
    await avatar.aclose()


async def test_audio_fallback_off_leaves_the_audio_output_alone(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    session: AgentSession[None] = AgentSession()
    avatar = AvatarSession(
        api_key=API_KEY,
        api_url=emu.url,
        conn_options=FAST,
        poll_interval=0.05,
        audio_fallback=False,
        recovery=False,
    )
    await avatar.start(session, room=job_room)
    events = lost_events(avatar)
    assert avatar.session_id is not None
    output = session.output.audio
    first_frame(workers, avatar.session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)
    await emu.store.end_session(avatar.session_id)
    await asyncio.wait_for(events.get(), timeout=5)

    assert session.output.audio is output
    assert isinstance(output, AvatarAudioOutput)
    assert not isinstance(output.route, _ParticipantAudioOutput)  # nothing published
    await avatar.aclose()


async def test_audio_fallback_is_attempted_and_its_failure_does_not_hide_the_event(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room, caplog: pytest.LogCaptureFixture
) -> None:
    """Stand-in: the room is not connected, so publishing the fallback track fails.

    That the viewer then hears the agent is proven by the real-room tests.
    """
    session: AgentSession[None] = AgentSession()
    avatar = AvatarSession(
        api_key=API_KEY, api_url=emu.url, conn_options=FAST, poll_interval=0.05, recovery=False
    )
    await avatar.start(session, room=job_room)
    events = lost_events(avatar)
    assert avatar.session_id is not None
    first_frame(workers, avatar.session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)
    await emu.store.end_session(avatar.session_id)

    await asyncio.wait_for(events.get(), timeout=10)

    assert any("could not publish the agent's audio" in r.getMessage() for r in caplog.records)
    await avatar.aclose()


async def test_monitor_stops_after_the_loss_and_aclose_leaves_no_task(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    before = set(asyncio.all_tasks())
    avatar = await started(emu, job_room, poll_interval=0.05)
    events = lost_events(avatar)
    assert avatar.session_id is not None
    first_frame(workers, avatar.session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)
    await emu.store.end_session(avatar.session_id)
    await asyncio.wait_for(events.get(), timeout=5)

    polls = len(emu.requests.matching(GET_SESSION))
    await asyncio.sleep(0.3)
    assert len(emu.requests.matching(GET_SESSION)) == polls

    await avatar.aclose()
    assert leftover_tasks(before) == []


async def test_aclose_while_monitoring_leaves_no_task(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    before = set(asyncio.all_tasks())
    avatar = await started(emu, job_room, poll_interval=0.05)
    await emu.requests.wait_for(GET_SESSION, timeout=5)

    await avatar.aclose()

    assert leftover_tasks(before) == []
    polls = len(emu.requests.matching(GET_SESSION))
    await asyncio.sleep(0.2)
    assert len(emu.requests.matching(GET_SESSION)) == polls


async def test_a_session_reported_with_its_first_frame_counts_as_joined(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """`first_frame_at` alone (the status still `starting`) means the avatar publishes."""
    avatar = await started(emu, job_room)
    session_id = avatar.session_id
    assert session_id is not None
    emu.faults.reply(
        GET_SESSION,
        200,
        json=lambda _: {
            **emu.store.get_session(session_id).view(),
            "status": "starting",
            "first_frame_at": "2026-01-01T00:00:01.000Z",
        },
        count=100_000,
    )

    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)
    await avatar.aclose()


async def test_a_session_that_vanished_is_lost_as_not_found(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    avatar = await started(emu, job_room, poll_interval=0.05)
    events = lost_events(avatar)
    session_id = avatar.session_id
    assert session_id is not None
    first_frame(workers, session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)

    emu.faults.reply(
        GET_SESSION, 404, json=envelope("not_found", "session_not_found"), count=100_000
    )
    event = await asyncio.wait_for(events.get(), timeout=5)

    assert event.reason == "session_not_found"
    await avatar.aclose()


async def test_the_reason_recorded_just_after_the_avatar_left_is_the_one_reported(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    """The room says the avatar left before Protoface records why: the monitor gives
    the session a moment instead of reporting a bare `avatar_left_room`."""
    avatar = await started(emu, job_room, poll_interval=60)
    events = lost_events(avatar)
    session_id = avatar.session_id
    assert session_id is not None
    first_frame(workers, session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)

    avatar_left(job_room)
    polls = len(emu.requests.matching(GET_SESSION))
    # Read at once (still running), then the worker's report lands.
    await emu.requests.wait_for(GET_SESSION, count=polls + 1, answered=True, timeout=5)
    workers.worker(session_id).fail("worker_lost", "left the room")
    event = await asyncio.wait_for(events.get(), timeout=10)

    assert event.reason == "worker_lost"
    await avatar.aclose()


async def test_an_end_that_failed_when_the_avatar_was_lost_is_retried_at_close(
    emu: Emulator, workers: ManualWorkers, job_room: rtc.Room
) -> None:
    """The avatar left a session still running: it is ended at once; that end fails
    (every attempt), so aclose() tries again, and the billed session does end."""
    avatar = await started(emu, job_room, poll_interval=60)
    events = lost_events(avatar)
    session_id = avatar.session_id
    assert session_id is not None
    first_frame(workers, session_id)
    await asyncio.wait_for(avatar.wait_for_join(), timeout=5)
    attempts = FAST.max_retry + 1
    refused = emu.faults.reply(END, 500, json=envelope("internal", "boom"), count=attempts)

    avatar_left(job_room)
    await asyncio.wait_for(events.get(), timeout=10)
    await emu.requests.wait_for(END, count=attempts, answered=True, timeout=10)
    assert refused.fired == attempts
    assert emu.store.get_session(session_id).status == "running"

    await avatar.aclose()

    assert len(emu.requests.matching(END)) == attempts + 1
    assert_ended_by_the_client(emu, session_id)

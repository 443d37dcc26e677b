"""AvatarSession.start(): what it sends, the worker token, and cleanup when it fails."""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from typing import Any

import jwt
import pytest
from livekit import api, rtc
from livekit.agents import AgentSession, APIConnectionError, APIConnectOptions, APIStatusError
from livekit.agents.voice import CloseEvent, CloseReason
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.plugins import protoface

from livekit.plugins.protoface import AvatarSession, ProtofaceException
from livekit.plugins.protoface.output import AvatarAudioOutput
from protoface_emulator import Emulator

from .helpers import (
    AGENT_IDENTITY,
    API_KEY,
    CREATE,
    END,
    FAST,
    LIVEKIT_API_KEY,
    LIVEKIT_API_SECRET,
    LIVEKIT_URL,
    ROOM_NAME,
    assert_ended_by_the_client,
    body,
    ended_ids,
    envelope,
    eventually,
    leftover_tasks,
    session_ids,
)

pytestmark = pytest.mark.usefixtures("livekit_env")


def make_avatar(emu: Emulator, **kwargs: Any) -> AvatarSession:
    kwargs.setdefault("conn_options", FAST)
    return AvatarSession(api_key=API_KEY, api_url=emu.url, **kwargs)


def sent_token(emu: Emulator) -> str:
    (create,) = emu.requests.matching(CREATE)[:1]
    token = body(create)["transport"]["worker_token"]
    assert isinstance(token, str)
    return token


async def stored(emu: Emulator) -> None:
    """Wait until the emulator holds a session (the create was accepted)."""
    await eventually(lambda: len(session_ids(emu)) == 1)


async def test_start_creates_the_session_and_routes_audio_to_the_avatar(
    emu: Emulator, job_room: rtc.Room
) -> None:
    session: AgentSession[None] = AgentSession()
    avatar = make_avatar(emu, max_duration_seconds=300)

    await avatar.start(session, room=job_room)
    try:
        (create,) = emu.requests.matching(CREATE)
        assert body(create)["avatar_id"] == protoface.DEFAULT_STOCK_AVATAR_ID
        assert body(create)["max_duration_seconds"] == 300
        transport = body(create)["transport"]
        assert {k: v for k, v in transport.items() if k != "worker_token"} == {
            "type": "livekit",
            "url": LIVEKIT_URL,
            "room_name": ROOM_NAME,
            "worker_identity": "protoface-avatar-agent",
            "audio_source": "data_stream",
        }
        assert uuid.UUID(create.headers["Idempotency-Key"]).version == 4
        assert session_ids(emu) == [avatar.session_id]
        audio = session.output.audio
        assert isinstance(audio, AvatarAudioOutput)
        assert isinstance(audio.route, DataStreamAudioOutput)
        assert avatar.provider == "protoface"
        assert avatar.avatar_identity == "protoface-avatar-agent"
    finally:
        await avatar.aclose()


async def test_options_are_sent(emu: Emulator, job_room: rtc.Room) -> None:
    avatar = make_avatar(
        emu,
        avatar_id="av_stock_002",
        quality="lite",
        idle_timeout_seconds=45,
        metadata={"customer": "acme", "tier": 2},
        avatar_participant_identity="face-1",
        avatar_participant_name="Face One",
    )
    await avatar.start(AgentSession(), room=job_room)
    await avatar.aclose()

    (create,) = emu.requests.matching(CREATE)
    assert body(create)["avatar_id"] == "av_stock_002"
    assert body(create)["quality"] == "lite"
    assert body(create)["idle_timeout_seconds"] == 45
    assert body(create)["metadata"] == {"customer": "acme", "tier": 2}
    assert body(create)["transport"]["worker_identity"] == "face-1"
    assert "max_duration_seconds" not in body(create)


async def test_worker_token_has_only_the_needed_grants(emu: Emulator, job_room: rtc.Room) -> None:
    avatar = make_avatar(
        emu, avatar_participant_identity="face-1", avatar_participant_name="Face One"
    )
    await avatar.start(AgentSession(), room=job_room)
    await avatar.aclose()

    token = sent_token(emu)
    # The signature must verify with the customer's secret: LiveKit will check it.
    claims = api.TokenVerifier(LIVEKIT_API_KEY, LIVEKIT_API_SECRET).verify(token)
    assert claims.identity == "face-1"
    assert claims.name == "Face One"
    assert claims.kind == "agent"
    assert claims.attributes == {"lk.publish_on_behalf": AGENT_IDENTITY}

    raw = jwt.decode(token, LIVEKIT_API_SECRET, algorithms=["HS256"])
    assert raw["video"] == {
        "roomJoin": True,
        "room": ROOM_NAME,
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }
    for forbidden in ("sip", "inference", "observability", "agent", "roomConfig"):
        assert forbidden not in raw


async def test_worker_token_lives_ten_minutes_by_default(emu: Emulator, job_room: rtc.Room) -> None:
    avatar = make_avatar(emu)
    await avatar.start(AgentSession(), room=job_room)
    await avatar.aclose()

    raw = jwt.decode(sent_token(emu), LIVEKIT_API_SECRET, algorithms=["HS256"])
    assert raw["exp"] - raw["nbf"] <= 600
    assert raw["exp"] - raw["nbf"] >= 590
    assert raw["exp"] <= time.time() + 600 + 5


async def test_worker_token_ttl_option(emu: Emulator, job_room: rtc.Room) -> None:
    avatar = make_avatar(emu, worker_token_ttl=datetime.timedelta(minutes=2))
    await avatar.start(AgentSession(), room=job_room)
    await avatar.aclose()

    raw = jwt.decode(sent_token(emu), LIVEKIT_API_SECRET, algorithms=["HS256"])
    assert 110 <= raw["exp"] - raw["nbf"] <= 120


async def test_second_start_raises_runtime_error(emu: Emulator, job_room: rtc.Room) -> None:
    avatar = make_avatar(emu)
    session: AgentSession[None] = AgentSession()
    await avatar.start(session, room=job_room)
    try:
        with pytest.raises(RuntimeError, match="twice"):
            await avatar.start(session, room=job_room)
        assert len(emu.requests.matching(CREATE)) == 1
    finally:
        await avatar.aclose()


async def test_aclose_ends_the_hosted_session_once(emu: Emulator, job_room: rtc.Room) -> None:
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())
    await avatar.start(AgentSession(), room=job_room)
    session_id = avatar.session_id
    assert session_id is not None

    await avatar.aclose()
    await avatar.aclose()

    assert ended_ids(emu) == [session_id]
    assert_ended_by_the_client(emu, session_id)
    assert avatar.session_id is None
    assert leftover_tasks(before) == []


async def test_aclose_is_safe_when_start_never_ran(emu: Emulator) -> None:
    avatar = make_avatar(emu)
    await avatar.aclose()
    await avatar.aclose()
    assert emu.requests.all() == []


async def test_aclose_logs_but_never_raises_when_end_fails(
    emu: Emulator, job_room: rtc.Room, caplog: pytest.LogCaptureFixture
) -> None:
    avatar = make_avatar(emu, conn_options=APIConnectOptions(max_retry=0, timeout=2))
    await avatar.start(AgentSession(), room=job_room)
    emu.faults.reply(END, 500, json=envelope("internal", "boom"))

    await avatar.aclose()

    assert any(
        r.levelname == "WARNING" and "failed to end protoface session" in r.getMessage()
        for r in caplog.records
    )


async def test_agent_identity_comes_from_the_job(emu: Emulator, job_room: rtc.Room) -> None:
    avatar = make_avatar(emu, avatar_participant_identity=AGENT_IDENTITY)
    with pytest.raises(ProtofaceException, match="agent's own identity"):
        await avatar.start(AgentSession(), room=job_room)
    assert emu.requests.all() == []


async def test_start_outside_a_job_with_an_unconnected_room_is_refused(
    emu: Emulator,
) -> None:
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())
    with pytest.raises(ProtofaceException):
        await avatar.start(AgentSession(), room=rtc.Room())
    assert emu.requests.all() == []
    assert leftover_tasks(before) == []


# -- no orphaned hosted session ---------------------------------------------


async def test_response_without_id_ends_the_created_session(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """The first answer lacks `id` (the session was created); a replay with the same
    key reveals it; it is ended."""
    emu.faults.reply(CREATE, 201, json={"object": "session"}, handled=True)
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    with pytest.raises(ProtofaceException, match="missing session id"):
        await avatar.start(AgentSession(), room=job_room)

    creates = emu.requests.matching(CREATE)
    assert len(creates) == 2
    assert creates[0].headers["Idempotency-Key"] == creates[1].headers["Idempotency-Key"]
    (created,) = session_ids(emu)
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)
    assert avatar.session_id is None
    assert leftover_tasks(before) == []


async def test_2xx_html_answer_ends_the_created_session(emu: Emulator, job_room: rtc.Room) -> None:
    emu.faults.reply(
        CREATE, 201, body="<html>ok</html>", headers={"Content-Type": "text/html"}, handled=True
    )
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    with pytest.raises(APIStatusError, match="HTML page"):
        await avatar.start(AgentSession(), room=job_room)

    (created,) = session_ids(emu)
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)
    assert leftover_tasks(before) == []


async def test_audio_swap_failure_ends_the_created_session(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """Stand-in: nothing real makes `replace_audio_tail` fail, so it is made to raise."""
    session: AgentSession[None] = AgentSession()

    def broken_swap(sink: Any) -> None:
        raise RuntimeError("audio chain is closed")

    session.output.replace_audio_tail = broken_swap  # type: ignore[method-assign]
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    with pytest.raises(RuntimeError, match="audio chain is closed"):
        await avatar.start(session, room=job_room)

    (created,) = session_ids(emu)
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)
    assert avatar.session_id is None
    assert leftover_tasks(before) == []


async def test_cancellation_mid_start_ends_the_created_session(
    emu: Emulator, job_room: rtc.Room
) -> None:
    # Accepted and stored, but the answer never comes in time; the recovery replay
    # (the next create) is answered at once.
    emu.faults.add(CREATE, "late", delay=30)
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    start = asyncio.create_task(avatar.start(AgentSession(), room=job_room))
    await stored(emu)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start

    (created,) = session_ids(emu)
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)
    assert avatar.session_id is None
    assert leftover_tasks(before) == []


async def test_refused_create_leaves_nothing_running(emu: Emulator, job_room: rtc.Room) -> None:
    emu.faults.reply(CREATE, 402, json=envelope("quota_exceeded", "insufficient_credits"))
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    with pytest.raises(APIStatusError) as info:
        await avatar.start(AgentSession(), room=job_room)

    assert info.value.status_code == 402
    assert len(emu.requests.matching(CREATE)) == 1  # no replay: nothing created
    assert ended_ids(emu) == []
    assert session_ids(emu) == []
    assert leftover_tasks(before) == []
    assert avatar._wait_avatar_join_task is None


async def test_failed_start_can_be_followed_by_a_good_one(
    emu: Emulator, job_room: rtc.Room
) -> None:
    emu.faults.reply(CREATE, 400, json=envelope("x", "bad"))
    avatar = make_avatar(emu)
    session: AgentSession[None] = AgentSession()
    with pytest.raises(APIStatusError):
        await avatar.start(session, room=job_room)

    await avatar.start(session, room=job_room)
    session_id = avatar.session_id
    assert session_id is not None
    await avatar.aclose()
    assert ended_ids(emu) == session_ids(emu) == [session_id]


async def test_aclose_during_start_ends_the_session_and_start_raises(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """A job shutting down while start() waits on the create: nothing may outlive aclose()."""
    emu.faults.add(CREATE, "late", delay=1.0)  # stored at once, answered late
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    start = asyncio.create_task(avatar.start(AgentSession(), room=job_room))
    await stored(emu)
    await avatar.aclose()

    assert start.done()
    with pytest.raises(ProtofaceException, match="aclose"):
        await start
    (created,) = session_ids(emu)
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)
    assert avatar.session_id is None
    assert leftover_tasks(before) == []

    await avatar.aclose()
    assert len(ended_ids(emu)) == 1


async def test_cancel_requested_during_the_audio_swap_ends_the_session(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """The swap is synchronous: a cancel requested there used to land after start() returned."""
    session: AgentSession[None] = AgentSession()
    swap = session.output.replace_audio_tail
    start: asyncio.Task[None] | None = None

    def swap_then_cancel(sink: Any) -> None:
        swap(sink)
        assert start is not None
        start.cancel()

    session.output.replace_audio_tail = swap_then_cancel  # type: ignore[method-assign]
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    start = asyncio.create_task(avatar.start(session, room=job_room))
    with pytest.raises(asyncio.CancelledError):
        await start

    (created,) = session_ids(emu)
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)
    assert avatar.session_id is None
    assert leftover_tasks(before) == []
    await avatar.aclose()
    assert len(ended_ids(emu)) == 1


async def test_concurrent_aclose_calls_end_the_session_once(
    emu: Emulator, job_room: rtc.Room
) -> None:
    avatar = make_avatar(emu)
    await avatar.start(AgentSession(), room=job_room)

    await asyncio.gather(avatar.aclose(), avatar.aclose(), avatar.aclose())

    assert len(ended_ids(emu)) == 1


async def test_cancel_before_the_create_is_sent_starts_nothing(
    emu: Emulator, job_room: rtc.Room
) -> None:
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    start = asyncio.create_task(avatar.start(AgentSession(), room=job_room))
    await asyncio.sleep(0)  # start() is now waiting on its inner task, which has not run
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start

    assert emu.requests.all() == []
    assert leftover_tasks(before) == []
    await avatar.start(AgentSession(), room=job_room)  # and the object is still usable
    await avatar.aclose()
    assert len(ended_ids(emu)) == 1


async def test_cancel_during_the_retry_wait_ends_whatever_was_created(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """The server created the session and then answered 503 (a gateway timing out
    behind it): the client, cancelled while it waits to retry, must replay the
    create under the same key to learn the id, and end that session."""
    emu.faults.reply(
        CREATE,
        503,
        json=envelope("service_unavailable", "busy"),
        headers={"Retry-After": "5"},
        handled=True,
    )
    avatar = make_avatar(emu)
    before = set(asyncio.all_tasks())

    start = asyncio.create_task(avatar.start(AgentSession(), room=job_room))
    (first,) = await emu.requests.wait_for(CREATE, answered=True, timeout=5)
    assert first.status == 503
    await asyncio.sleep(0.3)  # the client is now in its 5 s Retry-After wait
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start

    creates = emu.requests.matching(CREATE)
    assert len(creates) == 2  # the 503, then the replay that learned the id
    assert len({c.headers["Idempotency-Key"] for c in creates}) == 1
    (created,) = session_ids(emu)
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)
    assert avatar.session_id is None
    assert leftover_tasks(before) == []


async def test_an_outage_outlasting_the_first_replay_still_ends_the_session(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """The create is stored but every answer is a 503, through the create's own retries
    and the replay `start()` waits for: the replay goes on in the background, and the
    session it learns of is ended before `aclose()` returns."""
    attempts = FAST.max_retry + 1
    outage = 2 * attempts + 2  # the create, the first replay, two patient tries
    emu.faults.add(CREATE, "error", status=503, count=outage, handled=True)
    avatar = make_avatar(emu)

    with pytest.raises(APIConnectionError):
        await avatar.start(AgentSession(), room=job_room)
    (created,) = session_ids(emu)
    await avatar.aclose()

    creates = emu.requests.matching(CREATE)
    assert len(creates) == outage + 1  # the last one answered, with the id
    assert len({c.headers["Idempotency-Key"] for c in creates}) == 1
    assert ended_ids(emu) == [created]
    assert_ended_by_the_client(emu, created)


async def test_a_second_cancel_during_the_recovery_replay_still_ends_the_session(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """A job cancelling twice (a shutdown that times out): the replay that learns the
    session's id must outlive the second cancel, or the billed session runs on."""
    emu.faults.reply(
        CREATE,
        503,
        json=envelope("service_unavailable", "busy"),
        headers={"Retry-After": "5"},
        handled=True,
    )
    emu.faults.add(CREATE, "late", delay=0.5)  # the replay, answered late
    avatar = make_avatar(emu)

    start = asyncio.create_task(avatar.start(AgentSession(), room=job_room))
    await emu.requests.wait_for(CREATE, answered=True, timeout=5)
    await asyncio.sleep(0.2)  # in the Retry-After wait
    start.cancel()
    await emu.requests.wait_for(CREATE, count=2, timeout=5)  # the replay is in flight
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start

    (created,) = session_ids(emu)
    await eventually(lambda: ended_ids(emu) == [created])
    assert_ended_by_the_client(emu, created)
    await avatar.aclose()


async def test_the_agent_session_closing_ends_the_hosted_session(
    emu: Emulator, job_room: rtc.Room
) -> None:
    """A job that hands the caller over closes its AgentSession, not the job.

    Stand-in: the AgentSession never ran (no model here), so its `close` event is
    emitted by the test, as `AgentSession.aclose()` would.
    """
    session: AgentSession[None] = AgentSession()
    avatar = make_avatar(emu)
    await avatar.start(session, room=job_room)
    session_id = avatar.session_id
    assert session_id is not None

    session.emit("close", CloseEvent(reason=CloseReason.USER_INITIATED))

    await eventually(lambda: ended_ids(emu) == [session_id])
    assert_ended_by_the_client(emu, session_id)
    await avatar.aclose()
    assert ended_ids(emu) == [session_id]

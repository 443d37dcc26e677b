"""The official `protoface-sdk` client against the emulator, and every success
response validated under the SDK's generated models (which forbid unknown fields)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest
from emulator_helpers import PNG, call, eventually, session_body, with_transport
from protoface_sdk import (
    InvalidRequestError,
    NotFoundError,
    PermissionError,
    ProtofaceClient,
    SessionStatus,
)
from protoface_sdk._generated import (
    Avatar,
    AvatarList,
    PlanView,
    Session,
    SessionList,
    StatusResponse,
    UsageSummary,
)
from standin_worker import StandInWorkers

from protoface_emulator.lifecycle import END_REASON_METADATA_KEY, END_REASON_REQUESTED
from protoface_emulator.server import Emulator


async def test_status_and_plans_validate_under_sdk_models(
    emu: Emulator, http: aiohttp.ClientSession, sdk: ProtofaceClient
) -> None:
    status = await call(http, emu, "GET", "/v1/status")
    assert status.status == 200
    assert StatusResponse.model_validate_json(status.text).status.value == "operational"
    assert status.headers["X-Request-Id"].startswith("req_")

    plans = await call(http, emu, "GET", "/v1/billing/plans")
    assert plans.status == 200
    [plan] = [PlanView.model_validate(item) for item in plans.json]
    assert (plan.key, plan.session_time_limit_seconds) == ("developer", 1800)

    assert (await asyncio.to_thread(sdk.get_status)).status.value == "operational"
    assert [p.key for p in await asyncio.to_thread(sdk.list_billing_plans)] == ["developer"]


async def test_avatars_list_pages_and_get(
    emu: Emulator, http: aiohttp.ClientSession, sdk: ProtofaceClient
) -> None:
    first = await asyncio.to_thread(sdk.avatars.list, limit=2)
    assert [a.id for a in first.data] == ["av_stock_001", "av_stock_002"]
    assert first.has_more and first.next_cursor == "av_stock_002"
    second = await asyncio.to_thread(sdk.avatars.list, limit=2, starting_after=first.next_cursor)
    assert [a.id for a in second.data] == ["av_stock_003"]
    assert not second.has_more and second.next_cursor is None

    stock = await asyncio.to_thread(sdk.avatars.get, "av_stock_001")
    assert stock.is_demo and stock.status.value == "ready"

    raw_list = await call(http, emu, "GET", "/v1/avatars?scope=stock&q=ada")
    assert [a.id for a in AvatarList.model_validate_json(raw_list.text).data] == ["av_stock_001"]
    by_id = await call(http, emu, "GET", "/v1/avatars?q=STOCK_002")  # the id matches too
    assert [a.id for a in AvatarList.model_validate_json(by_id.text).data] == ["av_stock_002"]
    raw_one = await call(http, emu, "GET", "/v1/avatars/av_stock_002")
    assert Avatar.model_validate_json(raw_one.text).name == "Bram"


async def test_create_livekit_wait_until_running_and_end(
    emu: Emulator, http: aiohttp.ClientSession, sdk: ProtofaceClient, workers: StandInWorkers
) -> None:
    created = await asyncio.to_thread(
        sdk.sessions.create_livekit,
        avatar_id="av_stock_001",
        url="wss://example.livekit.cloud",
        room_name="room-1",
        worker_token="secret-worker-jwt",
        metadata={"customer": "acme", "n": 1, "ratio": 0.5, "flag": True, "none": None},
    )
    assert created.status == SessionStatus.queued
    assert created.id.startswith("sess_") and len(created.id) == len("sess_") + 26
    assert created.transport.worker_token is None  # type: ignore[union-attr]

    running = await asyncio.to_thread(created.wait_until_running, timeout=10, poll_interval=0.05)
    assert running.status == SessionStatus.running
    assert running.started_at is not None and running.first_frame_at is not None
    assert running.started_at <= running.first_frame_at

    raw = await call(http, emu, "GET", f"/v1/sessions/{created.id}")
    assert Session.model_validate_json(raw.text).status.value == "running"
    assert "secret-worker-jwt" not in raw.text and "worker_token" not in raw.text

    [worker] = workers.for_session(created.id)
    assert worker.spec.token == "secret-worker-jwt"
    assert worker.spec.identity == "protoface-worker"

    ended = await asyncio.to_thread(sdk.sessions.end, created.id)
    assert ended.status == SessionStatus.ended
    assert ended.ended_at is not None
    assert ended.metadata[END_REASON_METADATA_KEY] == END_REASON_REQUESTED
    assert ended.metadata["customer"] == "acme"
    assert worker.closed
    assert ended.usage is not None and ended.usage.billable_seconds >= 1
    assert ended.usage.frames >= 1


async def test_end_is_idempotent(sdk: ProtofaceClient) -> None:
    created = await asyncio.to_thread(sdk.sessions.create, session_body())
    first = await asyncio.to_thread(sdk.sessions.end, created.id)
    second = await asyncio.to_thread(sdk.sessions.end, created.id)
    assert first.status == second.status == SessionStatus.ended
    assert first.ended_at == second.ended_at
    assert second.metadata == first.metadata


async def test_sessions_list_across_pages_newest_first(
    emu: Emulator, http: aiohttp.ClientSession, sdk: ProtofaceClient
) -> None:
    ids = [(await asyncio.to_thread(sdk.sessions.create, session_body())).id for _ in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await asyncio.to_thread(sdk.sessions.list, limit=2, starting_after=cursor)
        pages += 1
        seen.extend(s.id for s in page.data)
        if not page.has_more:
            assert page.next_cursor is None
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    assert pages == 3

    raw = await call(http, emu, "GET", "/v1/sessions?limit=100")
    assert [s.id for s in SessionList.model_validate_json(raw.text).data] == list(reversed(ids))


async def test_max_duration_is_clamped_to_the_plan_and_echoed(sdk: ProtofaceClient) -> None:
    asked_too_much = await asyncio.to_thread(
        sdk.sessions.create, session_body(max_duration_seconds=3600)
    )
    assert asked_too_much.max_duration_seconds == 1800
    default = await asyncio.to_thread(sdk.sessions.create, session_body())
    assert default.max_duration_seconds == 1800
    assert default.idle_timeout_seconds == 30
    short = await asyncio.to_thread(sdk.sessions.create, session_body(max_duration_seconds=60))
    assert short.max_duration_seconds == 60


async def test_usage_counts_billable_seconds_and_sessions(
    emu: Emulator, http: aiohttp.ClientSession, sdk: ProtofaceClient
) -> None:
    created = await asyncio.to_thread(sdk.sessions.create, session_body(quality="pro"))
    await asyncio.to_thread(created.wait_until_running, timeout=10, poll_interval=0.05)
    await asyncio.to_thread(sdk.sessions.end, created.id)

    summary = await asyncio.to_thread(sdk.usage.summary, period="current_month")
    assert summary.sessions == 1
    assert summary.billable_seconds >= 1
    assert summary.by_quality is not None
    assert sum(summary.by_quality.values()) == summary.billable_seconds

    window = await call(
        http,
        emu,
        "GET",
        "/v1/usage?period_start=2000-01-01T00:00:00Z&period_end=2000-02-01T00:00:00Z",
    )
    empty = UsageSummary.model_validate_json(window.text)
    assert (empty.sessions, empty.billable_seconds) == (0, 0)
    assert empty.period_start.year == 2000


async def test_avatar_upload_is_processing_then_ready_then_deletable(
    emu: Emulator, sdk: ProtofaceClient
) -> None:
    avatar = await asyncio.to_thread(sdk.avatars.create, image=PNG, name="Me")
    assert avatar.status.value == "processing"
    assert not avatar.is_demo and avatar.id.startswith("av_")

    await eventually(
        lambda: emu.store.get_avatar(avatar.id).status, lambda status: status == "ready"
    )
    ready = await asyncio.to_thread(sdk.avatars.get, avatar.id)
    assert ready.status.value == "ready"
    session = await asyncio.to_thread(sdk.sessions.create, session_body(avatar_id=avatar.id))
    assert session.avatar_id == avatar.id

    await asyncio.to_thread(sdk.avatars.delete, avatar.id)
    with pytest.raises(NotFoundError) as missing:
        await asyncio.to_thread(sdk.avatars.get, avatar.id)
    assert missing.value.code == "avatar_not_found"


async def test_stock_avatar_cannot_be_deleted(sdk: ProtofaceClient) -> None:
    with pytest.raises(PermissionError) as refused:
        await asyncio.to_thread(sdk.avatars.delete, "av_stock_001")
    assert refused.value.code == "stock_avatar_immutable"
    assert refused.value.param == "avatar_id"


async def test_pipecat_sessions_answer_transport_unsupported(sdk: ProtofaceClient) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        await asyncio.to_thread(sdk.pipecat.sessions.create, avatar_id="av_stock_001")
    assert refused.value.code == "transport.unsupported"
    assert refused.value.request_id is not None


async def test_every_answer_validates_carries_a_request_id_and_never_the_token(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.hostile-token-value.sig"
    body = session_body(metadata={"n": 1, "f": 0.5, "b": True, "z": None, "s": "\u00e9\u0000"})
    body["transport"]["worker_token"] = token
    key = {"Idempotency-Key": "sweep"}
    created = await call(http, emu, "POST", "/v1/sessions", json_body=body, headers=key)
    session_id = created.json["id"]
    await eventually(lambda: emu.store.get_session(session_id).status, "running".__eq__)

    def plans(text: str) -> object:
        return [PlanView.model_validate(item) for item in json.loads(text)]

    checks: list[tuple[str, str, object, Callable[[str], object] | None]] = [
        ("GET", "/v1/status", None, StatusResponse.model_validate_json),
        ("GET", "/v1/billing/plans", None, plans),
        ("GET", "/v1/usage", None, UsageSummary.model_validate_json),
        ("GET", "/v1/usage?period_start=0", None, UsageSummary.model_validate_json),
        ("GET", "/v1/avatars?limit=1", None, AvatarList.model_validate_json),
        ("GET", "/v1/avatars/av_stock_003", None, Avatar.model_validate_json),
        ("GET", "/v1/sessions?limit=100", None, SessionList.model_validate_json),
        ("GET", f"/v1/sessions/{session_id}", None, Session.model_validate_json),
        ("POST", "/v1/sessions", body, Session.model_validate_json),  # replay
        ("POST", f"/v1/sessions/{session_id}/end", None, Session.model_validate_json),
        ("POST", f"/v1/sessions/{session_id}/end", None, Session.model_validate_json),
        ("POST", "/v1/sessions", body, Session.model_validate_json),  # replay, ended
        ("GET", f"/v1/sessions?status=ended&avatar_id={body['avatar_id']}", None, None),
    ]
    for method, path, json_body, validate in checks:
        headers = key if method == "POST" and path == "/v1/sessions" else None
        reply = await call(http, emu, method, path, json_body=json_body, headers=headers)
        assert reply.status in (200, 201), (path, reply.text)
        assert reply.headers["X-Request-Id"].startswith("req_")
        assert token not in reply.text and "worker_token" not in reply.text
        if validate is not None:
            validate(reply.text)
    final = Session.model_validate_json(
        (await call(http, emu, "GET", f"/v1/sessions/{session_id}")).text
    )
    assert final.metadata["s"] == "\u00e9\u0000"


@pytest.mark.parametrize(
    ("transport", "echoed"),
    [
        (
            {},
            {
                "worker_identity": "protoface-worker",
                "audio_source": "data_stream",
                "subscribe_to_identity": None,
                "synthetic_audio_if_no_input": False,
            },
        ),
        (
            {
                "url": "WSS://Example.LiveKit.cloud:443",  # schemes are case-insensitive
                "worker_identity": "avatar-7",
                "audio_source": "track",
                "subscribe_to_identity": "agent-1",
                "synthetic_audio_if_no_input": False,
            },
            {
                "url": "WSS://Example.LiveKit.cloud:443",
                "worker_identity": "avatar-7",
                "audio_source": "track",
                "subscribe_to_identity": "agent-1",
                "synthetic_audio_if_no_input": False,
            },
        ),
        ({"synthetic_audio_if_no_input": True}, {"synthetic_audio_if_no_input": True}),
        ({"synthetic_audio_if_no_input": None}, {"synthetic_audio_if_no_input": False}),
    ],
)
async def test_transport_fields_are_echoed_and_handed_to_the_worker(
    emu: Emulator,
    http: aiohttp.ClientSession,
    workers: StandInWorkers,
    transport: dict[str, object],
    echoed: dict[str, object],
) -> None:
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=with_transport(**transport))
    assert reply.status == 201, reply.text
    shown = reply.json["transport"]
    assert {key: shown[key] for key in echoed} == echoed
    [worker] = workers.for_session(reply.json["id"])
    spec = worker.spec
    assert spec.url == shown["url"] and spec.identity == shown["worker_identity"]
    assert spec.audio_source == shown["audio_source"]
    assert spec.subscribe_to_identity == shown["subscribe_to_identity"]
    assert spec.synthetic_audio_if_no_input is shown["synthetic_audio_if_no_input"]


async def test_unix_seconds_in_a_query_mean_that_second(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    reply = await call(http, emu, "GET", "/v1/usage?period_start=1735689600&period_end=1735776000")
    assert reply.status == 200, reply.text
    window = (reply.json["period_start"], reply.json["period_end"])
    assert window == ("2025-01-01T00:00:00.000Z", "2025-01-02T00:00:00.000Z")


async def test_avatar_scopes_and_the_order_of_uploads(
    emu: Emulator, http: aiohttp.ClientSession, sdk: ProtofaceClient
) -> None:
    first = await asyncio.to_thread(sdk.avatars.create, image=PNG, name="First")
    second = await asyncio.to_thread(sdk.avatars.create, image=PNG, name="Second")

    async def ids(query: str) -> list[str]:
        reply = await call(http, emu, "GET", f"/v1/avatars?{query}")
        return [a.id for a in AvatarList.model_validate_json(reply.text).data]

    stock = ["av_stock_001", "av_stock_002", "av_stock_003"]
    assert await ids("scope=custom") == [second.id, first.id]  # newest first
    assert await ids("scope=stock") == stock
    assert await ids("scope=all") == [*stock, second.id, first.id]

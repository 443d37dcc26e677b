"""Safe retries: idempotent creates, what is retried and what never is."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError

from livekit.plugins.protoface import ProtofaceAPIError
from livekit.plugins.protoface.api import ProtofaceAPI
from protoface_emulator import Emulator
from protoface_emulator.api.faults import Fault
from protoface_emulator.lifecycle import ManualWorkers

from .helpers import (
    API_KEY,
    CREATE,
    END,
    FAST,
    LIVEKIT_URL,
    STATUS,
    add_session,
    assert_ended_by_the_client,
    envelope,
    session_ids,
)

TRANSPORT = {
    "type": "livekit",
    "url": LIVEKIT_URL,
    "room_name": "room-1",
    "worker_token": "worker.jwt.token",
}


def make_api(emu: Emulator, conn_options: APIConnectOptions = FAST) -> ProtofaceAPI:
    return ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=conn_options)


async def test_create_carries_a_uuid4_idempotency_key(emu: Emulator) -> None:
    async with make_api(emu) as api:
        await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    (create,) = emu.requests.matching(CREATE)
    key = create.headers["Idempotency-Key"]
    assert uuid.UUID(key).version == 4


async def test_retry_reuses_idempotency_key(emu: Emulator) -> None:
    emu.faults.reply(CREATE, 503, json=envelope("service_unavailable", "unavailable"))
    emu.faults.reply(CREATE, 500, body="oops")
    async with make_api(emu) as api:
        session = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    creates = emu.requests.matching(CREATE)
    assert len(creates) == 3
    assert len({c.headers["Idempotency-Key"] for c in creates}) == 1
    assert session_ids(emu) == [session["id"]]


async def test_each_logical_create_gets_its_own_key(emu: Emulator) -> None:
    async with make_api(emu) as api:
        first = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)
        second = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    keys = {c.headers["Idempotency-Key"] for c in emu.requests.matching(CREATE)}
    assert len(keys) == 2
    assert first["id"] != second["id"]


async def test_create_timeout_after_server_accepted_does_not_start_a_second_session(
    emu: Emulator,
) -> None:
    """The published plugin's bug (a): a retried create after a timeout billed twice."""
    emu.faults.add(CREATE, "late", delay=1.0)  # the server stores it, then answers too late
    conn = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=0.3)
    async with make_api(emu, conn) as api:
        session = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    first, replay = emu.requests.matching(CREATE)
    assert first.fault is not None and first.fault.kind == "late"  # the one that timed out
    assert replay.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert session_ids(emu) == [session["id"]]


async def test_caller_idempotency_key_is_sent_on_every_attempt(emu: Emulator) -> None:
    emu.faults.reply(CREATE, 502, body="")
    async with make_api(emu) as api:
        await api.start_session(
            avatar_id="av_stock_001", transport=TRANSPORT, idempotency_key="my-create-42"
        )

    keys = [c.headers["Idempotency-Key"] for c in emu.requests.matching(CREATE)]
    assert keys == ["my-create-42", "my-create-42"]


Arm = Callable[[Emulator, str], Fault]
"""Arms one fault on a route."""


@pytest.mark.parametrize(
    "arm",
    [
        lambda e, r: e.faults.reply(r, 408, json=envelope("invalid_request", "request_timeout")),
        lambda e, r: e.faults.reply(r, 429, json=envelope("rate_limit", "too_many_requests")),
        lambda e, r: e.faults.reply(r, 500, json=envelope("internal", "internal_error")),
        lambda e, r: e.faults.add(r, "html", status=502),
        lambda e, r: e.faults.reply(r, 503, body=""),
        lambda e, r: e.faults.reply(r, 504, body="upstream timed out"),
        lambda e, r: e.faults.add(r, "drop", handled=False),
    ],
    ids=["408", "429", "500-envelope", "502-html", "503-empty", "504-text", "dropped-connection"],
)
async def test_transient_failures_are_retried(emu: Emulator, arm: Arm) -> None:
    arm(emu, STATUS)
    async with make_api(emu) as api:
        status = await api.get_status()

    assert status["status"] == "operational"
    assert len(emu.requests.matching(STATUS)) == 2


async def test_timeouts_are_retried(emu: Emulator) -> None:
    emu.faults.add(STATUS, "late", delay=1.0)
    conn = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=0.3)
    async with make_api(emu, conn) as api:
        status = await api.get_status()

    assert status["status"] == "operational"
    assert len(emu.requests.matching(STATUS)) == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_request"),
        (401, "invalid_api_key"),
        (403, "forbidden"),
        (404, "session_not_found"),
        (409, "concurrency_limit_reached"),
        (422, "unprocessable"),
    ],
)
async def test_other_4xx_are_never_retried(emu: Emulator, status: int, code: str) -> None:
    emu.faults.reply(CREATE, status, json=envelope("x", code))
    async with make_api(emu) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.retryable is False
    assert len(emu.requests.matching(CREATE)) == 1


@pytest.mark.parametrize(
    "arm",
    [
        lambda e, r: e.faults.reply(r, 201, json=["not", "an", "object"]),
        lambda e, r: e.faults.reply(
            r, 201, body="<html>welcome</html>", headers={"Content-Type": "text/html"}
        ),
        lambda e, r: e.faults.reply(r, 200, body=""),
        lambda e, r: e.faults.reply(
            r, 201, body="null", headers={"Content-Type": "application/json"}
        ),
    ],
    ids=["json-list", "html", "empty", "json-null"],
)
async def test_2xx_without_a_json_object_is_not_retried(emu: Emulator, arm: Arm) -> None:
    reply = arm(emu, CREATE)
    async with make_api(emu) as api:
        with pytest.raises(APIStatusError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    assert info.value.retryable is False
    assert info.value.status_code == reply.status
    assert len(emu.requests.matching(CREATE)) == 1


async def test_end_session_is_retried(emu: Emulator, workers: ManualWorkers) -> None:
    session = await add_session(emu, workers, "running")
    emu.faults.reply(END, 503, json=envelope("service_unavailable", "unavailable"))
    emu.faults.add(END, "drop", handled=False)
    async with make_api(emu) as api:
        ended = await api.end_session(session.id)

    assert ended["status"] == "ended"
    assert len(emu.requests.matching(END)) == 3
    assert_ended_by_the_client(emu, session.id)


async def test_retries_stop_after_max_retry(emu: Emulator) -> None:
    emu.faults.reply(STATUS, 500, body="", count=10)
    conn = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=2.0)
    async with make_api(emu, conn) as api:
        with pytest.raises(APIConnectionError):
            await api.get_status()

    assert len(emu.requests.matching(STATUS)) == 3


async def test_every_request_sends_auth_user_agent_and_accept(emu: Emulator) -> None:
    async with make_api(emu) as api:
        await api.get_status()

    (request,) = emu.requests.all()
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["User-Agent"].startswith("livekit-plugins-protoface/")
    assert request.headers["Accept"] == "application/json"
    assert "Idempotency-Key" not in request.headers


@pytest.mark.parametrize("call", ["create", "end"])
async def test_writes_make_exactly_max_retry_plus_one_attempts(
    emu: Emulator, workers: ManualWorkers, call: str
) -> None:
    session = await add_session(emu, workers, "running")
    route = CREATE if call == "create" else END
    emu.faults.reply(route, 502, body="", count=10)
    conn = APIConnectOptions(max_retry=4, retry_interval=0.0, timeout=2.0)
    async with make_api(emu, conn) as api:
        with pytest.raises(APIConnectionError) as info:
            if call == "create":
                await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)
            else:
                await api.end_session(session.id)

    attempts = emu.requests.matching(route)
    assert len(attempts) == 5
    assert isinstance(info.value.__cause__, ProtofaceAPIError)
    assert info.value.__cause__.status_code == 502
    if call == "create":
        assert len({a.headers["Idempotency-Key"] for a in attempts}) == 1

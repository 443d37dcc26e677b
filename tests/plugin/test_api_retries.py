"""Safe retries: idempotent creates, what is retried and what never is."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError

from livekit.plugins.protoface import ProtofaceAPIError
from livekit.plugins.protoface.api import ProtofaceAPI

from .fake_protoface import API_KEY, FAST, LIVEKIT_URL, FakeProtoface, Reply, envelope

TRANSPORT = {
    "type": "livekit",
    "url": LIVEKIT_URL,
    "room_name": "room-1",
    "worker_token": "worker.jwt.token",
}


def make_api(fake: FakeProtoface, conn_options: APIConnectOptions = FAST) -> ProtofaceAPI:
    return ProtofaceAPI(api_key=API_KEY, api_url=fake.url, conn_options=conn_options)


async def test_create_carries_a_uuid4_idempotency_key(fake: FakeProtoface) -> None:
    async with make_api(fake) as api:
        await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    (create,) = fake.requests_to("POST", "/v1/sessions")
    key = create.headers["Idempotency-Key"]
    assert uuid.UUID(key).version == 4


async def test_retry_reuses_idempotency_key(fake: FakeProtoface) -> None:
    fake.script(
        "POST",
        "/v1/sessions",
        Reply(status=503, json=envelope("service_unavailable", "unavailable")),
        Reply(status=500, text="oops"),
    )
    async with make_api(fake) as api:
        session = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    creates = fake.requests_to("POST", "/v1/sessions")
    assert len(creates) == 3
    assert len({c.headers["Idempotency-Key"] for c in creates}) == 1
    assert len(fake.sessions) == 1
    assert session["id"] in fake.sessions


async def test_each_logical_create_gets_its_own_key(fake: FakeProtoface) -> None:
    async with make_api(fake) as api:
        first = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)
        second = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    keys = {c.headers["Idempotency-Key"] for c in fake.requests_to("POST", "/v1/sessions")}
    assert len(keys) == 2
    assert first["id"] != second["id"]


async def test_create_timeout_after_server_accepted_does_not_start_a_second_session(
    fake: FakeProtoface,
) -> None:
    """The published plugin's bug (a): a retried create after a timeout billed twice."""
    fake.create_delay = 1.0  # the server stores the session, then answers too late

    async def stop_delaying() -> None:
        await fake.create_received.wait()
        fake.create_delay = 0.0

    waiter = asyncio.create_task(stop_delaying())
    conn = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=0.3)
    async with make_api(fake, conn) as api:
        session = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)
    await waiter

    assert len(fake.requests_to("POST", "/v1/sessions")) >= 2
    assert list(fake.sessions) == [session["id"]]


async def test_caller_idempotency_key_is_sent_on_every_attempt(fake: FakeProtoface) -> None:
    fake.script("POST", "/v1/sessions", Reply(status=502, text=""))
    async with make_api(fake) as api:
        await api.start_session(
            avatar_id="av_stock_001", transport=TRANSPORT, idempotency_key="my-create-42"
        )

    keys = [c.headers["Idempotency-Key"] for c in fake.requests_to("POST", "/v1/sessions")]
    assert keys == ["my-create-42", "my-create-42"]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=408, json=envelope("invalid_request", "request_timeout")),
        Reply(status=429, json=envelope("rate_limit", "too_many_requests")),
        Reply(status=500, json=envelope("internal", "internal_error")),
        Reply(
            status=502,
            text="<html><body>Bad Gateway</body></html>",
            headers={"Content-Type": "text/html"},
        ),
        Reply(status=503, text=""),
        Reply(status=504, text="upstream timed out"),
        Reply(drop=True),
    ],
    ids=["408", "429", "500-envelope", "502-html", "503-empty", "504-text", "dropped-connection"],
)
async def test_transient_failures_are_retried(fake: FakeProtoface, reply: Reply) -> None:
    fake.script("GET", "/v1/status", reply)
    async with make_api(fake) as api:
        status = await api.get_status()

    assert status["status"] == "operational"
    assert len(fake.requests_to("GET", "/v1/status")) == 2


async def test_timeouts_are_retried(fake: FakeProtoface) -> None:
    fake.script("GET", "/v1/status", Reply(delay=1.0, json={"status": "late"}))
    conn = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=0.3)
    async with make_api(fake, conn) as api:
        status = await api.get_status()

    assert status["status"] == "operational"


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
async def test_other_4xx_are_never_retried(fake: FakeProtoface, status: int, code: str) -> None:
    fake.script("POST", "/v1/sessions", Reply(status=status, json=envelope("x", code)))
    async with make_api(fake) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.retryable is False
    assert len(fake.requests_to("POST", "/v1/sessions")) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=201, json=["not", "an", "object"]),
        Reply(status=201, text="<html>welcome</html>", headers={"Content-Type": "text/html"}),
        Reply(status=200, text=""),
        Reply(status=201, text="null", headers={"Content-Type": "application/json"}),
    ],
    ids=["json-list", "html", "empty", "json-null"],
)
async def test_2xx_without_a_json_object_is_not_retried(fake: FakeProtoface, reply: Reply) -> None:
    fake.script("POST", "/v1/sessions", reply)
    async with make_api(fake) as api:
        with pytest.raises(APIStatusError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    assert info.value.retryable is False
    assert info.value.status_code == reply.status
    assert len(fake.requests_to("POST", "/v1/sessions")) == 1


async def test_end_session_is_retried(fake: FakeProtoface) -> None:
    session = fake.add_session(status="running")
    fake.script(
        "POST",
        "/v1/sessions/{id}/end",
        Reply(status=503, json=envelope("service_unavailable", "unavailable")),
        Reply(drop=True),
    )
    async with make_api(fake) as api:
        ended = await api.end_session(session["id"])

    assert ended["status"] == "ended"
    assert len(fake.requests_to("POST", "/v1/sessions/{id}/end")) == 3


async def test_retries_stop_after_max_retry(fake: FakeProtoface) -> None:
    fake.script("GET", "/v1/status", *[Reply(status=500, text="") for _ in range(10)])
    conn = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=2.0)
    async with make_api(fake, conn) as api:
        with pytest.raises(APIConnectionError):
            await api.get_status()

    assert len(fake.requests_to("GET", "/v1/status")) == 3


async def test_every_request_sends_auth_user_agent_and_accept(fake: FakeProtoface) -> None:
    async with make_api(fake) as api:
        await api.get_status()

    (request,) = fake.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["User-Agent"].startswith("livekit-plugins-protoface/")
    assert request.headers["Accept"] == "application/json"
    assert "Idempotency-Key" not in request.headers


@pytest.mark.parametrize("call", ["create", "end"])
async def test_writes_make_exactly_max_retry_plus_one_attempts(
    fake: FakeProtoface, call: str
) -> None:
    session = fake.add_session(status="running")
    route = "/v1/sessions" if call == "create" else "/v1/sessions/{id}/end"
    fake.script("POST", route, *[Reply(status=502, text="") for _ in range(10)])
    conn = APIConnectOptions(max_retry=4, retry_interval=0.0, timeout=2.0)
    async with make_api(fake, conn) as api:
        with pytest.raises(APIConnectionError) as info:
            if call == "create":
                await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)
            else:
                await api.end_session(session["id"])

    attempts = fake.requests_to("POST", route)
    assert len(attempts) == 5
    assert isinstance(info.value.__cause__, ProtofaceAPIError)
    assert info.value.__cause__.status_code == 502
    if call == "create":
        assert len({a.headers["Idempotency-Key"] for a in attempts}) == 1

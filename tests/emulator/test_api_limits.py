"""Plan limits, list filters and pagination, and the load a benchmark puts on the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from emulator_helpers import assert_error, call, eventually, session_body
from protoface_sdk import ProtofaceClient, RateLimitError
from protoface_sdk._generated import Session, SessionList
from standin_worker import StandInWorkers

from protoface_emulator.server import Emulator


@pytest.fixture
async def small(workers: StandInWorkers) -> AsyncIterator[Emulator]:
    """An emulator whose plan allows two concurrent sessions."""
    async with Emulator(worker_factory=workers, max_concurrency=2) as emu:
        yield emu


async def test_concurrency_limit_is_429_with_retry_after(
    small: Emulator, http: aiohttp.ClientSession
) -> None:
    a = await call(http, small, "POST", "/v1/sessions", json_body=session_body())
    await call(http, small, "POST", "/v1/sessions", json_body=session_body())
    refused = await call(http, small, "POST", "/v1/sessions", json_body=session_body())
    assert_error(refused, 429, "rate_limit", "concurrency_limit_exceeded")
    assert int(refused.headers["Retry-After"]) >= 1

    await call(http, small, "POST", f"/v1/sessions/{a.json['id']}/end")
    assert (await call(http, small, "POST", "/v1/sessions", json_body=session_body())).status == 201


async def test_sdk_sees_the_limit_as_rate_limit_error(small: Emulator) -> None:
    for _ in range(2):
        await call_create(small)

    def create() -> None:
        with ProtofaceClient(small.api_key, base_url=small.url, max_retries=0) as client:
            client.sessions.create(session_body())

    with pytest.raises(RateLimitError) as limited:
        await asyncio.to_thread(create)
    assert limited.value.code == "concurrency_limit_exceeded"
    assert limited.value.retry_after_seconds is not None


async def call_create(emu: Emulator) -> str:
    async with aiohttp.ClientSession() as http:
        reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
        assert reply.status == 201, reply.text
        return str(reply.json["id"])


async def test_failed_sessions_free_their_slot() -> None:
    failing = StandInWorkers(fail_with=("livekit_auth_failed", "token rejected"))
    async with Emulator(worker_factory=failing, max_concurrency=1) as emu:
        first = await call_create(emu)
        failed = await eventually(
            lambda: emu.store.get_session(first), lambda s: s.status == "failed"
        )
        assert failed.failure == {"code": "livekit_auth_failed", "message": "token rejected"}
        await call_create(emu)


async def test_list_filters_by_status_avatar_and_creation_time(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    first = (await call(http, emu, "POST", "/v1/sessions", json_body=session_body())).json
    await asyncio.sleep(0.01)  # distinct created_at milliseconds
    second = (
        await call(
            http, emu, "POST", "/v1/sessions", json_body=session_body(avatar_id="av_stock_002")
        )
    ).json
    await call(http, emu, "POST", f"/v1/sessions/{first['id']}/end")

    async def ids(query: str) -> list[str]:
        reply = await call(http, emu, "GET", f"/v1/sessions?{query}")
        assert reply.status == 200, reply.text
        return [s.id for s in SessionList.model_validate_json(reply.text).data]

    assert await ids("status=ended") == [first["id"]]
    assert await ids("status=ended&status=queued&status=starting&status=running") == [
        second["id"],
        first["id"],
    ]
    assert await ids("status=ended,failed") == [first["id"]]
    assert await ids("avatar_id=av_stock_002") == [second["id"]]
    created = second["created_at"]
    assert await ids(f"created_after={created}") == [second["id"]]
    assert await ids(f"created_before={created}") == [first["id"]]
    # An offset sent without URL-encoding its `+` still means what it says.
    plus_offset = created.replace("Z", "+00:00")
    assert await ids(f"created_after={plus_offset}") == [second["id"]]
    assert await ids("created_before=2000-01-01") == []


async def test_pagination_with_a_filter_continues_after_the_cursor(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    made = [await call_create(emu) for _ in range(6)]
    for session_id in made[::2]:
        await call(http, emu, "POST", f"/v1/sessions/{session_id}/end")
    ended_newest_first = list(reversed(made[::2]))
    page1 = (await call(http, emu, "GET", "/v1/sessions?status=ended&limit=2")).json
    assert [s["id"] for s in page1["data"]] == ended_newest_first[:2]
    assert page1["has_more"] and page1["next_cursor"] == ended_newest_first[1]
    page2 = (
        await call(
            http,
            emu,
            "GET",
            f"/v1/sessions?status=ended&limit=2&starting_after={page1['next_cursor']}",
        )
    ).json
    assert [s["id"] for s in page2["data"]] == ended_newest_first[2:]
    assert not page2["has_more"] and page2["next_cursor"] is None


async def test_a_thousand_concurrent_creates_and_ends(workers: StandInWorkers) -> None:
    """What a 1,000-session benchmark does to the API: everything answers, nothing leaks."""
    async with Emulator(worker_factory=workers) as emu:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def create_and_end(n: int) -> Session:
                created = await call(
                    http,
                    emu,
                    "POST",
                    "/v1/sessions",
                    json_body=session_body(),
                    headers={"Idempotency-Key": f"bench-{n}"},
                )
                assert created.status == 201, created.text
                ended = await call(http, emu, "POST", f"/v1/sessions/{created.json['id']}/end")
                assert ended.status == 200, ended.text
                return Session.model_validate_json(ended.text)

            sessions = await asyncio.wait_for(
                asyncio.gather(*(create_and_end(n) for n in range(1000))), timeout=120
            )
        assert len({s.id for s in sessions}) == 1000
        assert {s.status.value for s in sessions} == {"ended"}
        assert emu.store.active_count == 0
        assert len(workers.started) == 1000
        assert all(w.closed for w in workers.started)


async def test_reads_answer_and_creates_are_503_while_the_emulator_shuts_down() -> None:
    slow = StandInWorkers(close_delay=1.0)
    emu = Emulator(worker_factory=slow)
    await emu.start()
    closing: asyncio.Task[None] | None = None
    try:
        # One kept-alive connection, opened before shutdown stops accepting new ones.
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as http:
            created = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
            session_id = created.json["id"]
            await eventually(lambda: emu.store.get_session(session_id).status, "running".__eq__)
            closing = asyncio.ensure_future(emu.aclose())
            await eventually(lambda: emu.store.get_session(session_id).status, "ending".__eq__)

            got = await call(http, emu, "GET", f"/v1/sessions/{session_id}")
            assert Session.model_validate_json(got.text).status.value == "ending"
            listed = await call(http, emu, "GET", "/v1/sessions")
            assert [s.id for s in SessionList.model_validate_json(listed.text).data] == [session_id]
            refused = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
            assert_error(refused, 503, "service_unavailable", "shutting_down")
            assert refused.headers["Retry-After"] == "1"
            ended = await call(http, emu, "POST", f"/v1/sessions/{session_id}/end")
            assert ended.status == 200 and ended.json["status"] in ("ending", "ended")
        await asyncio.wait_for(closing, timeout=30)
    finally:
        if closing is None:
            await emu.aclose()
    assert emu.store.get_session(session_id).status == "ended"
    assert all(w.closed for w in slow.started)


# --- the limits at their edges ------------------------------------------------------


def _metadata_of_size(size: int) -> dict[str, str]:
    """`{"m": "xxx..."}` whose compact JSON is exactly `size` bytes."""
    overhead = len('{"m":""}')
    return {"m": "x" * (size - overhead)}


async def test_metadata_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    from protoface_emulator.contract import METADATA_MAX_BYTES

    assert METADATA_MAX_BYTES == 8192
    at_limit = _metadata_of_size(METADATA_MAX_BYTES)
    accepted = await call(
        http, emu, "POST", "/v1/sessions", json_body=session_body(metadata=at_limit)
    )
    assert accepted.status == 201, accepted.json
    assert accepted.json["metadata"]["m"] == at_limit["m"]
    over = _metadata_of_size(METADATA_MAX_BYTES + 1)
    refused = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(metadata=over))
    assert_error(refused, 400, "invalid_request", "metadata_too_large", "metadata")
    assert "8193 bytes" in refused.json["error"]["message"]


async def test_an_idempotency_key_of_255_characters_is_accepted_and_256_is_not(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    longest = "k" * 255
    first = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        json_body=session_body(),
        headers={"Idempotency-Key": longest},
    )
    assert first.status == 201, first.json
    again = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        json_body=session_body(),
        headers={"Idempotency-Key": longest},
    )
    assert again.json["id"] == first.json["id"]  # the same key replays the same session
    refused = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        json_body=session_body(),
        headers={"Idempotency-Key": "k" * 256},
    )
    assert refused.status == 400, refused.json
    assert "255" in refused.json["error"]["message"]

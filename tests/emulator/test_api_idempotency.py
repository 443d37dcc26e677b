"""`Idempotency-Key` on `POST /v1/sessions`: one session and one worker per key and body."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from emulator_helpers import assert_error, call, session_body, with_transport
from protoface_sdk._generated import Session
from standin_worker import StandInWorkers

from protoface_emulator.api.limits import StoreConfig
from protoface_emulator.api.requests import parse_session_create
from protoface_emulator.api.store import Store
from protoface_emulator.server import Emulator


async def test_same_key_and_body_replays_the_same_session_without_a_second_worker(
    emu: Emulator, http: aiohttp.ClientSession, workers: StandInWorkers
) -> None:
    headers = {"Idempotency-Key": "create-1"}
    first = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers)
    again = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers)
    assert first.status == again.status == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    session = Session.model_validate_json(again.text)
    assert session.id == first.json["id"]
    assert len(workers.started) == 1
    assert emu.store.active_count == 1


async def test_key_order_in_the_body_does_not_matter(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    body = session_body(quality="lite")
    reordered = dict(reversed(list(body.items())))
    assert json.dumps(body) != json.dumps(reordered)
    headers = {"Idempotency-Key": "order"}
    first = await call(http, emu, "POST", "/v1/sessions", json_body=body, headers=headers)
    second = await call(http, emu, "POST", "/v1/sessions", json_body=reordered, headers=headers)
    assert first.json["id"] == second.json["id"]


@pytest.mark.parametrize(
    "other_body",
    [session_body(quality="pro"), with_transport(worker_token="another-token")],
    ids=["other-quality", "other-worker-token"],
)
async def test_same_key_with_another_body_is_a_conflict(
    emu: Emulator,
    http: aiohttp.ClientSession,
    workers: StandInWorkers,
    other_body: dict[str, object],
) -> None:
    headers = {"Idempotency-Key": "create-2"}
    first = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers)
    assert first.status == 201
    reused = await call(http, emu, "POST", "/v1/sessions", json_body=other_body, headers=headers)
    assert_error(reused, 409, "conflict", "idempotency_key_reused")
    assert len(workers.started) == 1


async def test_without_a_key_every_create_is_a_new_session(
    emu: Emulator, http: aiohttp.ClientSession, workers: StandInWorkers
) -> None:
    first = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    second = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    assert first.json["id"] != second.json["id"]
    assert len(workers.started) == 2


async def test_concurrent_identical_creates_start_one_session_and_one_worker(
    emu: Emulator, workers: StandInWorkers
) -> None:
    # One connection per request, so the creates really are in flight together.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        replies = await asyncio.gather(
            *(
                call(
                    http,
                    emu,
                    "POST",
                    "/v1/sessions",
                    json_body=session_body(),
                    headers={"Idempotency-Key": "burst"},
                )
                for _ in range(50)
            )
        )
    assert {r.status for r in replies} == {201}
    assert len({r.json["id"] for r in replies}) == 1
    assert len(workers.started) == 1
    assert sum(1 for _ in emu.store.iter_sessions()) == 1
    assert sum(1 for r in replies if "Idempotent-Replayed" not in r.headers) == 1


async def test_a_replay_after_the_session_ended_returns_it_ended(
    emu: Emulator, http: aiohttp.ClientSession, workers: StandInWorkers
) -> None:
    headers = {"Idempotency-Key": "ended-1"}
    first = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers)
    await call(http, emu, "POST", f"/v1/sessions/{first.json['id']}/end")
    again = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    replayed = Session.model_validate_json(again.text)
    assert (replayed.id, replayed.status.value) == (first.json["id"], "ended")
    assert "secret-worker-jwt" not in again.text
    other = await call(
        http, emu, "POST", "/v1/sessions", json_body=session_body(quality="pro"), headers=headers
    )
    assert_error(other, 409, "conflict", "idempotency_key_reused")
    assert len(workers.started) == 1


async def test_a_body_that_failed_validation_does_not_claim_its_key(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    headers = {"Idempotency-Key": "fix-and-retry"}
    bad = await call(
        http, emu, "POST", "/v1/sessions", json_body=session_body(quality="ultra"), headers=headers
    )
    assert_error(bad, 400, "invalid_request", "invalid_value", "quality")
    good = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers)
    assert good.status == 201 and "Idempotent-Replayed" not in good.headers


async def test_a_create_that_failed_is_not_remembered_under_its_key(
    workers: StandInWorkers,
) -> None:
    async with (
        Emulator(worker_factory=workers, max_concurrency=1) as emu,
        aiohttp.ClientSession() as http,
    ):
        occupant = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
        headers = {"Idempotency-Key": "after-429"}
        refused = await call(
            http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers
        )
        assert_error(refused, 429, "rate_limit", "concurrency_limit_exceeded")
        await call(http, emu, "POST", f"/v1/sessions/{occupant.json['id']}/end")
        retried = await call(
            http, emu, "POST", "/v1/sessions", json_body=session_body(), headers=headers
        )
        assert retried.status == 201
        assert "Idempotent-Replayed" not in retried.headers


async def test_keys_are_scoped_per_api_key(workers: StandInWorkers) -> None:
    # One emulator serves one API key, so the scoping is checked at the store: the
    # same idempotency key under two API keys (scopes) makes two sessions.
    async with Emulator(worker_factory=workers) as emu:
        request = parse_session_create(session_body())
        a, _ = await emu.store.create_session(
            request, idempotency_key="k", idempotency_scope="key-a", fingerprint="f"
        )
        b, _ = await emu.store.create_session(
            request, idempotency_key="k", idempotency_scope="key-b", fingerprint="f"
        )
        a_again, replayed = await emu.store.create_session(
            request, idempotency_key="k", idempotency_scope="key-a", fingerprint="f"
        )
    assert a.id != b.id
    assert a_again.id == a.id and replayed
    assert len(workers.started) == 2


async def test_a_key_is_forgotten_after_its_time_to_live(workers: StandInWorkers) -> None:
    store = Store(workers, StoreConfig(idempotency_ttl_seconds=0.2))
    try:
        request = parse_session_create(session_body())
        first, _ = await store.create_session(request, idempotency_key="k", fingerprint="f")
        again, replayed = await store.create_session(request, idempotency_key="k", fingerprint="f")
        assert (again.id, replayed) == (first.id, True)
        await asyncio.sleep(0.3)
        later, replayed = await store.create_session(request, idempotency_key="k", fingerprint="g")
        assert later.id != first.id and not replayed  # not a 409: the key was forgotten
    finally:
        await store.aclose()

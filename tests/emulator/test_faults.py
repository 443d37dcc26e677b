"""Fault injection: each kind as a client sees it, and the spec/route syntax."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from emulator_helpers import assert_error, call, session_body
from protoface_sdk import InternalError, ProtofaceClient, ProtofaceConnectionError
from standin_worker import StandInWorkers

from protoface_emulator.api.faults import Fault, Faults
from protoface_emulator.api.request_log import RecordedRequest, RequestLog
from protoface_emulator.server import Emulator


async def test_error_fails_the_next_n_requests_with_retry_after(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    fault = emu.faults.add("GET /v1/status", "error", status=503, count=2, retry_after=3)
    for _ in range(2):
        reply = await call(http, emu, "GET", "/v1/status")
        assert_error(reply, 503, "service_unavailable", "service_unavailable")
        assert reply.headers["Retry-After"] == "3"
    assert (await call(http, emu, "GET", "/v1/status")).status == 200
    assert fault.fired == 2 and emu.faults.armed == []


async def test_error_faults_take_a_status_and_code(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.add("POST /v1/sessions", "error", status=429, code="too_many_requests")
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    assert_error(reply, 429, "rate_limit", "too_many_requests")
    assert "Retry-After" not in reply.headers
    assert sum(1 for _ in emu.store.iter_sessions()) == 0  # the API never saw it


async def test_sdk_retries_through_injected_503s_honouring_retry_after(
    emu: Emulator, sdk: ProtofaceClient
) -> None:
    fault = emu.faults.add("GET /v1/status", "error", status=503, count=2, retry_after=0.2)
    status = await asyncio.to_thread(sdk.get_status)
    assert status.status.value == "operational"
    assert fault.fired == 2


async def test_html_is_a_gateway_page_without_an_envelope(
    emu: Emulator, http: aiohttp.ClientSession, sdk: ProtofaceClient
) -> None:
    emu.faults.add("GET /v1/sessions/{id}", "html", status=502, count=2)
    reply = await call(http, emu, "GET", "/v1/sessions/sess_whatever")
    assert reply.status == 502
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "<center>nginx</center>" in reply.text and "502 Bad Gateway" in reply.text
    assert "X-Request-Id" not in reply.headers

    with pytest.raises(InternalError) as raised:
        await asyncio.to_thread(sdk.sessions.get, "sess_whatever")
    assert raised.value.code == "unexpected_response"


async def test_late_creates_the_session_then_answers_after_the_delay(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.add("POST /v1/sessions", "late", delay=2)
    timeout = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            emu.url + "/v1/sessions",
            json=session_body(),
            headers={"Authorization": f"Bearer {emu.api_key}", "Idempotency-Key": "slow-1"},
            timeout=timeout,
        ):
            pass
    [created] = list(emu.store.iter_sessions())  # it exists although the client gave up

    retry = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        json_body=session_body(),
        headers={"Idempotency-Key": "slow-1"},
    )
    assert retry.status == 201 and retry.json["id"] == created.id


async def test_late_answer_arrives_intact(emu: Emulator, http: aiohttp.ClientSession) -> None:
    emu.faults.add("POST /v1/sessions", "late", delay=0.3)
    started = time.monotonic()
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    assert reply.status == 201
    assert time.monotonic() - started >= 0.25
    assert reply.headers["X-Request-Id"].startswith("req_")


@pytest.mark.parametrize(("handled", "sessions"), [(True, 1), (False, 0)])
async def test_drop_closes_the_connection_without_an_answer(
    emu: Emulator, handled: bool, sessions: int
) -> None:
    emu.faults.add("POST /v1/sessions", "drop", handled=handled)

    def create() -> None:
        with ProtofaceClient(emu.api_key, base_url=emu.url, max_retries=0) as client:
            client.sessions.create(session_body())

    with pytest.raises(ProtofaceConnectionError):
        await asyncio.to_thread(create)
    assert sum(1 for _ in emu.store.iter_sessions()) == sessions


async def test_probabilistic_faults_are_reproducible_with_a_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        faults = Faults(seed=seed)
        faults.add("POST /v1/sessions", "late", probability=0.2, delay=1)
        return [faults.draw("POST", "/v1/sessions") is not None for _ in range(500)]

    first, again, other = pattern(7), pattern(7), pattern(8)
    assert first == again
    assert first != other
    assert 50 <= sum(first) <= 150  # about 20 % of 500, and unlimited by default


async def test_probabilistic_faults_in_a_running_emulator(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.seed(1)
    emu.faults.add("GET /v1/status", "error", status=503, probability=0.5)
    statuses = [(await call(http, emu, "GET", "/v1/status")).status for _ in range(40)]
    assert {200, 503} == set(statuses)


@pytest.mark.parametrize(
    ("route", "method", "path", "hit"),
    [
        ("POST /v1/sessions", "POST", "/v1/sessions", True),
        ("POST /v1/sessions", "GET", "/v1/sessions", False),
        ("post /v1/sessions", "POST", "/v1/sessions", True),
        ("POST /v1/sessions/{id}/end", "POST", "/v1/sessions/sess_1/end", True),
        ("POST /v1/sessions/*/end", "POST", "/v1/sessions/sess_1/end", True),
        ("POST /v1/sessions/{id}/end", "POST", "/v1/sessions/sess_1", False),
        ("GET /v1/sessions/sess_1", "GET", "/v1/sessions/sess_2", False),
        ("* /v1/status", "GET", "/v1/status", True),
        ("* *", "DELETE", "/v1/avatars/av_1", True),
        ("*", "GET", "/anything", True),
    ],
)
def test_route_patterns(route: str, method: str, path: str, hit: bool) -> None:
    faults = Faults()
    faults.add(route)
    assert (faults.draw(method, path) is not None) is hit


def test_spec_syntax_arms_the_same_fault_as_add() -> None:
    faults = Faults()
    fault = faults.add_spec(
        "POST /v1/sessions=error,status=429,count=3,retry_after=1.5,code=slow_down,handled=true"
    )
    assert (fault.method, fault.path, fault.kind) == ("POST", ("v1", "sessions"), "error")
    assert (fault.status, fault.remaining, fault.retry_after) == (429, 3, 1.5)
    assert (fault.code, fault.handled) == ("slow_down", True)
    late = faults.add_spec("POST /v1/sessions=late,delay=2,probability=0.25")
    assert (late.delay, late.probability, late.remaining, late.handled) == (2.0, 0.25, None, True)


@pytest.mark.parametrize(
    "spec",
    [
        "POST /v1/sessions",
        "POST /v1/sessions=explode",
        "POST /v1/sessions=error,status",
        "POST /v1/sessions=error,colour=red",
        "POST /v1/sessions=error,status=200",
        "POST /v1/sessions=error,probability=2",
        "POST /v1/sessions=error,count=0",
        "POST /v1/sessions=error,handled=maybe",
        "POST /v1/sessions=error,delay=soon",
        "v1/sessions=error",
    ],
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        Faults().add_spec(spec)


def test_faults_are_off_by_default() -> None:
    faults = Faults()
    assert faults.armed == []
    assert faults.draw("POST", "/v1/sessions") is None


def test_a_probabilistic_fault_that_does_not_fire_leaves_the_next_fault_its_turn() -> None:
    faults = Faults(seed=3)
    faults.add("* *", "late", probability=0.0, delay=1)  # matches, never fires
    counted = faults.add("GET /v1/status", "error", count=2)
    drawn = [faults.draw("GET", "/v1/status") for _ in range(3)]
    assert drawn == [counted, counted, None]


def test_an_encoded_slash_stays_inside_its_path_segment() -> None:
    faults = Faults()
    faults.add("GET /v1/sessions/{id}", count=5)
    assert faults.draw("GET", "/v1/sessions/a%2Fb") is not None
    assert faults.draw("GET", "/v1/sessions/a/b") is None
    assert faults.draw("GET", "/v1/sessions/%73ess_1") is not None  # decoded per segment


async def test_faults_hit_only_the_route_they_target(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    fault = emu.faults.add("POST /v1/sessions", "error", status=503, count=1)
    for method, path in (
        ("GET", "/v1/sessions"),
        ("GET", "/v1/status"),
        ("POST", "/v1/sessions/sess_x/end"),
        ("GET", "/v1/sessions/sess_x"),
    ):
        assert (await call(http, emu, method, path)).status in (200, 404)
    assert fault.fired == 0 and emu.faults.armed == [fault]
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    assert_error(reply, 503, "service_unavailable", "service_unavailable")
    assert (await call(http, emu, "POST", "/v1/sessions", json_body=session_body())).status == 201


async def test_a_fault_on_an_id_route_matches_ids_with_encoded_slashes(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.add("GET /v1/sessions/{id}", "error", status=502, count=1)
    reply = await call(http, emu, "GET", "/v1/sessions/a%2F..")
    assert_error(reply, 502, "internal", "internal_error")
    assert_error(
        await call(http, emu, "GET", "/v1/sessions/a%2F.."), 404, "not_found", "session_not_found"
    )


async def test_probabilistic_faults_repeat_with_the_same_seed_in_an_emulator() -> None:
    async def pattern(seed: int) -> list[int]:
        async with Emulator(worker_factory=StandInWorkers(), fault_seed=seed) as emu:
            emu.faults.add("GET /v1/status", "error", status=503, probability=0.3)
            async with aiohttp.ClientSession() as http:
                return [(await call(http, emu, "GET", "/v1/status")).status for _ in range(30)]

    first = await pattern(11)
    assert first == await pattern(11)
    assert {200, 503} == set(first)


async def test_an_emulator_consults_the_faults_it_is_given(
    workers: StandInWorkers, http: aiohttp.ClientSession
) -> None:
    """A caller's own `Faults` (a subclass that counts, say) is the one the API draws from."""
    drawn: list[str] = []

    class Recording(Faults):
        def draw(self, method: str, path: str) -> Fault | None:
            drawn.append(f"{method} {path}")
            return super().draw(method, path)

    faults = Recording(seed=1)
    async with Emulator(worker_factory=workers, faults=faults) as emu:
        assert emu.faults is faults
        faults.add("GET /v1/status", "error", status=503, count=1)
        reply = await call(http, emu, "GET", "/v1/status")
        assert_error(reply, 503, "service_unavailable", "service_unavailable")
    assert drawn == ["GET /v1/status"]


# --- scripted replies -------------------------------------------------------------------


async def test_a_reply_answers_exactly_what_was_scripted(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.reply("GET /v1/status", 418, json={"detail": "nope"}, headers={"X-Custom": "1"})
    reply = await call(http, emu, "GET", "/v1/status")
    assert reply.status == 418
    assert reply.json == {"detail": "nope"}
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Custom"] == "1"
    assert "X-Request-Id" not in reply.headers  # nothing added to the script
    assert (await call(http, emu, "GET", "/v1/status")).json["status"] == "operational"


@pytest.mark.parametrize(
    ("body", "headers", "content_type", "text"),
    [
        (b"<html>oops</html>", {"Content-Type": "text/html"}, "text/html", "<html>oops</html>"),
        ("", {}, "text/plain; charset=utf-8", ""),
        ('{"id": ', {"Content-Type": "application/json"}, "application/json", '{"id": '),
        ("plain", {}, "text/plain; charset=utf-8", "plain"),
    ],
)
async def test_a_reply_body_goes_out_as_given(
    emu: Emulator,
    http: aiohttp.ClientSession,
    body: bytes | str,
    headers: dict[str, str],
    content_type: str | None,
    text: str,
) -> None:
    emu.faults.reply("POST /v1/sessions", 201, body=body, headers=headers)
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    assert (reply.status, reply.text) == (201, text)
    assert reply.headers.get("Content-Type") == content_type
    assert sum(1 for _ in emu.store.iter_sessions()) == 0  # not handled by default


async def test_a_redirect_can_be_scripted(emu: Emulator, http: aiohttp.ClientSession) -> None:
    emu.faults.reply("POST /v1/sessions", 307, headers={"Location": f"{emu.url}/v1/status"})
    async with http.post(
        emu.url + "/v1/sessions",
        json=session_body(),
        headers={"Authorization": f"Bearer {emu.api_key}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 307
        assert response.headers["Location"] == f"{emu.url}/v1/status"


async def test_replies_on_one_route_fire_in_the_order_they_were_added(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.reply("POST /v1/sessions", 503, json={"n": 1}, headers={"Retry-After": "0"})
    emu.faults.add("POST /v1/sessions", "error", status=502)
    emu.faults.reply("POST /v1/sessions", 500, body="third")
    got = [
        (await call(http, emu, "POST", "/v1/sessions", json_body=session_body())) for _ in range(4)
    ]
    assert [r.status for r in got] == [503, 502, 500, 201]
    assert got[0].json == {"n": 1} and got[0].headers["Retry-After"] == "0"
    assert got[2].text == "third"
    assert [s.id for s in emu.store.iter_sessions()] == [got[3].json["id"]]


async def test_a_handled_reply_replaces_the_answer_of_a_create_that_happened(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """The server created the session but the client only saw a 503: the orphan case."""
    emu.faults.reply("POST /v1/sessions", 503, json={"error": "busy"}, handled=True)
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    assert reply.status == 503 and reply.json == {"error": "busy"}
    [created] = emu.store.iter_sessions()
    assert created.status in ("queued", "starting", "running")


async def test_a_reply_waits_its_delay(emu: Emulator, http: aiohttp.ClientSession) -> None:
    emu.faults.reply("GET /v1/status", 200, json={"late": True}, delay=0.3)
    started = time.monotonic()
    reply = await call(http, emu, "GET", "/v1/status")
    assert reply.json == {"late": True}
    assert time.monotonic() - started >= 0.25


async def test_extra_headers_go_on_every_kind_of_answer(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.add("GET /v1/status", "error", status=429, headers={"X-RateLimit-Reset": "9"})
    emu.faults.add("GET /v1/status", "late", delay=0.01, headers={"Location": "/x"})
    limited = await call(http, emu, "GET", "/v1/status")
    assert_error(limited, 429, "rate_limit", "too_many_requests")
    assert limited.headers["X-RateLimit-Reset"] == "9"
    late = await call(http, emu, "GET", "/v1/status")
    assert late.status == 200 and late.headers["Location"] == "/x"


async def test_a_probabilistic_reply_fires_on_some_requests(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.seed(5)
    emu.faults.reply("GET /v1/status", 500, body="flaky", probability=0.5)
    statuses = [(await call(http, emu, "GET", "/v1/status")).status for _ in range(30)]
    assert set(statuses) == {200, 500}


def test_the_spec_syntax_scripts_a_reply() -> None:
    fault = Faults().add_spec(
        "GET /v1/status=reply,status=200,body=%7B%22a%22%3A 1%7D,"
        "header=Content-Type:application/json,header=X-Seen:a%2Cb"
    )
    assert (fault.kind, fault.status, fault.body) == ("reply", 200, b'{"a": 1}')
    assert fault.headers == {"Content-Type": "application/json", "X-Seen": "a,b"}


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("error", {"body": "x"}),
        ("late", {"json": {"a": 1}}),
        ("reply", {"body": "x", "json": {"a": 1}}),
        ("reply", {"status": 101}),
        ("reply", {"status": 600}),
    ],
)
def test_bad_replies_are_refused(kind: str, options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Faults().add("GET /v1/status", kind, **options)  # type: ignore[arg-type]


def test_a_bad_header_option_is_refused() -> None:
    with pytest.raises(ValueError, match="Name:Value"):
        Faults().add_spec("GET /v1/status=reply,header=nocolon")


# --- the request log -------------------------------------------------------------------


async def test_the_log_records_each_request_with_its_headers_body_and_answer(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    body = session_body(quality="lite")
    for key in ("key-1", "key-1"):
        await call(
            http, emu, "POST", "/v1/sessions", json_body=body, headers={"Idempotency-Key": key}
        )
    await call(http, emu, "GET", "/v1/sessions?limit=2&status=running")
    creates = emu.requests.matching("POST /v1/sessions")
    assert [r.headers["idempotency-key"] for r in creates] == ["key-1", "key-1"]
    assert [r.json() for r in creates] == [body, body]
    assert [r.status for r in creates] == [201, 201]
    assert all(r.request_id.startswith("req_") for r in creates)
    [listing] = emu.requests.matching("GET /v1/sessions")
    assert listing.query.getall("status") == ["running"] and listing.query["limit"] == "2"
    assert listing.body == b"" and listing.json() is None
    assert [r.method for r in emu.requests] == ["POST", "POST", "GET"]
    assert [r.route for r in emu.requests] == ["/v1/sessions"] * 3
    assert creates[0].arrived_at <= creates[0].answered_at <= creates[1].arrived_at  # type: ignore[operator]


async def test_the_log_keeps_the_body_of_a_request_a_fault_answered(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """Retries answered 503 before the API ran still show what the client sent."""
    fault = emu.faults.add("POST /v1/sessions", "error", status=503, count=2)
    for _ in range(3):
        await call(
            http,
            emu,
            "POST",
            "/v1/sessions",
            json_body=session_body(),
            headers={"Idempotency-Key": "same"},
        )
    creates = emu.requests.matching("POST /v1/sessions")
    assert [r.status for r in creates] == [503, 503, 201]
    assert [r.fault for r in creates] == [fault, fault, None]
    assert all(r.json() == session_body() for r in creates)
    assert {r.headers["Idempotency-Key"] for r in creates} == {"same"}


async def test_a_dropped_request_is_logged_without_a_status(emu: Emulator) -> None:
    emu.faults.add("POST /v1/sessions", "drop", handled=False)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    [dropped] = await emu.requests.wait_for("POST /v1/sessions", answered=True)
    assert dropped.status is None and dropped.json() == session_body()


async def test_the_log_records_requests_refused_before_the_body_was_read(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    await call(http, emu, "POST", "/v1/sessions", json_body=session_body(), auth=False)
    await call(http, emu, "GET", "/v1/nowhere")
    refused, nowhere = emu.requests.matching("* *")
    assert refused.status == 401 and refused.body is None
    assert refused.route == "/v1/sessions" and nowhere.route is None
    assert "Authorization" not in refused.headers


async def test_wait_for_returns_once_enough_requests_arrived(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.add("GET /v1/sessions/sess_a", "late", delay=0.5)
    waiting = asyncio.ensure_future(emu.requests.wait_for("GET /v1/sessions/{id}", count=2))
    await call(http, emu, "GET", "/v1/status")
    await asyncio.sleep(0.05)
    assert not waiting.done()
    slow = asyncio.ensure_future(call(http, emu, "GET", "/v1/sessions/sess_a"))
    await call(http, emu, "GET", "/v1/sessions/sess_b")
    arrived = await asyncio.wait_for(waiting, 5)
    assert {r.path for r in arrived} == {"/v1/sessions/sess_a", "/v1/sessions/sess_b"}
    assert not slow.done()  # arrival counts, not the (late) answer
    await slow


async def test_wait_for_says_what_arrived_when_it_times_out(emu: Emulator) -> None:
    with pytest.raises(TimeoutError, match="0 arrived"):
        await emu.requests.wait_for("POST /v1/sessions", timeout=0.1)


async def test_the_log_can_be_cleared_and_is_bounded(
    workers: StandInWorkers, http: aiohttp.ClientSession
) -> None:
    async with Emulator(worker_factory=workers) as emu:
        emu.requests.clear()
        await call(http, emu, "GET", "/v1/status")
        assert len(emu.requests) == 1
        emu.requests.clear()
        assert emu.requests.all() == []
    log = RequestLog(max_entries=2)
    for n in range(3):
        log.record("GET", f"/v1/sessions/s{n}", {}, {}, f"req_{n}")
    assert [r.path for r in log] == ["/v1/sessions/s1", "/v1/sessions/s2"]


async def test_a_reply_can_echo_the_request_it_answers(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """A careless server quoting the caller's key and body back in its error."""

    def echo(request: RecordedRequest) -> object:
        sent = (request.body or b"").decode()
        return {"error": {"message": f"rejected {request.headers['Authorization']} {sent}"}}

    emu.faults.reply("POST /v1/sessions", 400, json=echo, count=2)
    emu.faults.reply("GET /v1/status", 500, body=lambda request: request.request_id)
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    assert reply.status == 400 and reply.headers["Content-Type"] == "application/json"
    assert emu.api_key in reply.json["error"]["message"]
    assert "secret-worker-jwt" in reply.json["error"]["message"]
    status = await call(http, emu, "GET", "/v1/status")
    assert status.text == emu.requests.matching("GET /v1/status")[0].request_id


async def test_an_empty_reply_carries_no_content_type(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.reply("GET /v1/status", 500)
    reply = await call(http, emu, "GET", "/v1/status")
    assert (reply.status, reply.text) == (500, "")
    assert "Content-Type" not in reply.headers


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [(418, "invalid_request", "injected_fault"), (408, "invalid_request", "injected_fault")],
)
async def test_an_error_fault_with_an_unusual_status_still_has_an_envelope(
    emu: Emulator, http: aiohttp.ClientSession, status: int, error_type: str, code: str
) -> None:
    emu.faults.add("GET /v1/status", "error", status=status)
    assert_error(await call(http, emu, "GET", "/v1/status"), status, error_type, code)


async def test_an_html_page_can_carry_retry_after(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.add("GET /v1/status", "html", status=503, retry_after=2)
    reply = await call(http, emu, "GET", "/v1/status")
    assert reply.status == 503 and reply.headers["Retry-After"] == "2"
    assert "<title>503 Service Unavailable</title>" in reply.text


async def test_wait_for_answered_waits_for_the_answer_not_the_arrival(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.add("GET /v1/status", "late", delay=0.6)
    slow = asyncio.ensure_future(call(http, emu, "GET", "/v1/status"))
    [arrived] = await emu.requests.wait_for("GET /v1/status")
    assert arrived.status is None  # in flight
    with pytest.raises(TimeoutError):
        await emu.requests.wait_for("GET /v1/status", answered=True, timeout=0.2)
    [answered] = await emu.requests.wait_for("GET /v1/status", answered=True, timeout=5)
    assert answered is arrived and answered.status == 200
    await slow


@pytest.mark.parametrize(
    ("flag", "handled"), [("yes", True), ("1", True), ("no", False), ("0", False)]
)
def test_the_spec_reads_handled_flags(flag: str, handled: bool) -> None:
    assert Faults().add_spec(f"POST /v1/sessions=error,handled={flag}").handled is handled


async def test_a_late_fault_that_holds_the_request_back_still_creates(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """handled=False: nothing exists until the delay is over, then the real answer."""
    emu.faults.add("POST /v1/sessions", "late", delay=0.3, handled=False)
    pending = asyncio.ensure_future(
        call(http, emu, "POST", "/v1/sessions", json_body=session_body())
    )
    await emu.requests.wait_for("POST /v1/sessions")
    assert not list(emu.store.iter_sessions())
    reply = await pending
    assert reply.status == 201, reply.text
    [logged] = emu.requests.matching("POST /v1/sessions")
    assert logged.json() == session_body()

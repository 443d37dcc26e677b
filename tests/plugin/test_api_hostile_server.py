"""A broken or hostile server: malformed HTTP, redirects, huge or deep bodies, trickles.

Each test runs a real server on loopback, the emulator with a scripted reply, or
`raw_http.RawServer` where an HTTP server cannot produce the reply (a broken
status line or header, bytes trickled or endless, a Content-Length that lies, a
connection cut mid-body) or the test counts connections, and checks what the
client does with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, APITimeoutError

from livekit.plugins.protoface import ProtofaceAPIError
from livekit.plugins.protoface.api import MAX_RESPONSE_BYTES, ProtofaceAPI
from protoface_emulator import Emulator

from .helpers import API_KEY, CREATE, LIVEKIT_URL, STATUS, LogCapture, envelope
from .raw_http import RawRequest, raw_server, response

TRANSPORT = {
    "type": "livekit",
    "url": LIVEKIT_URL,
    "room_name": "room-1",
    "worker_token": "worker.jwt.token",
}
CONN = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=2.0)
STATUS_OK = response(
    200, b'{"status": "operational"}', headers={"Content-Type": "application/json"}
)


def chain_text(error: BaseException) -> str:
    """str and repr of an exception and of every cause and context behind it."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(getattr(current, "body", None))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT-HTTP " + API_KEY.encode() + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line " + API_KEY.encode() + b"\r\n\r\n",
    ],
    ids=["bad-status-line", "bad-header"],
)
async def test_malformed_response_echoing_the_key_does_not_leak_it(
    garbage: bytes, all_logs: LogCapture
) -> None:
    """aiohttp quotes the bad bytes, and keeps the request headers, in its exception."""

    async def respond(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(garbage)
        await writer.drain()
        writer.close()

    async with (
        raw_server(respond) as server,
        ProtofaceAPI(api_key=API_KEY, api_url=server.url, conn_options=CONN) as api,
    ):
        with pytest.raises(APIConnectionError) as info:
            await api.get_status()

    assert len(server.requests) == 3  # a network-level failure: retried
    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    text = chain_text(info.value)
    assert "[redacted]" in text
    assert API_KEY not in text
    assert API_KEY not in all_logs.text()


async def test_redirects_are_not_followed(emu: Emulator) -> None:
    """Following one would resend the bearer key, or turn the create into a GET."""
    emu.faults.reply(CREATE, 307, headers={"Location": f"{emu.url}/v1/status"})
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    assert [(r.method, r.path) for r in emu.requests] == [("POST", "/v1/sessions")]
    assert info.value.status_code == 307
    assert info.value.retryable is False
    assert "redirect" in info.value.message
    assert "/v1/status" in info.value.message
    assert "api_url" in info.value.message


async def test_redirect_loop_is_one_request_and_leaks_nothing(emu: Emulator) -> None:
    emu.faults.reply(STATUS, 302, headers={"Location": "/v1/status"}, count=10)
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert len(emu.requests) == 1
    assert API_KEY not in chain_text(info.value)


@pytest.mark.parametrize("status", [200, 500])
async def test_oversized_body_is_refused_without_reading_it_all(status: int) -> None:
    sent = 0

    async def respond(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        # Chunked and endless enough: 64 MiB that a client must not buffer.
        writer.write(
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"x" * (1024 * 1024)
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        for _ in range(64):
            writer.write(frame)
            sent += len(chunk)
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    no_retry = APIConnectOptions(max_retry=0, retry_interval=0.0, timeout=30.0)
    async with (
        raw_server(respond) as server,
        ProtofaceAPI(api_key=API_KEY, api_url=server.url, conn_options=no_retry) as api,
    ):
        with pytest.raises((ProtofaceAPIError, APIConnectionError)) as info:
            await api.get_status()

    error = info.value
    cause = error.__cause__ if status == 500 else error
    assert isinstance(cause, ProtofaceAPIError)
    assert cause.status_code == status
    assert "larger than" in cause.message
    assert cause.body is None
    assert len(str(error)) < 1000
    assert MAX_RESPONSE_BYTES < 64 * 1024 * 1024


async def test_oversized_content_length_is_refused_at_once() -> None:
    async def respond(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n{")
        await writer.drain()

    async with (
        raw_server(respond) as server,
        ProtofaceAPI(api_key=API_KEY, api_url=server.url, conn_options=CONN) as api,
    ):
        with pytest.raises(ProtofaceAPIError, match="larger than") as info:
            await asyncio.wait_for(api.get_status(), timeout=10)

    assert info.value.retryable is False
    assert len(server.requests) == 1


async def test_enormous_error_envelope_gives_a_short_error(emu: Emulator) -> None:
    huge = envelope(
        "invalid_request",
        "c" * 100_000,
        "m" * 1_000_000 + API_KEY,
        request_id="r" * 100_000,
        param="p" * 100_000,
    )
    emu.faults.reply(STATUS, 400, json=huge)
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    error = info.value
    assert len(error.message) < 1500
    assert len(str(error)) < 3000
    assert len(repr(error)) < 3000
    assert error.code is not None and error.code.startswith("ccc") and len(error.code) <= 200
    assert error.request_id is not None and len(error.request_id) <= 200
    assert API_KEY not in chain_text(error)


async def test_secret_straddling_the_excerpt_boundary_is_redacted(emu: Emulator) -> None:
    """Clipping first would leave half of the key in the excerpt."""
    page = "<html>" + "x" * 480 + API_KEY + "</html>"
    emu.faults.reply(STATUS, 403, body=page, headers={"Content-Type": "text/html"})
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert isinstance(info.value.body, str)
    assert API_KEY[:12] not in info.value.body
    assert API_KEY[:12] not in chain_text(info.value)


async def test_secret_straddling_a_quoted_fields_limit_is_redacted(emu: Emulator) -> None:
    """The envelope's message (300 characters quoted) and the X-Request-Id header (200)
    end in the key, past their limits: clipping before redacting would quote its
    first half (the header has no other redaction; the body is redacted whole too)."""
    body = {"error": {"type": "invalid_request", "code": "bad", "message": "m" * 280 + API_KEY}}
    emu.faults.reply(STATUS, 400, json=body, headers={"X-Request-Id": "r" * 180 + API_KEY})
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    error = info.value
    assert "m" * 280 + "[redacted]" in error.message
    assert error.request_id == "r" * 180 + "[redacted]"
    assert API_KEY[:8] not in chain_text(error)


async def test_control_characters_from_the_server_cannot_forge_log_lines(
    emu: Emulator,
) -> None:
    forged = "oops\nINFO livekit.plugins.protoface all good"
    emu.faults.reply(STATUS, 400, json=envelope("x", "bad", forged))
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert "\n" not in info.value.message
    assert "all good" in info.value.message


@pytest.mark.parametrize("status", [200, 400])
async def test_deeply_nested_json_is_an_unusable_body_not_a_crash(
    emu: Emulator, status: int
) -> None:
    """100 000 levels of `[` made the decoder raise RecursionError out of the client."""
    body = '{"error": ' + "[" * 100_000 + "]" * 100_000 + "}"
    emu.faults.reply(STATUS, status, body=body, headers={"Content-Type": "application/json"})
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert info.value.status_code == status
    assert info.value.retryable is False
    assert len(emu.requests) == 1


async def test_nesting_the_decoder_accepts_is_returned_whole(emu: Emulator) -> None:
    """Redacting a deep (but decodable) body once overflowed the stack."""
    body = '{"status": "operational", "deep": ' + "[" * 900 + "]" * 900 + "}"
    emu.faults.reply(STATUS, body=body, headers={"Content-Type": "application/json"})
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        status = await api.get_status()

    assert status["status"] == "operational"


async def test_timeout_is_per_attempt_even_while_bytes_trickle_in() -> None:
    """A server that keeps the socket busy with one byte at a time still times out."""

    async def respond(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        body = b'{"status": "operational"}'
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    conn = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=0.5)
    loop = asyncio.get_running_loop()
    async with (
        raw_server(respond) as server,
        ProtofaceAPI(api_key=API_KEY, api_url=server.url, conn_options=conn) as api,
    ):
        started = loop.time()
        with pytest.raises(APIConnectionError) as info:
            await api.get_status()
        elapsed = loop.time() - started

    assert isinstance(info.value.__cause__, APITimeoutError)
    assert len(server.requests) == 2
    assert elapsed < 4  # two bounded attempts, not 5 s of trickle each


@pytest.mark.parametrize(
    "first_answer",
    ["close-before-headers", "reset-mid-body", "truncated-content-length"],
)
async def test_create_retried_after_a_broken_answer_reuses_the_key(first_answer: str) -> None:
    async def respond(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        if request.number == 1:
            if first_answer == "reset-mid-body":
                writer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 200\r\n\r\n{"id": ')
                await writer.drain()
                writer.transport.abort()
            elif first_answer == "truncated-content-length":
                writer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 200\r\n\r\n{"id": ')
                await writer.drain()
                writer.close()
            else:
                writer.close()
            return
        writer.write(response(201, json.dumps({"object": "session", "id": "sess_1"}).encode()))

    async with (
        raw_server(respond) as server,
        ProtofaceAPI(api_key=API_KEY, api_url=server.url, conn_options=CONN) as api,
    ):
        session = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    assert session["id"] == "sess_1"
    keys = {r.headers["idempotency-key"] for r in server.requests}
    assert len(server.requests) == 2
    assert len(keys) == 1


@pytest.mark.parametrize("retry_after", ["-5", "soon", "1e400", "nan", ""])
async def test_unusable_retry_after_falls_back_to_backoff(
    emu: Emulator, retry_after: str, caplog: pytest.LogCaptureFixture
) -> None:
    emu.faults.reply(
        STATUS, 429, json=envelope("rate_limit", "slow"), headers={"Retry-After": retry_after}
    )
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with caplog.at_level(logging.WARNING, logger="livekit.plugins.protoface"):
            status = await asyncio.wait_for(api.get_status(), timeout=10)

    assert status["status"] == "operational"
    assert len(emu.requests) == 2
    # The first backoff step (jittered over 0.1-0.6 s), not the header.
    waits = [float(w) for w in re.findall(r"retrying in ([0-9.]+)s", caplog.text)]
    assert len(waits) == 1 and 0.1 <= waits[0] <= 0.6, caplog.text


async def test_fractional_retry_after_is_honoured(emu: Emulator) -> None:
    emu.faults.reply(
        STATUS, 503, json=envelope("service_unavailable", "x"), headers={"Retry-After": "0.6"}
    )
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        await api.get_status()

    first, second = emu.requests.all()
    assert second.arrived_at - first.arrived_at >= 0.5


async def test_sequential_calls_reuse_one_connection() -> None:
    """On the raw server, which counts the connections it accepted."""

    async def respond(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(STATUS_OK)

    async with (
        raw_server(respond) as server,
        ProtofaceAPI(api_key=API_KEY, api_url=server.url, conn_options=CONN) as api,
    ):
        for _ in range(3):
            assert (await api.get_status())["status"] == "operational"

    assert server.connections == 1


async def test_non_utf8_error_body_is_kept_as_a_readable_excerpt(emu: Emulator) -> None:
    body = b"\xff\xfe\xfa not utf-8 " + API_KEY.encode()
    emu.faults.reply(STATUS, 400, body=body, headers={"Content-Type": "application/json"})
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=CONN) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert "not JSON" in info.value.message
    assert isinstance(info.value.body, str) and "not utf-8 [redacted]" in info.value.body

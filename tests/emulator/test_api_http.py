"""HTTP-level hostility: raw requests no client library sends, answered with envelopes.

Authentication before routing, `Expect: 100-continue` decided on the headers alone,
and what aiohttp would otherwise answer in plain text before the API ever runs.
"""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest
from emulator_helpers import PNG, assert_error, call, exchange, raw_reply, session_body

from protoface_emulator.api.app import Api
from protoface_emulator.api.urls import ROUTES
from protoface_emulator.server import Emulator


def _request(
    emu: Emulator, method: str, path: str, *headers: str, key: bool = True, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: emulator", "Connection: close", *headers]
    if key:
        lines.append(f"Authorization: Bearer {emu.api_key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- authentication comes first under /v1 -------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/v1"),
        ("DELETE", "/v1/status"),
        ("OPTIONS", "/v1/sessions"),
        ("GET", "/v1/sessions/sess_x/end"),
    ],
)
async def test_without_a_key_unknown_v1_routes_and_methods_are_401(
    emu: Emulator, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    # Nothing about the API, not even which routes exist, is told to a caller without
    # the key; with it, the same requests get their 404/405.
    reply = await call(http, emu, method, path, auth=False)
    assert_error(reply, 401, "authentication", "missing_api_key")
    assert (await call(http, emu, method, path)).status in (404, 405)


@pytest.mark.parametrize("path", ["/", "/v2/sessions", "/v10/status", "/favicon.ico"])
async def test_paths_outside_v1_are_404_without_a_key(
    emu: Emulator, http: aiohttp.ClientSession, path: str
) -> None:
    assert_error(
        await call(http, emu, "GET", path, auth=False), 404, "not_found", "route_not_found"
    )


async def test_two_authorization_headers_are_refused_even_if_one_is_right(emu: Emulator) -> None:
    for second in (f"Bearer {emu.api_key}", "Bearer wrong"):
        raw = await exchange(
            emu, _request(emu, "GET", "/v1/status", f"Authorization: {second}"), timeout=10
        )
        assert_error(raw_reply(raw), 401, "authentication", "invalid_api_key")


async def test_bearer_credentials_may_follow_several_spaces(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    # RFC 9110: the scheme and the credentials are separated by 1*SP.
    headers = {"Authorization": f"Bearer   {emu.api_key}"}
    assert (await call(http, emu, "GET", "/v1/status", auth=False, headers=headers)).status == 200


@pytest.mark.parametrize(
    "key_suffix", ["x", "", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]
)
async def test_keys_of_another_length_are_invalid(
    emu: Emulator, http: aiohttp.ClientSession, key_suffix: str
) -> None:
    key = emu.api_key[:-3] + key_suffix
    headers = {"Authorization": f"Bearer {key}"}
    reply = await call(http, emu, "GET", "/v1/status", auth=False, headers=headers)
    assert_error(reply, 401, "authentication", "invalid_api_key")


async def test_the_key_as_a_query_parameter_does_not_authenticate(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    reply = await call(http, emu, "GET", f"/v1/status?api_key={emu.api_key}", auth=False)
    assert_error(reply, 401, "authentication", "missing_api_key")


# --- Expect: 100-continue -------------------------------------------------------------


async def test_expect_continue_over_the_limit_is_413_without_inviting_the_body(
    emu: Emulator,
) -> None:
    raw = await exchange(
        emu,
        _request(
            emu,
            "POST",
            "/v1/sessions",
            "Content-Type: application/json",
            "Expect: 100-continue",
            "Content-Length: 65537",
        ),
    )
    assert not raw.startswith(b"HTTP/1.1 100")
    assert_error(raw_reply(raw), 413, "invalid_request", "request_too_large")


async def test_expect_continue_without_a_key_is_401_without_inviting_the_body(
    emu: Emulator,
) -> None:
    for path in ("/v1/sessions", "/v1/nope"):
        raw = await exchange(
            emu,
            _request(emu, "POST", path, "Expect: 100-continue", "Content-Length: 10", key=False),
        )
        assert not raw.startswith(b"HTTP/1.1 100")
        assert_error(raw_reply(raw), 401, "authentication", "missing_api_key")


async def test_expect_continue_within_the_limits_invites_the_body(emu: Emulator) -> None:
    body = b'{"avatar_id": "av_stock_001"}'
    raw = await exchange(
        emu,
        _request(
            emu,
            "POST",
            "/v1/sessions",
            "Content-Type: application/json",
            "Expect: 100-continue",
            f"Content-Length: {len(body)}",
            body=body,
        ),
    )
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert_error(raw_reply(raw), 400, "invalid_request", "missing_field", "transport")


async def test_an_upload_may_announce_more_than_a_json_body(emu: Emulator) -> None:
    headers = ("Content-Type: multipart/form-data; boundary=b", "Expect: 100-continue")
    # Under the upload limit: invited (the body is then never sent; do not wait long).
    raw = await exchange(
        emu, _request(emu, "POST", "/v1/avatars", *headers, "Content-Length: 1000000"), timeout=1
    )
    assert raw.startswith(b"HTTP/1.1 100 Continue")
    raw = await exchange(
        emu, _request(emu, "POST", "/v1/avatars", *headers, "Content-Length: 20000000")
    )
    assert_error(raw_reply(raw), 413, "invalid_request", "request_too_large")


@pytest.mark.parametrize("path", ["/v1/sessions", "/elsewhere"])
async def test_an_unknown_expectation_is_a_417_envelope(emu: Emulator, path: str) -> None:
    raw = await exchange(
        emu,
        _request(
            emu,
            "POST",
            path,
            "Content-Type: application/json",
            "Expect: teapot",
            "Content-Length: 2",
            body=b"{}",
        ),
    )
    assert_error(raw_reply(raw), 417, "invalid_request", "expectation_failed")


# --- body limits and encodings ----------------------------------------------------------


async def test_the_body_limit_is_inclusive(emu: Emulator) -> None:
    for size, status in ((64 * 1024, 400), (64 * 1024 + 1, 413)):
        body = b"{" + b" " * (size - 2) + b"}"
        raw = await exchange(
            emu,
            _request(
                emu,
                "POST",
                "/v1/sessions",
                "Content-Type: application/json",
                f"Content-Length: {size}",
                body=body,
            ),
        )
        reply = raw_reply(raw)
        code = "missing_field" if status == 400 else "request_too_large"
        assert_error(reply, status, "invalid_request", code, "avatar_id" if status == 400 else None)


@pytest.mark.parametrize("encoding", ["compress", "x-unknown", "gzip, gzip"])
async def test_content_encodings_the_emulator_cannot_decode_are_415(
    emu: Emulator, http: aiohttp.ClientSession, encoding: str
) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    reply = await call(
        http, emu, "POST", "/v1/sessions", data=b'{"avatar_id": "x"}', headers=headers
    )
    assert_error(reply, 415, "invalid_request", "unsupported_media_type")


async def test_identity_content_encoding_is_plain(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    body = json.dumps(session_body())
    reply = await call(http, emu, "POST", "/v1/sessions", data=body, headers=headers)
    assert reply.status == 201, reply.text


async def test_malformed_http_is_logged_in_one_line_without_a_traceback(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = await exchange(
        emu,
        _request(emu, "GET", "/v1/status", "Content-Type: a/b", "Content-Type: c/d"),
    )
    assert_error(raw_reply(raw), 400, "invalid_request", "malformed_http_request")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("malformed request" in r.getMessage() for r in caplog.records)


# --- what aiohttp would answer itself -----------------------------------------------------


async def test_a_header_longer_than_the_server_reads_is_an_envelope(emu: Emulator) -> None:
    # aiohttp refuses it while parsing, before any handler; a client still gets JSON.
    raw = await exchange(emu, _request(emu, "GET", "/v1/status", "X-Long: " + "a" * 70_000))
    assert_error(raw_reply(raw), 400, "invalid_request", "malformed_http_request")


async def test_a_long_header_within_the_limit_reaches_the_api(emu: Emulator) -> None:
    # aiohttp's default (8 KiB) would refuse this as malformed; the API answers it.
    raw = await exchange(emu, _request(emu, "GET", "/v1/status", "X-Long: " + "a" * 20_000))
    assert raw_reply(raw).status == 200


async def test_broken_chunked_framing_is_invalid_body(emu: Emulator) -> None:
    raw = await exchange(
        emu,
        _request(
            emu,
            "POST",
            "/v1/sessions",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
            body=b"zz\r\n{}\r\n0\r\n\r\n",
        ),
    )
    # The parser rejects the chunk size before the API reads the body.
    assert_error(raw_reply(raw), 400, "invalid_request", "malformed_http_request")


async def test_a_wrong_method_is_405_with_allow(emu: Emulator, http: aiohttp.ClientSession) -> None:
    reply = await call(http, emu, "PUT", "/v1/sessions/sess_x")
    assert_error(reply, 405, "invalid_request", "method_not_allowed")
    assert reply.headers["Allow"] == "GET, HEAD"
    reply = await call(http, emu, "DELETE", "/v1/sessions")
    assert reply.headers["Allow"] == "GET, HEAD, POST"


async def test_head_answers_like_get_without_a_body(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    reply = await call(http, emu, "HEAD", "/v1/status")
    assert reply.status == 200 and reply.text == ""
    assert reply.headers["X-Request-Id"].startswith("req_")


async def test_expect_on_http_1_0_is_ignored(emu: Emulator) -> None:
    body = b"{}"
    request = (
        "POST /v1/sessions/sess_x/end HTTP/1.0\r\nHost: e\r\n"
        f"Authorization: Bearer {emu.api_key}\r\nExpect: teapot\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    raw = await exchange(emu, request)
    assert not raw.startswith(b"HTTP/1.1 100")
    assert_error(raw_reply(raw), 404, "not_found", "session_not_found")


def test_every_route_in_the_table_has_a_documented_handler() -> None:
    for endpoint in ROUTES:
        handler = getattr(Api, endpoint.handler, None)
        assert callable(handler), endpoint
        assert endpoint.path in (handler.__doc__ or ""), endpoint


async def test_the_body_limit_holds_for_chunked_bodies_too(emu: Emulator) -> None:
    # No Content-Length to refuse up front: the limit is counted while reading.
    for size, status in ((64 * 1024, 400), (64 * 1024 + 1, 413)):
        body = b"{" + b" " * (size - 2) + b"}"
        chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        raw = await exchange(
            emu,
            _request(
                emu,
                "POST",
                "/v1/sessions",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
                body=chunked,
            ),
        )
        code = "missing_field" if status == 400 else "request_too_large"
        assert_error(
            raw_reply(raw), status, "invalid_request", code, "avatar_id" if status == 400 else None
        )


async def test_an_upload_without_a_declared_length_is_cut_at_the_limit(emu: Emulator) -> None:
    image = PNG + b"\x00" * (10 * 1024 * 1024)
    form = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        + image
        + b"\r\n--b--\r\n"
    )
    chunked = f"{len(form):x}\r\n".encode() + form + b"\r\n0\r\n\r\n"
    raw = await exchange(
        emu,
        _request(
            emu,
            "POST",
            "/v1/avatars",
            "Content-Type: multipart/form-data; boundary=b",
            "Transfer-Encoding: chunked",
            body=chunked,
        ),
        timeout=30,
    )
    assert_error(raw_reply(raw), 413, "invalid_request", "request_too_large")


async def test_a_refused_expectation_closes_the_connection(emu: Emulator) -> None:
    # The client never sends the body it announced; the connection cannot be reused
    # without mistaking whatever comes next for that body.
    request = (
        b"POST /v1/sessions HTTP/1.1\r\nHost: e\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
    )
    reply = raw_reply(await exchange(emu, request))
    assert_error(reply, 401, "authentication", "missing_api_key")
    assert reply.headers["Connection"].lower() == "close"


async def test_a_request_for_the_server_itself_is_a_404_envelope(emu: Emulator) -> None:
    raw = await exchange(emu, _request(emu, "OPTIONS", "*"))
    assert_error(raw_reply(raw), 404, "not_found", "route_not_found")

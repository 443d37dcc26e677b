"""Every class of bad request gets the error envelope, with the right status, type,
code and dot-path param, and an X-Request-Id header equal to its request_id."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
import pytest
import yarl
from emulator_helpers import (
    PNG,
    Reply,
    assert_error,
    call,
    exchange,
    raw_reply,
    session_body,
    with_transport,
)
from protoface_sdk._generated import ApiErrorEnvelope, Session

from protoface_emulator.server import Emulator

ROUTES = [
    ("GET", "/v1/status"),
    ("GET", "/v1/billing/plans"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/avatars"),
    ("POST", "/v1/avatars"),
    ("GET", "/v1/avatars/av_stock_001"),
    ("DELETE", "/v1/avatars/av_stock_001"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions/sess_x"),
    ("POST", "/v1/sessions/sess_x/end"),
    ("POST", "/v1/pipecat/sessions"),
]


# --- authentication ---------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_v1_route_requires_the_bearer_key(
    emu: Emulator, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    missing = await call(http, emu, method, path, auth=False)
    assert_error(missing, 401, "authentication", "missing_api_key")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")

    wrong = await call(http, emu, method, path, auth=False, headers={"Authorization": "Bearer x"})
    assert_error(wrong, 401, "authentication", "invalid_api_key")


@pytest.mark.parametrize(
    "header",
    ["Basic {key}", "Bearer{key}", "bearer {key}x", "Bearer", "Token {key}", "Bearer ünïcode"],
)
async def test_malformed_authorization_headers_are_rejected(
    emu: Emulator, http: aiohttp.ClientSession, header: str
) -> None:
    reply = await call(
        http,
        emu,
        "GET",
        "/v1/status",
        auth=False,
        headers={"Authorization": header.format(key=emu.api_key)},
    )
    assert_error(reply, 401, "authentication", "invalid_api_key")


async def test_bearer_scheme_is_case_insensitive(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    reply = await call(
        http,
        emu,
        "GET",
        "/v1/status",
        auth=False,
        headers={"Authorization": f"bearer {emu.api_key}"},
    )
    assert reply.status == 200


# --- session create: shape ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (session_body(foo=1), "unknown_field", "foo"),
        (with_transport(foo=1), "unknown_field", "transport.foo"),
        (with_transport(api_secret="s"), "unknown_field", "transport.api_secret"),
        ({"transport": session_body()["transport"]}, "missing_field", "avatar_id"),
        ({"avatar_id": "av_stock_001"}, "missing_field", "transport"),
        (with_transport(type=None), "invalid_value", "transport.type"),
        (with_transport(url=None), "invalid_type", "transport.url"),
        (with_transport(worker_token=""), "invalid_value", "transport.worker_token"),
        (with_transport(room_name=7), "invalid_type", "transport.room_name"),
        (with_transport(url="ftp://x"), "invalid_value", "transport.url"),
        (with_transport(url="wss://"), "invalid_value", "transport.url"),
        (with_transport(url="wss://:7880"), "invalid_value", "transport.url"),
        (with_transport(url="wss://a b.livekit.cloud"), "invalid_value", "transport.url"),
        (with_transport(url="wss://x.livekit.cloud:99999"), "invalid_value", "transport.url"),
        (with_transport(url="wss://[::1"), "invalid_value", "transport.url"),
        (with_transport(room_name="room\x00"), "invalid_value", "transport.room_name"),
        (with_transport(worker_token="jwt\r\nX: y"), "invalid_value", "transport.worker_token"),
        (with_transport(worker_identity="a\tb"), "invalid_value", "transport.worker_identity"),
        (
            with_transport(subscribe_to_identity="\x7f"),
            "invalid_value",
            "transport.subscribe_to_identity",
        ),
        (with_transport(foo={"bar": 1}), "unknown_field", "transport.foo"),
        (with_transport(worker_identity=5), "invalid_type", "transport.worker_identity"),
        (with_transport(audio_source=True), "invalid_type", "transport.audio_source"),
        (with_transport(room_name=["r"]), "invalid_type", "transport.room_name"),
        (with_transport(worker_token={}), "invalid_type", "transport.worker_token"),
        (session_body(metadata=None, extra=None), "unknown_field", "extra"),
        (with_transport(audio_source="mic"), "invalid_value", "transport.audio_source"),
        (
            with_transport(synthetic_audio_if_no_input=1),
            "invalid_type",
            "transport.synthetic_audio_if_no_input",
        ),
        (with_transport(type="sip"), "invalid_value", "transport.type"),
        (session_body(transport="livekit"), "invalid_type", "transport"),
        (session_body(avatar_id=1), "invalid_type", "avatar_id"),
        (session_body(quality="ultra"), "invalid_value", "quality"),
        (session_body(quality=1), "invalid_type", "quality"),
    ],
)
async def test_malformed_session_bodies_name_the_field(
    emu: Emulator, http: aiohttp.ClientSession, body: dict[str, Any], code: str, param: str
) -> None:
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=body)
    assert_error(reply, 400, "invalid_request", code, param)


async def test_missing_transport_type_is_named(emu: Emulator, http: aiohttp.ClientSession) -> None:
    body = session_body()
    del body["transport"]["type"]
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=body)
    assert_error(reply, 400, "invalid_request", "missing_field", "transport.type")


@pytest.mark.parametrize("transport_type", ["websocket", "pipecat"])
async def test_unsupported_transports_are_refused(
    emu: Emulator, http: aiohttp.ClientSession, transport_type: str
) -> None:
    body = session_body(transport={"type": transport_type})
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=body)
    assert_error(reply, 400, "invalid_request", "transport.unsupported", "transport.type")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("max_duration_seconds", 0, "out_of_range"),
        ("max_duration_seconds", 3601, "out_of_range"),
        ("max_duration_seconds", -5, "out_of_range"),
        ("max_duration_seconds", True, "invalid_type"),
        ("max_duration_seconds", 60.0, "invalid_type"),
        ("max_duration_seconds", "60", "invalid_type"),
        ("idle_timeout_seconds", 0, "out_of_range"),
        ("idle_timeout_seconds", 601, "out_of_range"),
        ("idle_timeout_seconds", False, "invalid_type"),
        ("idle_timeout_seconds", 10**30, "out_of_range"),
    ],
)
async def test_integer_fields_check_type_and_bounds(
    emu: Emulator, http: aiohttp.ClientSession, field: str, value: object, code: str
) -> None:
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(**{field: value}))
    assert_error(reply, 400, "invalid_request", code, field)


async def test_transport_urls_with_a_host_are_accepted(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    for url in ("ws://127.0.0.1:7880", "wss://[::1]:7880/rtc", "https://x.livekit.cloud"):
        reply = await call(http, emu, "POST", "/v1/sessions", json_body=with_transport(url=url))
        assert reply.status == 201, reply.text


async def test_integer_bounds_are_inclusive(emu: Emulator, http: aiohttp.ClientSession) -> None:
    for max_duration, idle in ((1, 1), (3600, 600)):
        body = session_body(max_duration_seconds=max_duration, idle_timeout_seconds=idle)
        reply = await call(http, emu, "POST", "/v1/sessions", json_body=body)
        assert reply.status == 201, reply.text
        assert Session.model_validate_json(reply.text).idle_timeout_seconds == idle


# --- metadata -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "code", "param"),
    [
        ("a string", "invalid_type", "metadata"),
        ([1, 2], "invalid_type", "metadata"),
        ({"nested": {"a": 1}}, "invalid_type", "metadata.nested"),
        ({"list": [1]}, "invalid_type", "metadata.list"),
        ({"_avatar.end_reason": "x"}, "metadata_reserved_key", "metadata._avatar.end_reason"),
        ({"big": "x" * 8200}, "metadata_too_large", "metadata"),
        ({"x": 1, "": {"a": []}}, "invalid_type", "metadata."),
        ({f"k{i}": "v" * 100 for i in range(80)}, "metadata_too_large", "metadata"),
    ],
)
async def test_metadata_rules(
    emu: Emulator, http: aiohttp.ClientSession, metadata: object, code: str, param: str
) -> None:
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(metadata=metadata))
    assert_error(reply, 400, "invalid_request", code, param)


async def test_metadata_limit_is_8192_bytes_of_compact_utf8_json(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    # {"k":"…"} is 8 bytes around the value; "é" is 2 bytes in UTF-8.
    for value, status in (
        ("x" * 8184, 201),
        ("x" * 8185, 400),
        ("é" * 4092, 201),
        ("é" * 4092 + "x", 400),
    ):
        body = session_body(metadata={"k": value})
        reply = await call(http, emu, "POST", "/v1/sessions", json_body=body)
        assert reply.status == status, (len(value), reply.text)
        if status == 400:
            assert_error(reply, 400, "invalid_request", "metadata_too_large", "metadata")


async def test_metadata_scalars_are_echoed(emu: Emulator, http: aiohttp.ClientSession) -> None:
    metadata = {"s": "x", "i": 3, "f": 1.5, "b": False, "n": None, "avatar.note": "ok"}
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=session_body(metadata=metadata))
    assert reply.status == 201
    assert Session.model_validate_json(reply.text).metadata == metadata


# --- resources ------------------------------------------------------------------------


async def test_unknown_avatar_is_404_with_param(emu: Emulator, http: aiohttp.ClientSession) -> None:
    reply = await call(
        http, emu, "POST", "/v1/sessions", json_body=session_body(avatar_id="av_nope")
    )
    assert_error(reply, 404, "not_found", "avatar_not_found", "avatar_id")
    reply = await call(http, emu, "GET", "/v1/avatars/av_nope")
    assert_error(reply, 404, "not_found", "avatar_not_found", "avatar_id")


async def test_processing_avatar_cannot_start_a_session(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    avatar = emu.store.create_avatar(name="slow", runtime_type="avtr1")
    reply = await call(
        http, emu, "POST", "/v1/sessions", json_body=session_body(avatar_id=avatar.id)
    )
    assert_error(reply, 409, "conflict", "avatar_not_ready", "avatar_id")


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/sessions/sess_nope"), ("POST", "/v1/sessions/sess_nope/end")]
)
async def test_unknown_session_is_404(
    emu: Emulator, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    assert_error(await call(http, emu, method, path), 404, "not_found", "session_not_found")


@pytest.mark.parametrize(
    "session_id",
    ["s" * 20000, "%2F..", "..%2F..%2Fstatus", "%E2%98%83", "%FF%FE", "%00", "sess_%0Ax"],
)
async def test_malformed_session_ids_in_paths_are_plain_404s(
    emu: Emulator, http: aiohttp.ClientSession, session_id: str
) -> None:
    for method, path in (
        ("GET", f"/v1/sessions/{session_id}"),
        ("POST", f"/v1/sessions/{session_id}/end"),
    ):
        async with http.request(
            method,
            yarl.URL(emu.url + path, encoded=True),
            headers={"Authorization": f"Bearer {emu.api_key}"},
        ) as response:
            reply = Reply(response.status, response.headers, await response.text())
        assert_error(reply, 404, "not_found", "session_not_found")
        assert len(reply.text) < 1000  # a long id is not echoed in full


async def test_end_takes_no_body_fields(emu: Emulator, http: aiohttp.ClientSession) -> None:
    created = (await call(http, emu, "POST", "/v1/sessions", json_body=session_body())).json
    path = f"/v1/sessions/{created['id']}/end"
    reply = await call(http, emu, "POST", path, json_body={"reason": "bye"})
    assert_error(reply, 400, "invalid_request", "unknown_field", "reason")
    assert (await call(http, emu, "POST", path, json_body={})).status == 200


# --- body encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "invalid_json"),
        (b"", "invalid_json"),
        (b"   ", "invalid_json"),
        (b'{"avatar_id": NaN}', "invalid_json"),
        (b'{"a": Infinity}', "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (b'{"avatar_id": "a", "avatar_id": "b"}', "duplicate_field"),
        (b'{"max_duration_seconds": 1e400}', "invalid_json"),
        (b'{"metadata": {"x": -1e400}}', "invalid_json"),
        (b'{"a": -Infinity}', "invalid_json"),
        (b"[]", "invalid_body"),
        (b'"text"', "invalid_body"),
        (b"42", "invalid_body"),
        (b"null", "invalid_body"),
    ],
)
async def test_bodies_that_are_not_a_json_object(
    emu: Emulator, http: aiohttp.ClientSession, raw: bytes, code: str
) -> None:
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    param = "avatar_id" if code == "duplicate_field" else None
    assert_error(reply, 400, "invalid_request", code, param)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"transport": {"url": "a", "url": "b"}}', "transport.url"),
        (b'{"metadata": {"k": 1, "k": 2}}', "metadata.k"),
        (b'{"x": [{"a": 1}, {"b": 1, "b": 2}]}', "x.1.b"),
    ],
)
async def test_duplicate_keys_are_named_by_their_dot_path(
    emu: Emulator, http: aiohttp.ClientSession, raw: bytes, param: str
) -> None:
    reply = await call(
        http, emu, "POST", "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400, "invalid_request", "duplicate_field", param)


@pytest.mark.parametrize(
    "where",
    [
        '"metadata": {"k": "\\ud800"}',
        '"metadata": {"\\udfff": "v"}',
        '"\\ud800": 1',
        '"x": ["\\udbff"]',
        '"quality": "\\ud800"',
    ],
)
async def test_unpaired_surrogates_are_invalid_json_and_never_stored(
    emu: Emulator, http: aiohttp.ClientSession, where: str
) -> None:
    # `where` holds the escape as JSON text (backslash, u, d, 8, 0, 0).
    body = json.dumps(session_body())[:-1] + ", " + where + "}"
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_error(reply, 400, "invalid_request", "invalid_json")
    # Nothing was stored that could not be sent back: the list still answers.
    listed = await call(http, emu, "GET", "/v1/sessions")
    assert listed.status == 200 and listed.json["data"] == []


async def test_paired_surrogates_are_one_character(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    body = json.dumps(session_body(metadata={"emoji": "\U0001f600"}), ensure_ascii=True)
    assert "\\ud83d\\ude00" in body
    reply = await call(
        http, emu, "POST", "/v1/sessions", data=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 201
    assert Session.model_validate_json(reply.text).metadata == {"emoji": "\U0001f600"}


async def test_huge_integers_are_invalid_json_not_a_crash(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    raw = b'{"max_duration_seconds": 1' + b"0" * 5000 + b"}"
    reply = await call(
        http, emu, "POST", "/v1/sessions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400, "invalid_request", "invalid_json")


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_json_routes_require_a_json_content_type(
    emu: Emulator, http: aiohttp.ClientSession, content_type: str | None
) -> None:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with http.post(
        emu.url + "/v1/sessions",
        data=json.dumps(session_body()).encode(),
        headers=headers,
        # Without this aiohttp labels bytes application/octet-stream on its own.
        skip_auto_headers=["Content-Type"],
    ) as response:
        reply = Reply(response.status, response.headers, await response.text())
    assert_error(reply, 415, "invalid_request", "unsupported_media_type")


async def test_json_with_utf8_charset_is_accepted(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        data=json.dumps(session_body()),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert reply.status == 201, reply.text


async def test_json_body_over_64_kib_is_413(emu: Emulator, http: aiohttp.ClientSession) -> None:
    body = session_body(metadata={"pad": "x" * (70 * 1024)})
    reply = await call(http, emu, "POST", "/v1/sessions", json_body=body)
    assert_error(reply, 413, "invalid_request", "request_too_large")


async def test_chunked_body_over_the_limit_is_413(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    async with http.post(
        emu.url + "/v1/sessions",
        data=chunks(),
        headers={"Authorization": f"Bearer {emu.api_key}", "Content-Type": "application/json"},
    ) as response:
        text = await response.text()
        assert response.status == 413
        envelope = ApiErrorEnvelope.model_validate_json(text)
        assert envelope.error.code == "request_too_large"
        assert response.headers["X-Request-Id"] == envelope.error.request_id


async def test_upload_over_the_limit_is_413(emu: Emulator, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("image", PNG + b"\x00" * (11 * 1024 * 1024), filename="big.png")
    reply = await call(http, emu, "POST", "/v1/avatars", data=form)
    assert_error(reply, 413, "invalid_request", "request_too_large")


# --- routing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/v1", "/v1/nope", "/v2/sessions", "/v1/sessions/a/b/c", "/v1/sessions/"]
)
async def test_unknown_routes_are_404_envelopes(
    emu: Emulator, http: aiohttp.ClientSession, path: str
) -> None:
    assert_error(await call(http, emu, "GET", path), 404, "not_found", "route_not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/status"),
        ("PUT", "/v1/sessions"),
        ("PATCH", "/v1/sessions/sess_x"),
        ("GET", "/v1/sessions/sess_x/end"),
        ("GET", "/v1/pipecat/sessions"),
    ],
)
async def test_wrong_methods_are_405_envelopes_with_allow(
    emu: Emulator, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    reply = await call(http, emu, method, path)
    assert_error(reply, 405, "invalid_request", "method_not_allowed")
    assert reply.headers["Allow"]


# --- query strings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ("limit=0", "out_of_range", "limit"),
        ("limit=101", "out_of_range", "limit"),
        ("limit=abc", "invalid_type", "limit"),
        ("limit=-1", "invalid_type", "limit"),
        ("limit=" + "9" * 5000, "out_of_range", "limit"),
        ("limit=000", "out_of_range", "limit"),
        ("limit=1.5", "invalid_type", "limit"),
        ("limit=", "invalid_type", "limit"),
        ("status=", "invalid_value", "status"),
        ("status=%ED%A0%80", "invalid_value", "status"),
        ("created_before=9999-12-31T23:59:59-14:00", "invalid_value", "created_before"),
        ("created_after=0001-01-01T00:00:00%2B14:00", "invalid_value", "created_after"),
        ("created_after=" + "9" * 5000, "invalid_value", "created_after"),
        ("starting_after=av_stock_001", "invalid_cursor", "starting_after"),
        ("limit=1&limit=2", "invalid_value", "limit"),
        ("status=bogus", "invalid_value", "status"),
        ("starting_after=sess_nope", "invalid_cursor", "starting_after"),
        ("created_after=yesterday", "invalid_value", "created_after"),
        ("colour=blue", "unknown_parameter", "colour"),
    ],
)
async def test_session_list_query_is_validated(
    emu: Emulator, http: aiohttp.ClientSession, query: str, code: str, param: str
) -> None:
    reply = await call(http, emu, "GET", f"/v1/sessions?{query}")
    assert_error(reply, 400, "invalid_request", code, param)


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ("period=last_year", "invalid_value", "period"),
        ("period=current_month&period_start=2025-01-01", "invalid_value", "period"),
        ("period_end=2025-01-01", "missing_field", "period_start"),
        ("period_start=2025-02-01&period_end=2025-01-01", "invalid_value", "period_end"),
        ("period_start=soon", "invalid_value", "period_start"),
        ("period_start=0001-01-01T00:00:00%2B14:00", "invalid_value", "period_start"),
        (
            "period_start=2025-01-01&period_end=9999-12-31T23:59:59-14:00",
            "invalid_value",
            "period_end",
        ),
        ("period_start=2999-01-01", "invalid_value", "period_start"),
    ],
)
async def test_usage_query_is_validated(
    emu: Emulator, http: aiohttp.ClientSession, query: str, code: str, param: str
) -> None:
    reply = await call(http, emu, "GET", f"/v1/usage?{query}")
    assert_error(reply, 400, "invalid_request", code, param)


async def test_avatar_list_query_is_validated(emu: Emulator, http: aiohttp.ClientSession) -> None:
    reply = await call(http, emu, "GET", "/v1/avatars?scope=everything")
    assert_error(reply, 400, "invalid_request", "invalid_value", "scope")
    reply = await call(http, emu, "GET", "/v1/avatars?starting_after=av_nope")
    assert_error(reply, 400, "invalid_request", "invalid_cursor", "starting_after")


# --- avatar upload --------------------------------------------------------------------


def _form(**fields: bytes | str) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        if isinstance(value, bytes):
            form.add_field(name, value, filename=f"{name}.bin")
        else:
            form.add_field(name, value)
    return form


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"name": "x"}, "missing_field", "image"),
        ({"image": b"GIF89a..."}, "invalid_image", "image"),
        ({"image": b""}, "invalid_image", "image"),
        ({"image": PNG, "colour": "blue"}, "unknown_field", "colour"),
        ({"image": PNG, "runtime_type": "gpu9000"}, "invalid_value", "runtime_type"),
        ({"image": PNG, "name": "n" * 101}, "invalid_value", "name"),
        ({"image": PNG, "name": b"file"}, "invalid_type", "name"),
        ({"image": PNG, "name": "two\nlines"}, "invalid_value", "name"),
        ({"image": PNG, "name": "nul\x00"}, "invalid_value", "name"),
    ],
)
async def test_avatar_upload_is_validated(
    emu: Emulator,
    http: aiohttp.ClientSession,
    fields: dict[str, bytes | str],
    code: str,
    param: str,
) -> None:
    reply = await call(http, emu, "POST", "/v1/avatars", data=_form(**fields))
    assert_error(reply, 400, "invalid_request", code, param)


async def test_undecodable_form_field_names_get_an_envelope(emu: Emulator) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        + PNG
        + b'\r\n--b\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nx\r\n--b--\r\n'
    )
    head = (
        f"POST /v1/avatars HTTP/1.1\r\nHost: e\r\nConnection: close\r\n"
        f"Authorization: Bearer {emu.api_key}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reply = raw_reply(await exchange(emu, head.encode() + body))
    envelope = assert_error(reply, 400, "invalid_request", "unknown_field", "\\udcff")
    assert "\\udcff" in envelope.error.message


async def test_avatar_upload_must_be_multipart(emu: Emulator, http: aiohttp.ClientSession) -> None:
    reply = await call(http, emu, "POST", "/v1/avatars", json_body={"image": "x"})
    assert_error(reply, 415, "invalid_request", "unsupported_media_type")


# --- headers and protocol ---------------------------------------------------------------


async def test_list_limits_at_the_bounds_are_accepted(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    for path in ("/v1/sessions", "/v1/avatars"):
        for limit in ("1", "100", "007"):
            reply = await call(http, emu, "GET", f"{path}?limit={limit}")
            assert reply.status == 200, reply.text


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "ключ", "a\tb"])
async def test_bad_idempotency_keys_are_rejected(
    emu: Emulator, http: aiohttp.ClientSession, key: str
) -> None:
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        json_body=session_body(),
        headers={"Idempotency-Key": key},
    )
    assert_error(reply, 400, "invalid_request", "invalid_idempotency_key")


async def test_unparseable_http_gets_an_envelope(emu: Emulator) -> None:
    reader, writer = await asyncio.open_connection(emu.host, emu.port)
    try:
        writer.write(b"NOT\x01HTTP / HTTP/1.1\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0]
    envelope = ApiErrorEnvelope.model_validate_json(body)
    assert envelope.error.code == "malformed_http_request"
    assert f"X-Request-Id: {envelope.error.request_id}".encode() in head


async def test_undecodable_content_encoding_is_invalid_body(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        data=b"this is not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert_error(reply, 400, "invalid_request", "invalid_body")


async def test_gzip_bodies_count_against_the_limit_once_decompressed(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    bomb = gzip.compress(b" " * (5 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert_error(reply, 413, "invalid_request", "request_too_large")


async def test_unexpected_failures_become_internal_envelopes(
    emu: Emulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> object:
        raise RuntimeError("boom: a bug in the store")

    monkeypatch.setattr(emu.store, "status", broken)
    reply = await call(http, emu, "GET", "/v1/status")
    envelope = assert_error(reply, 500, "internal", "internal_error")
    assert "boom" not in reply.text
    assert envelope.error.request_id in envelope.error.message


# --- found by breaking one line at a time ------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/vnd.protoface+json", "application/json; charset=utf8"]
)
async def test_structured_json_media_types_are_accepted(
    emu: Emulator, http: aiohttp.ClientSession, content_type: str
) -> None:
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        data=json.dumps(session_body()),
        headers={"Content-Type": content_type},
    )
    assert reply.status == 201, reply.text


async def test_an_idempotency_key_sent_twice_is_refused(emu: Emulator) -> None:
    body = json.dumps(session_body()).encode()
    head = (
        f"POST /v1/sessions HTTP/1.1\r\nHost: e\r\nConnection: close\r\n"
        f"Authorization: Bearer {emu.api_key}\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: one\r\nIdempotency-Key: one\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reply = raw_reply(await exchange(emu, head.encode() + body))
    assert_error(reply, 400, "invalid_request", "invalid_idempotency_key")
    assert not list(emu.store.iter_sessions())


async def test_a_form_field_sent_twice_is_refused(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("image", PNG, filename="a.png")
    form.add_field("name", "one")
    form.add_field("name", "two")
    reply = await call(http, emu, "POST", "/v1/avatars", data=form)
    assert_error(reply, 400, "invalid_request", "duplicate_field", "name")


async def test_a_jpeg_upload_is_accepted(emu: Emulator, http: aiohttp.ClientSession) -> None:
    reply = await call(http, emu, "POST", "/v1/avatars", data=_form(image=b"\xff\xd8\xff" + PNG))
    assert reply.status == 201, reply.text


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"avatar_id": "av_stock_001", "colour": "blue"}, "unknown_field", "colour"),
        (
            {"avatar_id": "av_stock_001", "relay_mode": "carrier-pigeon"},
            "invalid_value",
            "relay_mode",
        ),
        ({"avatar_id": "av_stock_001", "relay_mode": 1}, "invalid_type", "relay_mode"),
        ({"avatar_id": "av_stock_001", "quality": "ultra"}, "invalid_value", "quality"),
        ({"relay_mode": "websocket"}, "missing_field", "avatar_id"),
        ({"avatar_id": "av_stock_001", "relay_mode": "websocket"}, "transport.unsupported", None),
    ],
)
async def test_pipecat_bodies_are_validated_before_they_are_refused(
    emu: Emulator, http: aiohttp.ClientSession, body: dict[str, Any], code: str, param: str | None
) -> None:
    reply = await call(http, emu, "POST", "/v1/pipecat/sessions", json_body=body)
    assert_error(reply, 400, "invalid_request", code, param)


async def test_a_pipecat_create_checks_its_key_and_avatar_before_refusing(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    body = {"avatar_id": "av_stock_001"}
    bad_key = await call(
        http, emu, "POST", "/v1/pipecat/sessions", json_body=body, headers={"Idempotency-Key": ""}
    )
    assert_error(bad_key, 400, "invalid_request", "invalid_idempotency_key")
    unknown = await call(
        http, emu, "POST", "/v1/pipecat/sessions", json_body={"avatar_id": "av_nope"}
    )
    assert_error(unknown, 404, "not_found", "avatar_not_found", "avatar_id")


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_refuses_unknown_query_parameters(
    emu: Emulator, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    reply = await call(http, emu, method, f"{path}?colour=blue")
    assert_error(reply, 400, "invalid_request", "unknown_parameter", "colour")


async def test_bodies_are_utf8_and_non_ascii_text_survives(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    body = session_body(metadata={"город": "Zürich ✓"})
    created = await call(http, emu, "POST", "/v1/sessions", json_body=body)
    assert created.status == 201, created.text
    assert created.json["metadata"] == {"город": "Zürich ✓"}
    latin1 = json.dumps(session_body(metadata={"k": "Zürich"}), ensure_ascii=False)
    reply = await call(
        http,
        emu,
        "POST",
        "/v1/sessions",
        data=latin1.encode("latin-1"),
        headers={"Content-Type": "application/json"},
    )
    assert_error(reply, 400, "invalid_request", "invalid_json")


@pytest.mark.parametrize(("name", "kept"), [("  Ada  ", "Ada"), ("   ", "Custom Avatar")])
async def test_an_upload_name_is_trimmed_and_a_blank_one_is_the_default(
    emu: Emulator, http: aiohttp.ClientSession, name: str, kept: str
) -> None:
    reply = await call(http, emu, "POST", "/v1/avatars", data=_form(image=PNG, name=name))
    assert reply.status == 201, reply.text
    assert reply.json["name"] == kept and reply.json["runtime_type"] == "avtr1"

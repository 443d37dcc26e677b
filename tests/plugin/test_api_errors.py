"""Errors people can act on: envelope fields, gateway pages, exhausted retries."""

from __future__ import annotations

import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, APITimeoutError

from livekit.plugins.protoface import ProtofaceAPIError
from livekit.plugins.protoface.api import ProtofaceAPI
from protoface_emulator import Emulator

from .helpers import API_KEY, END, FAST, GET_SESSION, STATUS, envelope, free_port


def make_api(url: str, conn_options: APIConnectOptions = FAST) -> ProtofaceAPI:
    return ProtofaceAPI(api_key=API_KEY, api_url=url, conn_options=conn_options)


async def test_error_envelope_fields_are_attributes(emu: Emulator) -> None:
    emu.faults.reply(
        GET_SESSION,
        404,
        json=envelope(
            "not_found",
            "session_not_found",
            "No such session: sess_x",
            request_id="req_abc123",
            param="id",
        ),
        headers={"X-Request-Id": "req_header_ignored"},
    )
    async with make_api(emu.url) as api:
        with pytest.raises(APIStatusError) as info:
            await api.get_session("sess_x")

    error = info.value
    assert isinstance(error, ProtofaceAPIError)
    assert error.status_code == 404
    assert error.code == "session_not_found"
    assert error.type == "not_found"
    assert error.param == "id"
    assert error.request_id == "req_abc123"
    assert error.retry_after is None
    assert error.retryable is False
    assert isinstance(error.body, dict) and error.body["error"]["code"] == "session_not_found"


async def test_error_message_names_code_and_request_id(emu: Emulator) -> None:
    emu.faults.reply(END, 403, json=envelope("permission", "key_revoked", request_id="req_777"))
    async with make_api(emu.url) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.end_session("sess_1")

    assert "key_revoked" in info.value.message
    assert "req_777" in info.value.message
    assert "403" in info.value.message
    assert "key_revoked" in str(info.value)


async def test_request_id_falls_back_to_header(emu: Emulator) -> None:
    body = {"error": {"type": "conflict", "code": "already_ended", "message": "ended"}}
    emu.faults.reply(STATUS, 409, json=body, headers={"X-Request-Id": "req_hdr_9"})
    async with make_api(emu.url) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert info.value.request_id == "req_hdr_9"
    assert "req_hdr_9" in info.value.message


async def test_retry_after_is_exposed_on_the_error(emu: Emulator) -> None:
    emu.faults.reply(
        STATUS, 429, json=envelope("rate_limit", "slow_down"), headers={"Retry-After": "3"}
    )
    async with make_api(emu.url, APIConnectOptions(max_retry=0, timeout=2)) as api:
        with pytest.raises(APIConnectionError) as info:
            await api.get_status()

    cause = info.value.__cause__
    assert isinstance(cause, ProtofaceAPIError)
    assert cause.retry_after == 3.0


async def test_html_gateway_page_message_says_so(emu: Emulator) -> None:
    page = "<!DOCTYPE html><html><body><h1>403 Forbidden</h1>nginx</body></html>"
    emu.faults.reply(
        STATUS, 403, body=page, headers={"Content-Type": "text/html", "X-Request-Id": "r1"}
    )
    async with make_api(emu.url) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    error = info.value
    assert "HTML page" in error.message
    assert "403" in error.message
    assert error.code is None
    assert error.request_id == "r1"
    assert isinstance(error.body, str) and "nginx" in error.body


async def test_empty_body_message_says_so(emu: Emulator) -> None:
    emu.faults.reply(STATUS, 401, body="")
    async with make_api(emu.url) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert "empty body" in info.value.message
    assert "401" in info.value.message


async def test_2xx_html_message_says_so(emu: Emulator) -> None:
    emu.faults.reply(
        STATUS, 200, body="<html>captive portal</html>", headers={"Content-Type": "text/html"}
    )
    async with make_api(emu.url) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert "HTML page" in info.value.message
    assert "200" in info.value.message


async def test_exhausted_retries_raise_connection_error_caused_by_last_error(
    emu: Emulator,
) -> None:
    emu.faults.reply(STATUS, 500, json=envelope("internal", "first"))
    emu.faults.reply(
        STATUS, 502, body="<html>bad gateway</html>", headers={"Content-Type": "text/html"}
    )
    emu.faults.reply(
        STATUS, 503, json=envelope("service_unavailable", "last_one", request_id="req_l")
    )
    conn = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=2.0)
    async with make_api(emu.url, conn) as api:
        with pytest.raises(APIConnectionError) as info:
            await api.get_status()

    assert not isinstance(info.value, APIStatusError)
    cause = info.value.__cause__
    assert isinstance(cause, ProtofaceAPIError)
    assert cause.code == "last_one"
    assert cause.request_id == "req_l"
    assert "3 attempt" in info.value.message


async def test_exhausted_timeouts_raise_connection_error_caused_by_timeout(
    emu: Emulator,
) -> None:
    emu.faults.add(STATUS, "late", delay=1.0, count=2)
    conn = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=0.2)
    async with make_api(emu.url, conn) as api:
        with pytest.raises(APIConnectionError) as info:
            await api.get_status()

    assert isinstance(info.value.__cause__, APITimeoutError)


async def test_unreachable_server_raises_connection_error_with_cause() -> None:
    conn = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=2.0)
    async with make_api(f"http://127.0.0.1:{free_port()}", conn) as api:
        with pytest.raises(APIConnectionError) as info:
            await api.get_status()

    assert isinstance(info.value.__cause__, APIConnectionError)
    assert info.value.__cause__.__cause__ is not None


async def test_json_without_envelope_message_says_so(emu: Emulator) -> None:
    emu.faults.reply(STATUS, 400, json={"detail": "nope"})
    async with make_api(emu.url) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    assert "not a Protoface error envelope" in info.value.message
    assert info.value.body == {"detail": "nope"}


@pytest.mark.parametrize(
    ("body", "code", "request_id", "says"),
    [
        ({"error": {}}, None, "req_hdr", "unknown_error: no message"),
        (
            {"error": {"code": 5, "type": [], "message": None, "request_id": {"x": 1}}},
            None,
            "req_hdr",
            "unknown_error: no message",
        ),
        (
            {"error": {"code": "bad", "request_id": "req_env", "surprise": [1]}, "extra": 1},
            "bad",
            "req_env",
            "400 bad: no message",
        ),
        ({"error": "just a string"}, None, "req_hdr", "not a Protoface error envelope"),
        (["error"], None, "req_hdr", "not a Protoface error envelope"),
    ],
    ids=["empty", "wrong-types", "extra-fields", "string-error", "array"],
)
async def test_odd_envelopes_still_give_a_usable_error(
    emu: Emulator, body: object, code: str | None, request_id: str, says: str
) -> None:
    emu.faults.reply(STATUS, 400, json=body, headers={"X-Request-Id": "req_hdr"})
    async with make_api(emu.url) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    error = info.value
    assert error.status_code == 400
    assert error.code == code
    assert error.request_id == request_id
    assert says in error.message
    assert request_id in error.message

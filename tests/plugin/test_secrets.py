"""Secrets stay secret; the API key never travels in plaintext unannounced."""

from __future__ import annotations

import asyncio
import logging

import pytest
from livekit import rtc
from livekit.agents import AgentSession, APIConnectionError, APIConnectOptions

from livekit.plugins.protoface import (
    AvatarSession,
    AvatarSessionFailedError,
    ProtofaceAPI,
    ProtofaceAPIError,
)
from protoface_emulator import Emulator

from .helpers import (
    API_KEY,
    CREATE,
    END,
    FAST,
    GET_SESSION,
    LIVEKIT_API_SECRET,
    STATUS,
    LogCapture,
    body,
    echoing,
)

TRANSPORT = {
    "type": "livekit",
    "url": "wss://example.livekit.cloud",
    "room_name": "room",
    "worker_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2lnbmF0dXJlLXRlc3Q",
}
WORKER_TOKEN = TRANSPORT["worker_token"]


def rendered(error: BaseException) -> str:
    """Everything an exception shows: str, repr, body, and its whole cause chain."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(getattr(current, "body", None))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.mark.usefixtures("livekit_env")
async def test_secrets_never_appear_in_logs_reprs_or_errors(
    emu: Emulator, job_room: rtc.Room, all_logs: LogCapture
) -> None:
    """A full run against a server that echoes what it receives into its errors."""
    errors: list[BaseException] = []
    echo = {"X-Request-Id": "req_echo"}
    emu.faults.reply(CREATE, 503, json=echoing("service_unavailable"), headers=echo)  # retried
    avatar = AvatarSession(api_key=API_KEY, api_url=emu.url, conn_options=FAST)
    objects: list[object] = [avatar]

    await avatar.start(AgentSession(), room=job_room)
    assert avatar.session_id is not None
    creates = emu.requests.matching(CREATE)
    worker_token = body(creates[-1])["transport"]["worker_token"]
    secrets = [API_KEY, LIVEKIT_API_SECRET, worker_token]
    # Sanity: the server really received (and echoed) them, so a leak would show.
    assert API_KEY in creates[0].headers["Authorization"]

    # Failing polls whose errors echo the key and the request, then a failure whose
    # message quotes the worker token (the emulator's own failures never do, so the
    # session as it is, failed, is a scripted reply).
    emu.faults.reply(GET_SESSION, 500, json=echoing(), headers=echo, count=12)
    session = emu.store.get_session(avatar.session_id)
    failure = {"code": "livekit_auth_failed", "message": f"token {worker_token} refused"}
    emu.faults.reply(
        GET_SESSION,
        200,
        json=lambda _: {**session.view(), "status": "failed", "failure": failure},
        count=1000,
    )
    try:
        await asyncio.wait_for(avatar.wait_for_join(), timeout=20)
    except AvatarSessionFailedError as exc:
        errors.append(exc)

    emu.faults.reply(END, 400, json=echoing(), headers=echo)
    await avatar.aclose()

    # A script's view: a refused call and exhausted retries.
    api = ProtofaceAPI(
        api_key=API_KEY, api_url=emu.url, conn_options=APIConnectOptions(max_retry=1, timeout=2)
    )
    objects.append(api)
    emu.faults.reply(STATUS, 401, json=echoing(), headers=echo)
    try:
        await api.get_status()
    except ProtofaceAPIError as exc:
        errors.append(exc)
    emu.faults.reply(STATUS, 502, json=echoing(), headers=echo, count=2)
    try:
        await api.get_status()
    except APIConnectionError as exc:
        errors.append(exc)
    await api.aclose()

    assert len(errors) == 3
    assert any("[redacted]" in rendered(e) for e in errors)
    logs = all_logs.text()
    assert "failed to end protoface session" in logs
    for secret in secrets:
        assert secret not in logs
        for obj in objects:
            assert secret not in repr(obj) and secret not in str(obj)
        for error in errors:
            assert secret not in rendered(error)


@pytest.mark.parametrize(
    "api_url", ["http://api.protoface.example", "http://10.0.0.7:8080", "http://[2001:db8::1]"]
)
async def test_plaintext_api_key_is_warned_about(
    api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="livekit.plugins.protoface"):
        ProtofaceAPI(api_key=API_KEY, api_url=api_url)
        AvatarSession(api_key=API_KEY, api_url=api_url)

    warnings = [r for r in caplog.records if "plaintext" in r.getMessage()]
    assert len(warnings) == 2
    assert all(API_KEY not in r.getMessage() for r in warnings)


@pytest.mark.parametrize(
    "api_url",
    [
        "https://api.protoface.com",
        "http://localhost:8080",
        "http://127.0.0.1:9000",
        "http://127.5.6.7",
        "http://[::1]:8080",
        "http://[::ffff:127.0.0.1]:8080",
        "http://localhost.:8080",
        "http://LOCALHOST",
    ],
)
async def test_no_plaintext_warning_for_https_or_loopback(
    api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="livekit.plugins.protoface"):
        ProtofaceAPI(api_key=API_KEY, api_url=api_url)

    assert not [r for r in caplog.records if "plaintext" in r.getMessage()]


async def test_secret_hidden_behind_json_escapes_in_a_success_body_is_redacted(
    emu: Emulator,
) -> None:
    """A server that echoes the worker token with every character \\u-escaped: the
    raw bytes never contain the token, the decoded session would."""
    token = WORKER_TOKEN
    escaped = "".join(f"\\u{ord(c):04x}" for c in token)
    raw = (
        '{"id": "sess_1", "object": "session", "status": "queued", '
        f'"transport": {{"type": "livekit", "worker_token": "{escaped}"}}}}'
    )
    emu.faults.reply(CREATE, 201, body=raw)
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        session = await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)
    assert session["id"] == "sess_1"
    assert session["transport"]["worker_token"] == "[redacted]"
    assert token not in repr(session)


# -- secrets a server echoes in headers -------------------------------------------
# The client quotes `X-Request-Id` and a redirect's `Location` in its errors; a
# careless server (or a proxy) that copies the request into them must not get a
# secret into an error message, a log line or an exception attribute.


@pytest.mark.parametrize(
    "error_body",
    [{"detail": "no"}, {"error": {"code": "bad", "message": "no"}}],
    ids=["no-envelope", "envelope-without-request-id"],
)
async def test_a_secret_echoed_in_x_request_id_of_an_error_is_redacted(
    emu: Emulator, error_body: dict[str, object]
) -> None:
    """Nothing in the body names the request, so the header's id is the one quoted."""
    emu.faults.reply(STATUS, 400, json=error_body, headers={"X-Request-Id": f"req_{API_KEY}"})
    no_retries = APIConnectOptions(max_retry=0, timeout=2)
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=no_retries) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.get_status()

    error = info.value
    assert error.request_id == "req_[redacted]"
    assert "req_[redacted]" in error.message
    assert API_KEY not in rendered(error)


async def test_a_worker_token_echoed_in_x_request_id_of_a_2xx_is_redacted(emu: Emulator) -> None:
    """A create answered 201 with a body that is not a session: the error quotes the
    request id, which here carries the worker token of that very create."""
    emu.faults.reply(
        CREATE,
        201,
        body="<html>accepted</html>",
        headers={"Content-Type": "text/html", "X-Request-Id": f"req_{WORKER_TOKEN}"},
    )
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    error = info.value
    assert error.request_id == "req_[redacted]"
    assert "req_[redacted]" in error.message
    assert WORKER_TOKEN not in rendered(error)


async def test_a_secret_echoed_in_a_redirect_location_is_redacted(emu: Emulator) -> None:
    location = f"https://login.example/?key={API_KEY}&next=/v1/sessions"
    emu.faults.reply(CREATE, 307, headers={"Location": location})
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        with pytest.raises(ProtofaceAPIError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT)

    error = info.value
    assert "https://login.example/?key=[redacted]&next=/v1/sessions" in error.message
    assert API_KEY not in rendered(error)

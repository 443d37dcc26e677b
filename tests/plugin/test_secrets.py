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

from .fake_protoface import (
    API_KEY,
    FAST,
    LIVEKIT_API_SECRET,
    FakeProtoface,
    LogCapture,
    Reply,
)


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
    fake: FakeProtoface, job_room: rtc.Room, all_logs: LogCapture
) -> None:
    """A full run against a server that echoes what it receives into its errors."""
    errors: list[BaseException] = []
    fake.script("POST", "/v1/sessions", Reply(status=503, echo=True))  # retried
    avatar = AvatarSession(api_key=API_KEY, api_url=fake.url, conn_options=FAST)
    objects: list[object] = [avatar]

    await avatar.start(AgentSession(), room=job_room)
    assert avatar.session_id is not None
    creates = fake.requests_to("POST", "/v1/sessions")
    worker_token = creates[-1].body["transport"]["worker_token"]
    secrets = [API_KEY, LIVEKIT_API_SECRET, worker_token]
    # Sanity: the server really received (and echoed) them, so a leak would show.
    assert API_KEY in creates[0].headers["Authorization"]

    # Failing polls whose errors echo the key and the request, then a failure whose
    # message quotes the worker token.
    fake.script("GET", "/v1/sessions/{id}", *[Reply(status=500, echo=True) for _ in range(12)])
    fake.update_session(
        avatar.session_id,
        status="failed",
        failure={"code": "livekit_auth_failed", "message": f"token {worker_token} refused"},
    )
    try:
        await asyncio.wait_for(avatar.wait_for_join(), timeout=20)
    except AvatarSessionFailedError as exc:
        errors.append(exc)

    fake.script("POST", "/v1/sessions/{id}/end", Reply(status=400, echo=True))
    await avatar.aclose()

    # A script's view: a refused call and exhausted retries.
    api = ProtofaceAPI(
        api_key=API_KEY, api_url=fake.url, conn_options=APIConnectOptions(max_retry=1, timeout=2)
    )
    objects.append(api)
    fake.script("GET", "/v1/status", Reply(status=401, echo=True))
    try:
        await api.get_status()
    except ProtofaceAPIError as exc:
        errors.append(exc)
    fake.script("GET", "/v1/status", Reply(status=502, echo=True), Reply(status=502, echo=True))
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
    fake: FakeProtoface,
) -> None:
    """A server that echoes the worker token with every character \\u-escaped: the
    raw bytes never contain the token, the decoded session would."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2lnbmF0dXJlLXRlc3Q"
    escaped = "".join(f"\\u{ord(c):04x}" for c in token)
    raw = (
        '{"id": "sess_1", "object": "session", "status": "queued", '
        f'"transport": {{"type": "livekit", "worker_token": "{escaped}"}}}}'
    )
    fake.script("POST", "/v1/sessions", Reply(status=201, text=raw))
    async with ProtofaceAPI(api_key=API_KEY, api_url=fake.url, conn_options=FAST) as api:
        session = await api.start_session(
            avatar_id="av_stock_001",
            transport={
                "type": "livekit",
                "url": "wss://example.livekit.cloud",
                "room_name": "room",
                "worker_token": token,
            },
        )
    assert session["id"] == "sess_1"
    assert session["transport"]["worker_token"] == "[redacted]"
    assert token not in repr(session)

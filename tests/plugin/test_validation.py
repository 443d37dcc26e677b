"""Bad input is refused before the network, with the parameter, the value and the fix."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from livekit.agents import AgentSession

from livekit.plugins.protoface import (
    AvatarSession,
    ProtofaceAPI,
    ProtofaceException,
    ProtofaceValueError,
)
from protoface_emulator import Emulator

from .helpers import (
    API_KEY,
    CREATE,
    FAST,
    LIVEKIT_API_KEY,
    LIVEKIT_API_SECRET,
    LIVEKIT_URL,
    body,
    leftover_tasks,
)

TRANSPORT = {
    "type": "livekit",
    "url": LIVEKIT_URL,
    "room_name": "room-1",
    "worker_token": "worker.jwt.token",
}

BAD_SESSION_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("avatar_id", {"avatar_id": ""}, "''"),
    ("avatar_id", {"avatar_id": "   "}, "'   '"),
    ("max_duration_seconds", {"max_duration_seconds": 0}, "0"),
    ("max_duration_seconds", {"max_duration_seconds": 3601}, "3601"),
    ("max_duration_seconds", {"max_duration_seconds": True}, "True"),
    ("max_duration_seconds", {"max_duration_seconds": 60.0}, "60.0"),
    ("max_duration_seconds", {"max_duration_seconds": "60"}, "'60'"),
    ("idle_timeout_seconds", {"idle_timeout_seconds": 0}, "0"),
    ("idle_timeout_seconds", {"idle_timeout_seconds": 601}, "601"),
    ("idle_timeout_seconds", {"idle_timeout_seconds": False}, "False"),
    ("quality", {"quality": "ultra"}, "'ultra'"),
    ("quality", {"quality": "Standard"}, "'Standard'"),
    ("metadata", {"metadata": ["a"]}, "list"),
    ("metadata", {"metadata": {1: "x"}}, "1"),
    ("metadata", {"metadata": {"k": [1, 2]}}, "list"),
    ("metadata", {"metadata": {"k": {"nested": 1}}}, "dict"),
    ("metadata", {"metadata": {"k": float("nan")}}, "nan"),
    ("metadata", {"metadata": {"_avatar.end_reason": "x"}}, "'_avatar.end_reason'"),
    ("metadata", {"metadata": {"blob": "x" * 8200}}, "8192"),
]


@pytest.mark.parametrize(
    ("param", "options", "shown"),
    BAD_SESSION_OPTIONS,
    ids=[f"{p}={v}" for p, _, v in BAD_SESSION_OPTIONS],
)
async def test_start_session_refuses_bad_input_without_a_request(
    emu: Emulator, param: str, options: dict[str, Any], shown: str
) -> None:
    kwargs: dict[str, Any] = {"avatar_id": "av_stock_001", "transport": TRANSPORT, **options}
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        with pytest.raises(ProtofaceValueError) as info:
            await api.start_session(**kwargs)

    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ProtofaceException)
    assert param in str(info.value)
    assert shown in str(info.value)
    assert info.value.param is not None and info.value.param.startswith(param)
    assert emu.requests.all() == []


@pytest.mark.parametrize(
    ("param", "options", "shown"),
    BAD_SESSION_OPTIONS,
    ids=[f"{p}={v}" for p, _, v in BAD_SESSION_OPTIONS],
)
async def test_avatar_session_refuses_bad_input_at_construction(
    param: str, options: dict[str, Any], shown: str
) -> None:
    with pytest.raises(ProtofaceValueError) as info:
        AvatarSession(api_key=API_KEY, **options)

    assert param in str(info.value)
    assert shown in str(info.value)


async def test_metadata_at_the_limits_is_accepted(emu: Emulator) -> None:
    metadata: dict[str, str | int | float | bool | None] = {
        "customer": "acme",
        "n": 1,
        "f": 0.5,
        "flag": True,
        "none": None,
    }
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        session = await api.start_session(
            avatar_id="av_stock_001",
            transport=TRANSPORT,
            max_duration_seconds=3600,
            idle_timeout_seconds=600,
            quality="mock",
            metadata=metadata,
        )

    (create,) = emu.requests.matching(CREATE)
    assert body(create)["metadata"] == metadata
    assert body(create)["quality"] == "mock"
    assert body(create)["idle_timeout_seconds"] == 600
    assert body(create)["max_duration_seconds"] == 3600
    assert session["metadata"] == metadata


async def test_none_options_are_omitted_like_the_published_plugin(emu: Emulator) -> None:
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        await api.start_session(
            avatar_id="av_stock_001", transport=TRANSPORT, max_duration_seconds=None
        )

    (create,) = emu.requests.matching(CREATE)
    assert set(body(create)) == {"avatar_id", "transport"}


@pytest.mark.parametrize(
    ("transport", "param"),
    [
        ({**TRANSPORT, "url": "livekit.example.com"}, "transport.url"),
        ({**TRANSPORT, "url": "ftp://livekit.example.com"}, "transport.url"),
        ({**TRANSPORT, "room_name": " "}, "transport.room_name"),
        ({**TRANSPORT, "worker_token": ""}, "transport.worker_token"),
        ({**TRANSPORT, "worker_identity": ""}, "transport.worker_identity"),
        ("not a dict", "transport"),
    ],
)
async def test_start_session_refuses_bad_livekit_transport(
    emu: Emulator, transport: Any, param: str
) -> None:
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        with pytest.raises(ProtofaceValueError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=transport)

    assert info.value.param == param
    assert emu.requests.all() == []


@pytest.mark.parametrize(
    "api_url",
    [
        "api.protoface.com",
        "ftp://api.protoface.com",
        "https://",
        "https:///v1",
        "https://api.protoface.com:notaport",
        "https://api.protoface.com/?x=1",
    ],
)
async def test_bad_api_url_is_refused_at_construction(api_url: str) -> None:
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=API_KEY, api_url=api_url)
    assert "api_url" in str(info.value)
    assert repr(api_url) in str(info.value)

    with pytest.raises(ProtofaceValueError):
        AvatarSession(api_key=API_KEY, api_url=api_url)


async def test_api_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=API_KEY, api_url="https://user:hunter2@api.protoface.com")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("api_key", ["   ", "pf_key\n", "pf key"])
async def test_malformed_api_key_is_refused_without_echoing_it(api_key: str) -> None:
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=api_key)
    assert "api_key" in str(info.value)
    if api_key.strip():
        assert api_key.strip() not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"avatar_participant_identity": ""}, "avatar_participant_identity"),
        ({"avatar_participant_identity": "  "}, "avatar_participant_identity"),
        ({"avatar_participant_name": ""}, "avatar_participant_name"),
        ({"worker_token_ttl": datetime.timedelta(0)}, "worker_token_ttl"),
        ({"worker_token_ttl": datetime.timedelta(seconds=-5)}, "worker_token_ttl"),
        ({"worker_token_ttl": datetime.timedelta(hours=6, seconds=1)}, "worker_token_ttl"),
        ({"worker_token_ttl": 600}, "worker_token_ttl"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": float("inf")}, "poll_interval"),
        ({"audio_fallback": "no"}, "audio_fallback"),
        ({"api_url": "https://api.protoface.com", "conn_options": "fast"}, "conn_options"),
    ],
)
async def test_avatar_session_refuses_bad_options_at_construction(
    kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(ProtofaceValueError) as info:
        AvatarSession(api_key=API_KEY, **kwargs)
    assert info.value.param == param
    assert param in str(info.value)


async def test_avatar_session_defaults_none_identity_like_the_published_plugin() -> None:
    avatar = AvatarSession(api_key=API_KEY, avatar_participant_identity=None)
    assert avatar.avatar_identity == "protoface-avatar-agent"


@pytest.mark.parametrize(
    "livekit_url",
    ["livekit.example.com", "ftp://livekit.example.com", "wss://", "wss://host/?token=x"],
)
async def test_start_refuses_bad_livekit_url_without_request_or_task(
    emu: Emulator, job_room: Any, livekit_url: str
) -> None:
    avatar = AvatarSession(api_key=API_KEY, api_url=emu.url, conn_options=FAST)
    before = set(asyncio.all_tasks())

    with pytest.raises(ProtofaceValueError) as info:
        await avatar.start(
            AgentSession(),
            job_room,
            livekit_url=livekit_url,
            livekit_api_key=LIVEKIT_API_KEY,
            livekit_api_secret=LIVEKIT_API_SECRET,
        )

    assert info.value.param == "livekit_url"
    assert repr(livekit_url) in str(info.value)
    assert emu.requests.all() == []
    assert leftover_tasks(before) == []
    assert avatar._wait_avatar_join_task is None
    await avatar.aclose()


async def test_start_without_livekit_credentials_names_what_is_missing(
    emu: Emulator, job_room: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_URL", LIVEKIT_URL)
    avatar = AvatarSession(api_key=API_KEY, api_url=emu.url, conn_options=FAST)

    with pytest.raises(ProtofaceException) as info:
        await avatar.start(AgentSession(), job_room)

    assert "LIVEKIT_API_KEY" in str(info.value)
    assert "LIVEKIT_API_SECRET" in str(info.value)
    assert "LIVEKIT_URL" not in str(info.value).split(";")[0]
    assert emu.requests.all() == []
    await avatar.aclose()


async def test_refused_start_can_be_retried(
    emu: Emulator, job_room: Any, livekit_env: None
) -> None:
    avatar = AvatarSession(api_key=API_KEY, api_url=emu.url, conn_options=FAST)
    session: AgentSession[None] = AgentSession()
    with pytest.raises(ProtofaceValueError):
        await avatar.start(session, job_room, livekit_url="nope")

    await avatar.start(session, job_room)
    assert avatar.session_id is not None
    await avatar.aclose()


@pytest.mark.parametrize(
    "api_url",
    [
        "https://api.proto face.com",
        "https://api.protoface.com\n",
        " https://api.protoface.com",
        "https://api.protoface.com/v1\t",
    ],
    ids=["inner-space", "trailing-newline", "leading-space", "trailing-tab"],
)
async def test_urls_with_whitespace_are_refused(api_url: str) -> None:
    """urlsplit silently strips some of these; the request would go elsewhere or fail late."""
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=API_KEY, api_url=api_url)
    assert info.value.param == "api_url"
    assert repr(api_url) in str(info.value)
    assert "whitespace" in str(info.value)


async def test_url_with_credentials_and_whitespace_is_not_echoed() -> None:
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=API_KEY, api_url="https://user:hunter2@api.protoface.com\n")
    assert "hunter2" not in str(info.value)


async def test_bad_url_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROTOFACE_API_URL", "api.protoface.com")
    with pytest.raises(ProtofaceValueError) as info:
        ProtofaceAPI(api_key=API_KEY)
    assert "PROTOFACE_API_URL" in str(info.value)
    assert "'api.protoface.com'" in str(info.value)


@pytest.mark.parametrize(
    ("transport", "param"),
    [
        ({**TRANSPORT, "type": "websocket"}, "transport.type"),
        ({k: v for k, v in TRANSPORT.items() if k != "type"}, "transport.type"),
        ({**TRANSPORT, "extra": {1, 2}}, "transport"),
        ({**TRANSPORT, "extra": float("nan")}, "transport"),
    ],
    ids=["websocket", "no-type", "set-value", "nan-value"],
)
async def test_transport_protoface_cannot_take_is_refused_before_the_network(
    emu: Emulator, transport: dict[str, Any], param: str
) -> None:
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        with pytest.raises(ProtofaceValueError) as info:
            await api.start_session(avatar_id="av_stock_001", transport=transport)

    assert info.value.param == param
    assert emu.requests.all() == []


async def test_metadata_size_is_counted_in_utf8_like_the_api(emu: Emulator) -> None:
    """3000 'é' are 6 KB of UTF-8 but 18 KB once JSON-escaped; the API counts UTF-8."""
    metadata = {"note": "é" * 3000}
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT, metadata=metadata)
        with pytest.raises(ProtofaceValueError, match="8192"):
            await api.start_session(
                avatar_id="av_stock_001", transport=TRANSPORT, metadata={"note": "é" * 4200}
            )

    (create,) = emu.requests.matching(CREATE)
    assert body(create)["metadata"] == metadata


async def test_idempotency_key_none_means_generate_one(emu: Emulator) -> None:
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        await api.start_session(avatar_id="av_stock_001", transport=TRANSPORT, idempotency_key=None)

    (create,) = emu.requests.matching(CREATE)
    assert create.headers["Idempotency-Key"]


@pytest.mark.parametrize("status", [5, ["running", "bogus"], []])
async def test_list_sessions_refuses_bad_status_filters(emu: Emulator, status: Any) -> None:
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=FAST) as api:
        with pytest.raises(ProtofaceValueError) as info:
            _ = [s async for s in api.list_sessions(status=status)]

    assert info.value.param == "status"
    assert emu.requests.all() == []


async def test_avatar_session_without_any_api_key_is_refused_at_construction() -> None:
    with pytest.raises(ProtofaceException, match="PROTOFACE_API_KEY"):
        AvatarSession()

"""`Retry-After` on 429/503 sets the wait, up to a cap; beyond it the call fails at once."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import re

import pytest
from livekit.agents import APIConnectOptions, APIStatusError

from livekit.plugins.protoface import ProtofaceRetryAfterTooLongError
from livekit.plugins.protoface.api import DEFAULT_MAX_RETRY_AFTER, ProtofaceAPI
from protoface_emulator import Emulator

from .helpers import API_KEY, END, STATUS, envelope

# A backoff this long would blow every bound below: only Retry-After can explain
# a prompt retry.
SLOW_BACKOFF = APIConnectOptions(max_retry=3, retry_interval=60.0, timeout=5.0)


def rate_limited(emu: Emulator, route: str, retry_after: str, status: int = 429) -> None:
    """Answer the next request on `route` with `status` and this `Retry-After`."""
    kind = "rate_limit" if status == 429 else "service_unavailable"
    emu.faults.reply(
        route,
        status,
        json=envelope(kind, "too_many_requests", request_id="req_ra"),
        headers={"Retry-After": retry_after},
    )


def http_date(offset_seconds: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return email.utils.format_datetime(when, usegmt=True)


async def test_default_cap_is_documented_value() -> None:
    assert DEFAULT_MAX_RETRY_AFTER == 20.0


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_replaces_the_backoff(emu: Emulator, status: int) -> None:
    """Two retries with `Retry-After: 0` finish long before the 60 s backoff would allow."""
    rate_limited(emu, STATUS, "0", status)
    rate_limited(emu, STATUS, "0", status)
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=SLOW_BACKOFF) as api:
        result = await asyncio.wait_for(api.get_status(), timeout=10)

    assert result["status"] == "operational"
    assert len(emu.requests.matching(STATUS)) == 3


async def test_retry_after_seconds_is_waited(emu: Emulator) -> None:
    rate_limited(emu, STATUS, "1")
    fast = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=5.0)
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=fast) as api:
        await api.get_status()

    first, second = emu.requests.matching(STATUS)
    # Without Retry-After the first retry goes after 0.1-0.6 s; the server asked for 1 s.
    assert second.arrived_at - first.arrived_at >= 0.9


async def test_retry_after_http_date_in_the_past_retries_now(emu: Emulator) -> None:
    """Two 503s dated 30 s ago: the second retry would wait the 60 s backoff without
    the header; honoured, it goes at once."""
    rate_limited(emu, STATUS, http_date(-30), 503)
    rate_limited(emu, STATUS, http_date(-30), 503)
    async with ProtofaceAPI(api_key=API_KEY, api_url=emu.url, conn_options=SLOW_BACKOFF) as api:
        result = await asyncio.wait_for(api.get_status(), timeout=10)

    assert result["status"] == "operational"
    _, second, third = emu.requests.matching(STATUS)
    assert third.arrived_at - second.arrived_at < 5


@pytest.mark.parametrize(
    ("header", "asked"),
    [("120", "120s"), (None, "1[12]\\ds")],
    ids=["delta-seconds", "http-date"],
)
async def test_retry_after_beyond_cap_fails_at_once(
    emu: Emulator, header: str | None, asked: str
) -> None:
    rate_limited(emu, END, header or http_date(120))
    async with ProtofaceAPI(
        api_key=API_KEY, api_url=emu.url, conn_options=SLOW_BACKOFF, max_retry_after=20
    ) as api:
        with pytest.raises(ProtofaceRetryAfterTooLongError) as info:
            await asyncio.wait_for(api.end_session("sess_1"), timeout=5)

    error = info.value
    assert isinstance(error, APIStatusError)
    assert error.status_code == 429
    assert error.retry_after is not None and error.retry_after > 20
    assert error.max_retry_after == 20
    assert error.request_id == "req_ra"
    assert re.search(f"asked to retry after {asked}", error.message), error.message
    assert "max_retry_after=20s" in error.message
    assert len(emu.requests.matching(END)) == 1


async def test_a_higher_cap_waits_instead_of_failing(emu: Emulator) -> None:
    rate_limited(emu, STATUS, "1")
    fast = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=5.0)
    async with ProtofaceAPI(
        api_key=API_KEY, api_url=emu.url, conn_options=fast, max_retry_after=0.5
    ) as api:
        with pytest.raises(ProtofaceRetryAfterTooLongError):
            await api.get_status()

    rate_limited(emu, STATUS, "1")
    async with ProtofaceAPI(
        api_key=API_KEY, api_url=emu.url, conn_options=fast, max_retry_after=2
    ) as api:
        result = await api.get_status()
    assert result["status"] == "operational"


async def test_retry_after_beyond_cap_is_reported_even_with_no_retries_left(
    emu: Emulator,
) -> None:
    rate_limited(emu, STATUS, "300", status=503)
    no_retries = APIConnectOptions(max_retry=0, retry_interval=0.0, timeout=5.0)
    async with ProtofaceAPI(
        api_key=API_KEY, api_url=emu.url, conn_options=no_retries, max_retry_after=20
    ) as api:
        with pytest.raises(ProtofaceRetryAfterTooLongError) as info:
            await api.get_status()
    assert "asked to retry after 300s" in info.value.message

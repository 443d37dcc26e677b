"""The pure policies: retries, recovery bounds and backoff, keep-alive timing.

No server: these are functions of their arguments.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit.agents import APIConnectOptions

from livekit.plugins.protoface import ProtofaceValueError, RecoveryPolicy
from livekit.plugins.protoface.lifetime import keepalive_interval
from livekit.plugins.protoface.recovery import is_recoverable
from livekit.plugins.protoface.retry import (
    parse_retry_after,
    retry_delay,
    retry_window,
    should_retry,
)

OPTIONS = APIConnectOptions(max_retry=3, retry_interval=2.0, timeout=5.0)


@pytest.mark.parametrize(
    ("outcome", "retry"),
    [
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (404, False),
        (409, False),
        (302, False),
        (True, False),  # a bool is not a status
        (asyncio.TimeoutError(), True),
        (aiohttp.ClientConnectionError(), True),
        (ConnectionResetError(), True),
        (ValueError("a bug"), False),
    ],
)
def test_should_retry(outcome: int | BaseException, retry: bool) -> None:
    assert should_retry(outcome) is retry


def test_retry_window_honours_retry_after_only_where_the_api_sends_it() -> None:
    # The waits are jittered (test_retry_jitter.py): these pin which window applies.
    assert retry_window(0, 7.0, status=503, conn_options=OPTIONS)[0] == 7.0
    assert retry_window(2, 7.0, status=429, conn_options=OPTIONS)[0] == 7.0
    assert retry_window(0, 7.0, status=500, conn_options=OPTIONS) == (0.1, 0.6)
    assert retry_window(1, None, status=503, conn_options=OPTIONS) == (1.0, 3.0)
    assert retry_window(1, None, status=None, conn_options=OPTIONS) == (1.0, 3.0)
    assert 7.0 <= retry_delay(0, 7.0, status=503, conn_options=OPTIONS) < 8.3


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-1") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert 59 < (parse_retry_after(_http_date(60)) or 0) <= 60


def _http_date(seconds_ahead: float) -> str:
    import email.utils
    import time

    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


def test_recovery_backoff_doubles_up_to_its_cap() -> None:
    policy = RecoveryPolicy(backoff=1.0, max_backoff=5.0)
    assert [policy.delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_handover_lead() -> None:
    assert RecoveryPolicy().lead(1800) == 10.0
    assert RecoveryPolicy().lead(12) == 3.0
    assert RecoveryPolicy(handover_lead=30).lead(1800) == 30
    assert RecoveryPolicy(handover_lead=30).lead(20) == 10


@pytest.mark.parametrize(
    "reason",
    [
        "idle_timeout",
        "max_duration_reached",
        "worker_lost",
        "avatar_left_room",
        "protoface_unreachable",
        "session_not_found",
    ],
)
def test_losses_nobody_chose_are_recoverable(reason: str) -> None:
    assert is_recoverable(reason)


@pytest.mark.parametrize("reason", ["end_requested", "canceled", "livekit_auth_failed", "failed"])
def test_losses_someone_chose_are_not(reason: str) -> None:
    assert not is_recoverable(reason)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_sessions": True},
        {"backoff": 0},
        {"max_backoff": float("inf")},
        {"handover_lead": -1},
        {"join_timeout": "30"},
    ],
)
def test_recovery_policy_refuses_bad_bounds(kwargs: dict[str, object]) -> None:
    with pytest.raises(ProtofaceValueError) as info:
        RecoveryPolicy(**kwargs)  # type: ignore[arg-type]
    (name,) = kwargs
    assert name in str(info.value)


def test_keepalive_comes_well_before_the_idle_timeout() -> None:
    assert keepalive_interval(30) == 10.0
    assert keepalive_interval(600) == 10.0
    assert keepalive_interval(3) == 1.0
    assert keepalive_interval(1) == pytest.approx(1 / 3)

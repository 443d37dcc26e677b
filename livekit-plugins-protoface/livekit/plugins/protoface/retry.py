"""Retry policy: which failures are worth repeating, and how long to wait first.

Pure functions, testable without a server. The request loop (`requester.py`),
`ProtofaceAPIError.retryable` and the session monitor all take their answer
from `should_retry`, so the three cannot disagree.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math

import aiohttp
from livekit.agents import APIConnectOptions

__all__ = [
    "FIRST_RETRY_DELAY",
    "RETRY_AFTER_STATUSES",
    "parse_retry_after",
    "retry_delay",
    "should_retry",
]

FIRST_RETRY_DELAY = 0.1
"""The first retry comes almost at once: most blips are that short."""
RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Statuses whose `Retry-After` sets the wait (the API sends it on these)."""


def should_retry(outcome: int | BaseException) -> bool:
    """Whether a failed attempt is worth repeating.

    Args:
        outcome: The HTTP status of an error answer, or the exception the
            attempt raised.

    Returns:
        True for network errors, timeouts, 408, 429 and 5xx; False for other
        4xx, for redirects and for anything else (a 2xx that could not be used
        means the server acted, so repeating could only repeat that).
    """
    if isinstance(outcome, bool):
        return False
    if isinstance(outcome, int):
        return outcome in (408, 429) or outcome >= 500
    return isinstance(outcome, (asyncio.TimeoutError, aiohttp.ClientError, ConnectionError))


def retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    status: int | None,
    conn_options: APIConnectOptions,
) -> float:
    """Seconds to wait before retry number `attempt + 1`.

    Args:
        attempt: How many attempts failed before this wait, minus one (0 for
            the wait before the first retry).
        retry_after: The server's `Retry-After`, in seconds, if it sent one.
        status: The HTTP status of the failed attempt (None for network errors).
        conn_options: `retry_interval` is the wait before every retry but the
            first.

    Returns:
        `retry_after` on a 429 or 503 that carried one, else
        `FIRST_RETRY_DELAY` before the first retry and `retry_interval` after.
    """
    if retry_after is not None and status in RETRY_AFTER_STATUSES:
        return retry_after
    return FIRST_RETRY_DELAY if attempt == 0 else conn_options.retry_interval


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP-date.

    Returns:
        Seconds (0 for a date in the past), or None for a missing or
        unreadable header.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())

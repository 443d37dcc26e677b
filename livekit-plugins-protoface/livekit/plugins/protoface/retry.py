"""Retry policy: which failures are worth repeating, and how long to wait first.

Pure functions, testable without a server. The request loop (`requester.py`),
`ProtofaceAPIError.retryable` and the session monitor all take their answer
from `should_retry`, so the three cannot disagree.

Every wait is drawn at random from a window (`retry_window`): a fleet of agents
that meets the same errors at the same moment would otherwise retry in step and
land on a recovering service all at once.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
import random
from collections.abc import Callable

import aiohttp
from livekit.agents import APIConnectOptions

__all__ = [
    "FIRST_RETRY_DELAY",
    "FIRST_RETRY_SPREAD",
    "INTERVAL_SPREAD",
    "RETRY_AFTER_SPREAD",
    "RETRY_AFTER_SPREAD_SHARE",
    "RETRY_AFTER_STATUSES",
    "parse_retry_after",
    "retry_delay",
    "retry_window",
    "should_retry",
]

FIRST_RETRY_DELAY = 0.1
"""The shortest wait before the first retry: most blips are that short."""
FIRST_RETRY_SPREAD = 0.5
"""The first retry comes within this many seconds after `FIRST_RETRY_DELAY`.

Wide enough that of 200 agents failing together about a fifth retry in any one
100 ms window (at 0.4 s a quarter did, leaving the fleet's worst window near the
20 % goal), short enough that a blip still costs at most 0.6 s.
"""
INTERVAL_SPREAD = 0.5
"""Later waits fall within `retry_interval` * (1 ± this): on average, `retry_interval`."""
RETRY_AFTER_SPREAD = 0.5
"""Seconds of random extra after a `Retry-After`, at most (plus `RETRY_AFTER_SPREAD_SHARE`)."""
RETRY_AFTER_SPREAD_SHARE = 0.1
"""The extra after a `Retry-After` grows by this share of it: a long pause spreads wider."""
RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Statuses whose `Retry-After` sets the wait (the API sends it on these)."""

# Not the `random` module's shared generator: an agent that calls random.seed()
# for its own reasons would put every agent seeded alike back in step, and a
# generator forked with its state would repeat it in each child. The operating
# system's source has no state to share.
_SYSTEM_RANDOM = random.SystemRandom()


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


def retry_window(
    attempt: int,
    retry_after: float | None,
    *,
    status: int | None,
    conn_options: APIConnectOptions,
) -> tuple[float, float]:
    """The window the wait before retry number `attempt + 1` is drawn from.

    Args:
        attempt: How many attempts failed before this wait, minus one (0 for
            the wait before the first retry).
        retry_after: The server's `Retry-After`, in seconds, if it sent one.
        status: The HTTP status of the failed attempt (None for network errors).
        conn_options: `retry_interval` is the mean wait before every retry but
            the first.

    Returns:
        `(low, high)` in seconds. On a 429 or 503 that carried `Retry-After`,
        `low` is `Retry-After` (never undercut) and `high` adds
        `RETRY_AFTER_SPREAD` plus `RETRY_AFTER_SPREAD_SHARE` of it. Before the
        first retry otherwise, `FIRST_RETRY_DELAY` to `FIRST_RETRY_DELAY +
        FIRST_RETRY_SPREAD`; after, `retry_interval` * (1 ± `INTERVAL_SPREAD`).
    """
    if retry_after is not None and status in RETRY_AFTER_STATUSES:
        return retry_after, retry_after * (1 + RETRY_AFTER_SPREAD_SHARE) + RETRY_AFTER_SPREAD
    if attempt == 0:
        return FIRST_RETRY_DELAY, FIRST_RETRY_DELAY + FIRST_RETRY_SPREAD
    interval = conn_options.retry_interval
    return interval * (1 - INTERVAL_SPREAD), interval * (1 + INTERVAL_SPREAD)


def retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    status: int | None,
    conn_options: APIConnectOptions,
    rand: Callable[[], float] = _SYSTEM_RANDOM.random,
) -> float:
    """Seconds to wait before retry number `attempt + 1`, drawn from `retry_window`.

    Args:
        attempt: As for `retry_window`.
        retry_after: As for `retry_window`.
        status: As for `retry_window`.
        conn_options: As for `retry_window`.
        rand: Uniform numbers in [0, 1), e.g. `random.Random(seed).random` in a
            test; by default the operating system's random source.

    Returns:
        A wait spread uniformly over the window, so the mean is its middle.
    """
    low, high = retry_window(attempt, retry_after, status=status, conn_options=conn_options)
    return low + (high - low) * rand()


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

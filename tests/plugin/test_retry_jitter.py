"""The retry waits are jittered: bounded, never under Retry-After, spread across a fleet.

Pure-policy tests (no server): `retry_delay` takes its random source as an
argument, so a seeded `random.Random` makes every draw here reproducible. The
fleet over a real server is `test_fleet_retries.py`.
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import pytest
from livekit.agents import APIConnectOptions

from livekit.plugins.protoface.retry import (
    FIRST_RETRY_DELAY,
    FIRST_RETRY_SPREAD,
    retry_delay,
    retry_window,
)

# The fleet benchmark's count of retries in the busiest window (appended, as in
# test_fleet_retries.py: benchmarks/ has module names the test folders also use).
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))

from fleet_server import largest_window

DEFAULTS = APIConnectOptions()  # max_retry=3, retry_interval=2.0, timeout=10.0


@pytest.mark.parametrize("attempt", [0, 1, 2, 5])
@pytest.mark.parametrize("status", [None, 500, 503, 429, 408])
def test_every_wait_stays_inside_its_window(attempt: int, status: int | None) -> None:
    rng = random.Random(attempt * 1000 + (status or 0))
    low, high = retry_window(attempt, None, status=status, conn_options=DEFAULTS)
    assert 0 <= low < high
    for _ in range(2000):
        delay = retry_delay(attempt, None, status=status, conn_options=DEFAULTS, rand=rng.random)
        assert low <= delay < high
    # The window's ends are what rand's ends give.
    assert retry_delay(attempt, None, status=status, conn_options=DEFAULTS, rand=lambda: 0.0) == low


def test_the_first_retry_comes_quickly_but_not_at_one_instant() -> None:
    assert retry_window(0, None, status=503, conn_options=DEFAULTS) == (
        FIRST_RETRY_DELAY,
        FIRST_RETRY_DELAY + FIRST_RETRY_SPREAD,
    )
    assert FIRST_RETRY_DELAY + FIRST_RETRY_SPREAD <= 0.6
    # Independent of retry_interval, as before: a 60 s interval does not slow a blip's retry.
    slow = APIConnectOptions(retry_interval=60.0)
    assert retry_window(0, None, status=None, conn_options=slow) == (0.1, 0.6)


@pytest.mark.parametrize("interval", [0.5, 2.0, 7.0])
def test_later_waits_average_retry_interval(interval: float) -> None:
    options = APIConnectOptions(retry_interval=interval)
    low, high = retry_window(1, None, status=None, conn_options=options)
    assert (low + high) / 2 == pytest.approx(interval)
    rng = random.Random(42)
    waits = [
        retry_delay(1, None, status=None, conn_options=options, rand=rng.random)
        for _ in range(20_000)
    ]
    assert statistics.fmean(waits) == pytest.approx(interval, rel=0.02)


def test_a_zero_retry_interval_still_means_no_wait_after_the_first_retry() -> None:
    options = APIConnectOptions(retry_interval=0.0)
    rng = random.Random(3)
    assert {
        retry_delay(n, None, status=500, conn_options=options, rand=rng.random)
        for n in range(1, 4)
        for _ in range(100)
    } == {0.0}


@pytest.mark.parametrize("retry_after", [0.0, 0.3, 1.0, 7.0, 120.0])
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_never_undercut(retry_after: float, status: int) -> None:
    rng = random.Random(int(retry_after * 10) + status)
    low, high = retry_window(2, retry_after, status=status, conn_options=DEFAULTS)
    assert low == retry_after  # at least what the server asked for
    assert high > retry_after  # plus a random extra, so a fleet does not return at once
    assert high - retry_after <= 0.5 + 0.1 * retry_after + 1e-9  # small: a bounded extra
    delays = [
        retry_delay(2, retry_after, status=status, conn_options=DEFAULTS, rand=rng.random)
        for _ in range(5000)
    ]
    assert min(delays) >= retry_after
    assert max(delays) < high
    # Spread, not a fixed extra.
    assert max(delays) - min(delays) > 0.8 * (high - low)


def test_retry_after_on_other_statuses_is_ignored() -> None:
    # The API sends Retry-After only on 429 and 503; elsewhere the normal window applies.
    assert retry_window(0, 30.0, status=500, conn_options=DEFAULTS) == (0.1, 0.6)


def test_a_large_seeded_sample_is_spread_evenly_over_the_window() -> None:
    rng = random.Random(2024)
    low, high = retry_window(0, None, status=503, conn_options=DEFAULTS)
    waits = [
        retry_delay(0, None, status=503, conn_options=DEFAULTS, rand=rng.random)
        for _ in range(50_000)
    ]
    tenths = [0] * 10
    for wait in waits:
        tenths[int((wait - low) / (high - low) * 10)] += 1
    # Uniform: every tenth of the window holds 10 % of the waits (± 1 point).
    assert all(0.09 < count / len(waits) < 0.11 for count in tenths), tenths


@pytest.mark.parametrize("agents", [200, 1000])
def test_a_fleet_meeting_the_same_503s_does_not_retry_in_step(agents: int) -> None:
    # Every agent fails at t=0 and again on its first retry (as in the issue);
    # under fixed delays all first retries share one instant: a share of 0.5.
    rng = random.Random(agents)
    retries: list[float] = []
    for _ in range(agents):
        first = retry_delay(0, None, status=503, conn_options=DEFAULTS, rand=rng.random)
        second = first + retry_delay(1, None, status=503, conn_options=DEFAULTS, rand=rng.random)
        retries += [first, second]
    assert largest_window(retries) / len(retries) <= 0.20


def test_reseeding_the_global_random_does_not_put_agents_back_in_step() -> None:
    # An agent may call random.seed() for its own reasons; fleets doing so alike
    # must still draw different waits, so the default source is not the shared one.
    def draws() -> list[float]:
        random.seed(1234)
        return [retry_delay(0, None, status=503, conn_options=DEFAULTS) for _ in range(5)]

    assert draws() != draws()

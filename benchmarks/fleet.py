"""The fleet measurement of `benchmarks/run` (`--only fleet`): N agents meeting the same 503s.

    uv run python benchmarks/fleet.py [--agents 200,500] [--rounds 3]

A loopback aiohttp server (`fleet_server.py`) stands in for a Protoface that
is recovering: it answers 503 (no `Retry-After`) to the first two attempts of
every `Idempotency-Key` and creates the session on the third (a replay of a key
gets the session it already has). N `ProtofaceAPI` clients, each with its own HTTP
session as separate agents have, with the published `APIConnectOptions`
defaults, start `start_session` at the same instant. Each size runs with the
plugin's retry waits (`jittered`) and, for comparison in the same run, with the
fixed waits of before (`fixed`: 0.1 s, then `retry_interval`), put back by
swapping `requester.retry_delay` for the duration of that fleet.

Per fleet: the largest share of the retries (attempts after a key's first) that
arrived at the server within any 100 ms window, the sessions created and the
distinct ids returned, errors, and each agent's wait (the instant all started to
its `start_session` returning): p50 and the slowest. The server runs in a
process of its own, the agents share this one's event loop; on a loaded machine
that loop falls behind and sends in bursts, which inflates the jittered share
and, if anything, smears the fixed waits' lockstep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from fleet_server import (
    FAILURES_PER_KEY,
    WINDOW_S,
    largest_window,
    recovering_service,
    service_stats,
)
from livekit.agents import APIConnectOptions

from livekit.plugins.protoface import requester
from livekit.plugins.protoface.api import ProtofaceAPI

Json = dict[str, Any]
SIZES = {"full": (200, 500), "quick": (200,)}
ROUNDS = {"full": 3, "quick": 1}
POLICIES = ("jittered", "fixed")
# The name the request loop calls its wait policy by; swapped for the `fixed` fleets.
_SEAM = "retry_delay"
API_KEY = "pf_bench_fleet_0000000000000000"
TRANSPORT = {
    "type": "livekit",
    "url": "ws://127.0.0.1:7880",
    "room_name": "fleet-room",
    "worker_token": "worker.jwt.token",
}


def _fixed_delay(
    attempt: int,
    retry_after: float | None,
    *,
    status: int | None,
    conn_options: APIConnectOptions,
    rand: Callable[[], float] | None = None,
) -> float:
    """The waits before jitter: 0.1 s, then `retry_interval`; `Retry-After` replaced them."""
    if retry_after is not None and status in (429, 503):
        return retry_after
    return 0.1 if attempt == 0 else conn_options.retry_interval


@contextlib.contextmanager
def _policy(name: str) -> Iterator[None]:
    if name == "jittered":
        yield
        return
    jittered = getattr(requester, _SEAM)
    setattr(requester, _SEAM, _fixed_delay)
    try:
        yield
    finally:
        setattr(requester, _SEAM, jittered)


async def one_fleet(agents: int, policy: str) -> Json:
    """N agents create at once against a fresh recovering service; what the server saw."""
    async with recovering_service() as url:
        clients = [
            ProtofaceAPI(api_key=API_KEY, api_url=url, conn_options=APIConnectOptions())
            for _ in range(agents)
        ]
        go = asyncio.Event()
        started = 0.0

        async def agent(api: ProtofaceAPI, n: int) -> tuple[str | None, float]:
            await go.wait()
            try:
                session = await api.start_session(
                    avatar_id="av_stock_001", transport=TRANSPORT, idempotency_key=f"agent-{n}"
                )
            except Exception:
                return None, time.monotonic() - started
            return str(session["id"]), time.monotonic() - started

        with _policy(policy):
            tasks = [asyncio.create_task(agent(api, n)) for n, api in enumerate(clients)]
            await asyncio.sleep(0)  # every task waits on the event before it is set
            started = time.monotonic()
            go.set()
            try:
                done = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
            finally:
                await asyncio.gather(*(api.aclose() for api in clients))
        seen = await service_stats(url)
    attempts: dict[str, int] = seen["attempts"]
    retry_times: list[float] = seen["retry_times"]
    ids = [session_id for session_id, _ in done if session_id is not None]
    waits = sorted(wait for _, wait in done)
    peak = largest_window(retry_times)
    return {
        "agents": agents,
        "policy": policy,
        "sessions_created": len(seen["sessions"]),
        "distinct_ids_returned": len(set(ids)),
        "errors": agents - len(ids),
        "attempts": sum(attempts.values()),
        "retries": len(retry_times),
        "peak_window_retries": peak,
        "peak_window_share": round(peak / max(1, len(retry_times)), 4),
        "wait_p50_s": round(statistics.median(waits), 3),
        "wait_max_s": round(waits[-1], 3),
    }


def _aggregate(rows: list[Json]) -> Json:
    shares = [r["peak_window_share"] for r in rows]
    return {
        "rounds": len(rows),
        "peak_window_share_max": max(shares),
        "peak_window_share_median": round(statistics.median(shares), 4),
        "sessions_created": sorted({r["sessions_created"] for r in rows}),
        "duplicates": sum(r["sessions_created"] - r["distinct_ids_returned"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "wait_p50_s": round(statistics.median(r["wait_p50_s"] for r in rows), 3),
        "wait_max_s": max(r["wait_max_s"] for r in rows),
        "per_round": rows,
    }


async def measure_fleet(quick: bool = False, sizes: tuple[int, ...] | None = None) -> Json:
    """Every size, each policy in turn (their order alternating by round)."""
    mode = "quick" if quick else "full"
    # A warning per retry, thousands of them, would cost the shared loop more than the requests.
    logging.getLogger("livekit.plugins.protoface").setLevel(logging.ERROR)
    sizes = sizes or SIZES[mode]
    rounds = ROUNDS[mode]
    by_size: Json = {}
    for agents in sizes:
        rows: dict[str, list[Json]] = {p: [] for p in POLICIES}
        for round_index in range(rounds):
            order = POLICIES if round_index % 2 == 0 else POLICIES[::-1]
            for policy in order:
                rows[policy].append(await one_fleet(agents, policy))
        by_size[str(agents)] = {p: _aggregate(rows[p]) for p in POLICIES}
    return {
        "method": {
            "failures_per_key": FAILURES_PER_KEY,
            "window_s": WINDOW_S,
            "conn_options": {"max_retry": 3, "retry_interval_s": 2.0, "timeout_s": 10.0},
            "rounds": rounds,
        },
        "sizes": by_size,
    }


def main() -> int:
    """Run the fleets and print the section as JSON (benchmarks/run records it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="200,500", help="comma-separated fleet sizes")
    parser.add_argument("--rounds", type=int, default=ROUNDS["full"])
    args = parser.parse_args()
    sizes = tuple(int(part) for part in args.agents.split(",") if part.strip())
    ROUNDS["full"] = args.rounds
    section = asyncio.run(measure_fleet(sizes=sizes))
    for size, policies in section["sizes"].items():
        for policy, agg in policies.items():
            print(
                f"{size} agents, {policy}: peak share {agg['peak_window_share_max']:.1%} "
                f"(median {agg['peak_window_share_median']:.1%}), sessions "
                f"{agg['sessions_created']}, duplicates {agg['duplicates']}, errors "
                f"{agg['errors']}, wait p50 {agg['wait_p50_s']} s, slowest {agg['wait_max_s']} s",
                file=sys.stderr,
            )
    print(json.dumps(section, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fleet section of RESULTS.md and its targets, from results.json, without importing LiveKit.

`fleet.py` measures; this renders its section for `report.py` and gives
`bench.py` its targets.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]
SHARE_GOAL = 0.20


def _pct(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "n/a"


def _sizes(results: Json) -> dict[str, Json]:
    fleet = results.get("fleet")
    if not isinstance(fleet, dict) or not isinstance(fleet.get("sizes"), dict):
        return {}
    return {k: v for k, v in fleet["sizes"].items() if isinstance(v, dict)}


def markdown(results: Json) -> list[str]:
    """The section: the method, then one row per fleet size and retry policy."""
    fleet = results.get("fleet")
    if not isinstance(fleet, dict):
        return []
    lines = ["## A fleet meeting the same 503s", ""]
    if "error" in fleet:
        return [*lines, f"Not measured: {fleet['error']}", ""]
    method = fleet.get("method") or {}
    co = method.get("conn_options") or {}
    lines += [
        "N `ProtofaceAPI` clients (each with its own HTTP session, as separate agents have; "
        f"`APIConnectOptions(max_retry={co.get('max_retry')}, "
        f"retry_interval={co.get('retry_interval_s')}, timeout={co.get('timeout_s')})`, the "
        "published defaults) call `start_session` at the same instant against a loopback "
        f"aiohttp server that answers 503 without `Retry-After` to the first "
        f"{method.get('failures_per_key')} attempts of every `Idempotency-Key` and creates the "
        "session on the next (`benchmarks/fleet.py`; the server in a process of its own, the "
        "clients sharing one event loop). "
        "`jittered` is the plugin; `fixed` puts back the waits of before (0.1 s, then "
        "`retry_interval`) in the same run. Peak share: the largest share of all retries "
        f"arriving at the server within any {int(method.get('window_s', 0.1) * 1000)} ms "
        f"window (goal ≤ {SHARE_GOAL:.0%}), worst and median over "
        f"{method.get('rounds')} round(s). Wait: from the common start to an agent's "
        "`start_session` returning.",
        "",
        "| agents | retry waits | peak share (worst) | peak share (median) | sessions created "
        "| duplicates | errors | wait p50 s | slowest agent's wait s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, policies in _sizes(results).items():
        for policy, agg in policies.items():
            created = ", ".join(str(n) for n in agg.get("sessions_created", []))
            lines.append(
                f"| {size} | {policy} | {_pct(agg.get('peak_window_share_max'))} "
                f"| {_pct(agg.get('peak_window_share_median'))} | {created} "
                f"| {agg.get('duplicates')} | {agg.get('errors')} | {agg.get('wait_p50_s')} "
                f"| {agg.get('wait_max_s')} |"
            )
    return [*lines, ""]


def fleet_targets(results: Json) -> Json:
    """The fleet targets (issue 4's goals), for the targets table."""
    sizes = _sizes(results)
    jittered = {size: p.get("jittered") or {} for size, p in sizes.items()}
    if not jittered:
        return {}
    shares = [agg.get("peak_window_share_max") for agg in jittered.values()]
    worst = None if None in shares or not shares else max(s for s in shares if s is not None)
    one_each = all(
        agg.get("sessions_created") == [int(size)]
        and agg.get("duplicates") == 0
        and agg.get("errors") == 0
        for size, agg in jittered.items()
    )
    return {
        "fleet_at_most_20_pct_of_retries_in_any_100_ms": {
            "value": worst,
            "limit": SHARE_GOAL,
            "met": worst is not None and worst <= SHARE_GOAL,
        },
        "fleet_exactly_one_session_per_agent": {
            "value": {size: agg.get("sessions_created") for size, agg in jittered.items()},
            "met": one_each,
        },
    }

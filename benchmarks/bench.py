"""The benchmark orchestrator behind `benchmarks/run`: ours against the published 1.8.9.

    uv run python benchmarks/bench.py [--quick] [--only latency,scale,faults,e2e,fleet] [--out DIR]

It runs the emulator in this process (one per measurement, serving both
clients), starts each client as its own process (`client.py` under the
workspace interpreter for our plugin, under `benchmarks/.venv-published` for the
published one), interleaves them in rounds, runs the end-to-end measurement
(`e2e.py`) against a real `livekit-server --dev`, and writes `results.json` and
`RESULTS.md`. Everything listens on 127.0.0.1 and everything started is stopped;
`processes_left` in the results says so.

Measurements (see RESULTS.md for the numbers and the method in full):

- `start_latency`: `ProtofaceAPI.start_session` against the emulator, warm
  connection, versus the same POST with bare aiohttp (the floor).
- `scale`: 1,000 concurrent creates, then 1,000 concurrent ends, one client.
- `faults`: real `AvatarSession.start()` + `aclose()` under injected faults,
  counted from the emulator's store.
- `e2e`: first avatar frame and audio-to-mouth latency, emulator CPU per session.
- `lifetime`: the avatar leaving (agent heard again, avatar restored), API
  requests per session-minute in steady state, a call longer than its cap
  (`lifetime.py`).
- `scale_curve`: N concurrent watched sessions against the emulator command,
  the load generator in its own process: viewer fps, emulator CPU (all its
  processes), API latency, failures (`scale_curve.py`).
- `fleet`: N agents (200, 500) creating at once against a server answering
  503 to each key's first two attempts: the peak share of retries in any 100 ms
  window, sessions created, waits (`fleet.py`; no published client needed).
- `hosted_timing`: cold starts of 0, 2 and 5 s: time to first word and to face,
  avatar and no avatar; a line twice the idle timeout; the agent process's CPU
  per conversation minute (`hosted_timing.py`; no published client needed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import null_worker
import numpy as np
import psutil
from fleet import measure_fleet
from fleet_report import fleet_targets
from hosted_timing import measure_hosted_timing
from hosted_timing_report import hosted_timing_targets
from lifetime import measure_lifetime
from livekit.agents import __version__ as agents_version
from livekit.rtc import __version__ as rtc_version
from parity import measure_parity
from parity_report import parity_targets
from report import write_markdown
from scale_curve import measure_scale_curve

from livekit.plugins.protoface.version import __version__ as ours_version
from protoface_emulator.api.faults import Fault, Faults
from protoface_emulator.server import Emulator
from protoface_emulator.testing import (
    LiveKitServer,
    find_livekit_server,
    local_livekit_server,
    mint_token,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLIENT = HERE / "client.py"
E2E = HERE / "e2e.py"
WORK = HERE / ".work"
OURS_PYTHON = sys.executable
PUBLISHED_PYTHON = HERE / ".venv-published" / "bin" / "python"
PUBLISHED_VERSION = "1.8.9"

# Faults: the same client settings for both plugins; a late answer arrives after
# the client's timeout, and the session it creates exists all the same.
FAULT_TIMEOUT_S = 1.0
FAULT_MAX_RETRY = 3
FAULT_RETRY_INTERVAL_S = 0.5
FAULT_LATE_DELAY_S = 2.0
FAULT_RETRY_AFTER_S = 1.0
P_LATE, P_503, P_DROP = 0.20, 0.10, 0.05
FAULT_SEED = 20240905

Json = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How much of each measurement a run does."""

    mode: str
    latency_warmup: int
    latency_batch: int
    latency_rounds: int
    profile_samples: int
    scale_sessions: int
    scale_rounds: int
    faults_starts_per_round: int
    faults_rounds: int
    faults_concurrency: int
    e2e_runs: int
    cpu_sessions: int
    cpu_seconds: float


QUICK = Plan(
    mode="quick",
    # Latency is cheap (~13 s) and noisy at sub-millisecond scale: as many samples
    # as the full run.
    latency_warmup=30,
    latency_batch=25,
    latency_rounds=24,
    profile_samples=150,
    scale_sessions=1000,
    scale_rounds=1,
    faults_starts_per_round=50,
    faults_rounds=2,
    faults_concurrency=10,
    e2e_runs=6,
    cpu_sessions=2,
    cpu_seconds=6.0,
)
FULL = Plan(
    mode="full",
    latency_warmup=30,
    latency_batch=25,
    latency_rounds=24,
    profile_samples=300,
    scale_sessions=1000,
    scale_rounds=3,
    faults_starts_per_round=100,
    faults_rounds=5,
    faults_concurrency=10,
    e2e_runs=24,
    cpu_sessions=3,
    cpu_seconds=15.0,
)

CLIENTS: dict[str, Path | str] = {"ours": OURS_PYTHON, "published": PUBLISHED_PYTHON}


def _order(names: Sequence[str], round_index: int) -> list[str]:
    """Alternate who goes first, so neither client always follows the other."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


# -- the emulator, in this process ---------------------------------------------------


class CountingFaults(Faults):
    """The emulator's `Faults`, counting what it drew for session creates (for the report)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.tally: Counter[str] = Counter()

    def draw(self, method: str, path: str) -> Fault | None:
        fault = super().draw(method, path)
        if method.upper() == "POST" and path.rstrip("/") == "/v1/sessions":
            self.tally["requests"] += 1
            self.tally[fault.kind if fault is not None else "clean"] += 1
        return fault


@asynccontextmanager
async def api_emulator(seed: int = 0) -> AsyncIterator[tuple[Emulator, CountingFaults]]:
    """An emulator whose workers join nothing (`null_worker`), limits raised for 1,000."""
    faults = CountingFaults(seed)
    emulator = Emulator(
        worker_factory=null_worker.factory,
        max_concurrency=2000,
        join_timeout=3600.0,
        faults=faults,
    )
    await emulator.start()
    try:
        yield emulator, faults
    finally:
        await emulator.aclose()


# -- client processes ------------------------------------------------------------


def _log_file(name: str) -> IO[bytes]:
    WORK.mkdir(parents=True, exist_ok=True)
    return (WORK / f"{name}.log").open("ab")


class ClientProcess:
    """A long-lived `client.py` speaking JSON lines (the latency role)."""

    def __init__(self, name: str, python: Path | str, job: Json) -> None:
        self.name = name
        self._python = str(python)
        self._job = job
        self._process: asyncio.subprocess.Process | None = None
        self.hello: Json = {}

    async def start(self) -> None:
        with _log_file(f"latency-{self.name}") as log:
            self._process = await asyncio.create_subprocess_exec(
                self._python,
                str(CLIENT),
                json.dumps(self._job),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=REPO,
                limit=2**24,
            )
        self.hello = await self._read(60)

    async def _read(self, timeout: float) -> Json:
        assert self._process is not None and self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client {self.name} exited; see {WORK}/latency-{self.name}.log")
        reply: Json = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"client {self.name}: {reply['error']}")
        return reply

    async def call(self, command: Json, timeout: float = 120) -> Json:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write((json.dumps(command) + "\n").encode())
        await self._process.stdin.drain()
        return await self._read(timeout)

    async def close(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.call({"op": "exit"}, timeout=10)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


async def one_shot(name: str, python: Path | str, script: Path, job: Json, timeout: float) -> Json:
    """Run `script` with `job`, bounded by `timeout`; its last stdout line is the result."""
    with _log_file(name) as log:
        process = await asyncio.create_subprocess_exec(
            str(python),
            str(script),
            json.dumps(job),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=REPO,
            limit=2**24,
        )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(
            f"{name} took longer than {timeout:.0f} s; see {WORK}/{name}.log"
        ) from None
    lines = out.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed (exit {process.returncode}); see {WORK}/{name}.log")
    result: Json = json.loads(lines[-1])
    return result


# -- statistics ------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation), rounded to 0.01."""
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 3)


def summary(values: Sequence[float]) -> Json:
    """n, p50, p90, p99, mean, min, max of `values` (milliseconds)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "mean": round(float(np.mean(values)), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded to 0.001, None if either is missing."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


# -- measurements ----------------------------------------------------------------


def bench_worker_token() -> str:
    """A real LiveKit JWT, as a plugin mints for the avatar worker, for sessions whose
    worker joins nothing (latency, scale): the bodies weigh what production ones do."""
    return mint_token(
        "benchkey",
        "bench-secret-not-used-by-any-server-000000",
        "protoface-avatar-agent",
        "bench",
        kind="agent",
    )


async def measure_latency(plan: Plan) -> Json:
    """`start_session` p50/p99 per plugin and the bare-aiohttp floor, interleaved."""
    async with api_emulator() as (emulator, _):
        base = {
            "role": "latency",
            "api_url": emulator.url,
            "api_key": emulator.api_key,
            "worker_token": bench_worker_token(),
        }
        processes = {
            "ours": ClientProcess("ours", OURS_PYTHON, {**base, "variant": "plugin"}),
            "published": ClientProcess(
                "published", PUBLISHED_PYTHON, {**base, "variant": "plugin"}
            ),
            "ours_fresh_client": ClientProcess(
                "ours_fresh_client", OURS_PYTHON, {**base, "variant": "plugin_fresh"}
            ),
            "floor": ClientProcess("floor", OURS_PYTHON, {**base, "variant": "floor"}),
            "floor_no_key": ClientProcess(
                "floor_no_key", OURS_PYTHON, {**base, "variant": "floor_no_key"}
            ),
        }
        names = list(processes)
        samples: dict[str, list[float]] = {name: [] for name in names}
        round_medians: dict[str, list[float]] = {name: [] for name in names}
        connections: dict[str, int] = {}
        secrets_held: int | None = None
        profiles: dict[str, str] = {}
        try:
            for process in processes.values():  # one at a time: imports are CPU-heavy
                await process.start()
            for name in names:
                await processes[name].call({"op": "batch", "n": plan.latency_warmup})
            for index in range(plan.latency_rounds):
                for name in _order(names, index):
                    reply = await processes[name].call({"op": "batch", "n": plan.latency_batch})
                    batch: list[float] = reply["samples_ms"]
                    samples[name].extend(batch)
                    round_medians[name].append(round(float(np.median(batch)), 3))
                    connections[name] = int(reply["connections_opened"])
                    if name == "ours":
                        secrets_held = reply.get("secrets_held")
            for name in ("ours", "ours_fresh_client", "published"):
                reply = await processes[name].call(
                    {"op": "profile", "n": plan.profile_samples}, timeout=300
                )
                profiles[name] = str(reply["profile"])
        finally:
            await asyncio.gather(*(p.close() for p in processes.values()))
    stats = {name: summary(samples[name]) for name in names}

    def p(name: str, q: str) -> float | None:
        value = stats[name].get(q)
        return None if value is None else float(value)

    paired = [
        o / f for o, f in zip(round_medians["ours"], round_medians["floor"], strict=True) if f
    ]
    return {
        "ours_p50_ms": p("ours", "p50"),
        "ours_p99_ms": p("ours", "p99"),
        "published_p50_ms": p("published", "p50"),
        "published_p99_ms": p("published", "p99"),
        "floor_p50_ms": p("floor", "p50"),
        "floor_p99_ms": p("floor", "p99"),
        "floor_no_key_p50_ms": p("floor_no_key", "p50"),
        "ours_fresh_client_p50_ms": p("ours_fresh_client", "p50"),
        "ours_fresh_client_p99_ms": p("ours_fresh_client", "p99"),
        "ratio_ours_fresh_client_to_floor_p50": ratio(
            p("ours_fresh_client", "p50"), p("floor", "p50")
        ),
        "ratio_ours_to_floor_p50": ratio(p("ours", "p50"), p("floor", "p50")),
        "ratio_published_to_floor_no_key_p50": ratio(
            p("published", "p50"), p("floor_no_key", "p50")
        ),
        "ratio_ours_to_published_p50": ratio(p("ours", "p50"), p("published", "p50")),
        "ratio_ours_to_floor_paired_rounds_median": (
            round(float(np.median(paired)), 3) if paired else None
        ),
        "samples_per_client": plan.latency_batch * plan.latency_rounds,
        "warmup_per_client": plan.latency_warmup,
        "rounds": plan.latency_rounds,
        "stats_ms": stats,
        "round_medians_ms": round_medians,
        "connections_opened": connections,
        "ours_secrets_held_at_end": secrets_held,
        "profiles": profiles,
        "hello": {name: processes[name].hello.get("hello") for name in names},
    }


async def measure_scale(plan: Plan) -> Json:
    """1,000 concurrent creates, then 1,000 concurrent ends, through one client."""
    runs: dict[str, list[Json]] = {name: [] for name in CLIENTS}
    async with api_emulator() as (emulator, _):
        for index in range(plan.scale_rounds):
            for name in _order(list(CLIENTS), index):
                label = f"{name}-r{index}"
                null_worker.LIVE.reset_peak()
                result = await one_shot(
                    f"scale-{label}",
                    CLIENTS[name],
                    CLIENT,
                    {
                        "role": "scale",
                        "api_url": emulator.url,
                        "api_key": emulator.api_key,
                        "worker_token": bench_worker_token(),
                        "sessions": plan.scale_sessions,
                        "label": label,
                        "timeout": 120,
                    },
                    timeout=240,
                )
                prefix = f"scale-{label}-"
                mine = [
                    r
                    for r in emulator.store.iter_sessions()
                    if r.transport.room_name.startswith(prefix)
                ]
                result["server_sessions_created"] = len(mine)
                result["server_sessions_ended"] = sum(1 for r in mine if r.status == "ended")
                # One null worker per live session: its count is exact.
                result["server_peak_active_sessions"] = null_worker.LIVE.peak
                result.pop("hello", None)
                result.pop("profile", None)
                runs[name].append(result)
        # One more round of ours, under cProfile, for the note; not counted above.
        profiled = await one_shot(
            "scale-ours-profile",
            OURS_PYTHON,
            CLIENT,
            {
                "role": "scale",
                "api_url": emulator.url,
                "api_key": emulator.api_key,
                "worker_token": bench_worker_token(),
                "sessions": plan.scale_sessions,
                "label": "ours-profile",
                "timeout": 300,
                "profile": True,
            },
            timeout=400,
        )
    out: Json = {
        "sessions_per_round": plan.scale_sessions,
        "rounds": plan.scale_rounds,
        "ours_profile": profiled.get("profile"),
        "ours_profile_wall_s": profiled.get("wall_s"),
    }
    for name, results in runs.items():
        out[name] = {
            "sessions": plan.scale_sessions,
            "errors": sum(int(r["errors"]) for r in results),
            "sessions_per_s": round(float(np.median([r["sessions_per_s"] for r in results])), 1),
            "peak_rss_mb": max(float(r["peak_rss_mb"]) for r in results),
            "rss_growth_mb": max(float(r["rss_growth_mb"]) for r in results),
            "connections_opened": int(np.median([r["connections_opened"] for r in results])),
            "server_peak_active_sessions": max(
                int(r["server_peak_active_sessions"]) for r in results
            ),
            "runs": results,
        }
    out["ratio_ours_to_published_sessions_per_s"] = ratio(
        out["ours"]["sessions_per_s"], out["published"]["sessions_per_s"]
    )
    return out


def _fault_truth(
    emulator: Emulator, prefix: str, records: list[Json], last_outcome: dict[str, str]
) -> Json:
    """Hosted sessions created and ended per start, from the emulator's store."""
    sessions: dict[str, list[Any]] = {}
    for record in emulator.store.iter_sessions():
        identity = record.transport.worker_identity
        if identity.startswith(prefix):
            sessions.setdefault(identity, []).append(record)

    def ended(record: Any) -> bool:
        reason = record.metadata.get("_avatar.end_reason")
        return bool(record.status == "ended" and reason == "end_requested")

    created = sum(len(v) for v in sessions.values())
    ended_count = sum(1 for v in sessions.values() for r in v if ended(r))
    ok = [r for r in records if r["ok"]]
    failed = [r for r in records if not r["ok"]]
    per_ok = [len(sessions.get(r["identity"], [])) for r in ok]
    return {
        "hosted_sessions_created": created,
        "hosted_sessions_ended": ended_count,
        "orphaned": created - ended_count,
        "ok_starts_with_one_session": sum(1 for n in per_ok if n == 1),
        "ok_starts_with_duplicates": sum(1 for n in per_ok if n > 1),
        "ok_starts_without_session": sum(1 for n in per_ok if n == 0),
        "max_sessions_for_one_start": max((len(v) for v in sessions.values()), default=0),
        "failed_starts_that_created_sessions": sum(
            1 for r in failed if sessions.get(r["identity"])
        ),
        "failed_starts_sessions_ended": sum(
            1 for r in failed for s in sessions.get(r["identity"], []) if ended(s)
        ),
        "orphans": [
            {
                "identity": r["identity"],
                "start_ok": r["ok"],
                "start_error": r["error"],
                "last_create_request": last_outcome.get(r["identity"], "none"),
                "orphaned_sessions": sum(
                    1 for x in sessions.get(r["identity"], []) if not ended(x)
                ),
            }
            for r in records
            if any(not ended(x) for x in sessions.get(r["identity"], []))
        ],
        "reported_session_ended": sum(
            1
            for r in ok
            if any(s.id == r["session_id"] and ended(s) for s in sessions.get(r["identity"], []))
        ),
    }


async def measure_faults(plan: Plan, livekit: LiveKitServer) -> Json:
    """Real `AvatarSession.start()` + `aclose()` under injected faults, server-side truth."""
    per_client: dict[str, list[Json]] = {name: [] for name in CLIENTS}
    crashed: list[Json] = []
    async with api_emulator(FAULT_SEED) as (emulator, faults):
        # Armed through the documented mechanism; the emulator draws them in turn.
        emulator.faults.add(
            "POST /v1/sessions", "late", probability=P_LATE, delay=FAULT_LATE_DELAY_S
        )
        emulator.faults.add(
            "POST /v1/sessions",
            "error",
            status=503,
            retry_after=FAULT_RETRY_AFTER_S,
            probability=P_503 / (1 - P_LATE),
        )
        emulator.faults.add("POST /v1/sessions", "drop", probability=P_DROP / (1 - P_LATE - P_503))
        for index in range(plan.faults_rounds):
            for name in _order(list(CLIENTS), index):
                prefix = f"flt-{name}-r{index}"
                faults.seed(FAULT_SEED + index)  # both clients of a round: same random stream
                faults.tally.clear()
                try:
                    result = await one_shot(
                        f"faults-{name}-r{index}",
                        CLIENTS[name],
                        CLIENT,
                        {
                            "role": "faults",
                            "api_url": emulator.url,
                            "api_key": emulator.api_key,
                            "livekit": {
                                "url": livekit.url,
                                "api_key": livekit.api_key,
                                "api_secret": livekit.api_secret,
                                # The client may run the published plugin's environment,
                                # which has no kit: its agent's token is minted here.
                                "agent_token": livekit.token(
                                    f"agent-{prefix}", prefix, kind="agent"
                                ),
                            },
                            "prefix": prefix,
                            "starts": plan.faults_starts_per_round,
                            "concurrency": plan.faults_concurrency,
                            "timeout": FAULT_TIMEOUT_S,
                            "max_retry": FAULT_MAX_RETRY,
                            "retry_interval": FAULT_RETRY_INTERVAL_S,
                            "start_timeout": 60,
                            "deadline": 240,
                        },
                        timeout=300,
                    )
                except RuntimeError as exc:
                    # A client process that died (a native abort in LiveKit's SDK has
                    # been seen) loses its round, not the section: say so and go on.
                    crashed.append({"client": name, "round": index, "error": str(exc)})
                    print(f"bench: faults round {index} of {name}: {exc}", file=sys.stderr)
                    continue
                # Late answers still in flight create nothing new; let them finish anyway.
                await asyncio.sleep(FAULT_LATE_DELAY_S + 0.5)
                result["fault_tally"] = dict(faults.tally)
                result["server"] = _fault_truth(
                    emulator,
                    prefix + "-",
                    result["records"],
                    result["requests"].pop("last_create_outcome"),
                )
                per_client[name].append(result)
    out: Json = {
        "starts_per_round": plan.faults_starts_per_round,
        "rounds": plan.faults_rounds,
        "rounds_lost": crashed,
        "concurrency": plan.faults_concurrency,
        "conn_options": {
            "timeout_s": FAULT_TIMEOUT_S,
            "max_retry": FAULT_MAX_RETRY,
            "retry_interval_s": FAULT_RETRY_INTERVAL_S,
        },
        "injected": {
            "route": "POST /v1/sessions",
            "late_probability": P_LATE,
            "late_delay_s": FAULT_LATE_DELAY_S,
            "error_503_probability": P_503,
            "retry_after_s": FAULT_RETRY_AFTER_S,
            "drop_probability": P_DROP,
            "seed": FAULT_SEED,
        },
    }
    for name, results in per_client.items():
        server_keys = results[0]["server"].keys() if results else []
        totals = {
            key: sum(int(r["server"][key]) for r in results)
            for key in server_keys
            if key != "orphans"
        }
        totals["max_sessions_for_one_start"] = max(
            (int(r["server"]["max_sessions_for_one_start"]) for r in results), default=0
        )
        tally: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        waits: dict[str, list[float]] = {}
        for r in results:
            tally.update(r["fault_tally"])
            errors.update(r["errors_by_type"])
            for kind, values in r["requests"]["waits_before_retry_s"].items():
                waits.setdefault(kind, []).extend(values)
        requests = tally.get("requests", 0)
        out[name] = {
            "starts_attempted": sum(int(r["starts_attempted"]) for r in results),
            "starts_ok": sum(int(r["starts_ok"]) for r in results),
            "hosted_sessions_created": totals.get("hosted_sessions_created", 0),
            "orphaned": totals.get("orphaned", 0),
            "wall_s": round(sum(float(r["wall_s"]) for r in results), 3),
            **{k: v for k, v in totals.items() if k not in ("hosted_sessions_created", "orphaned")},
            "create_requests_seen": requests,
            "faults_fired": {k: v for k, v in tally.items() if k not in ("requests",)},
            "fault_share": {
                k: round(v / requests, 3) for k, v in tally.items() if k != "requests" and requests
            },
            "errors_by_type": dict(errors),
            "create_requests_sent": sum(
                int(r["requests"]["create_requests_sent"]) for r in results
            ),
            "max_create_requests_for_one_start": max(
                (int(r["requests"]["max_create_requests_for_one_start"]) for r in results),
                default=0,
            ),
            "connections_opened": sum(int(r["requests"]["connections_opened"]) for r in results),
            "wait_before_retry_s": {
                kind: {
                    "n": len(values),
                    "p50": pct(values, 50) if values else None,
                    "min": min(values) if values else None,
                }
                for kind, values in waits.items()
            },
            "start_s_p50": pct([x["start_s"] for r in results for x in r["records"]], 50)
            if results
            else None,
            "round_wall_s": [r["wall_s"] for r in results],
            "orphans": [o for r in results for o in r["server"]["orphans"]],
        }
    return out


async def measure_e2e(plan: Plan, livekit: LiveKitServer) -> Json:
    """First frame, audio to mouth and emulator CPU (ours only), in `e2e.py`."""
    job = {
        "livekit": {
            "url": livekit.url,
            "api_key": livekit.api_key,
            "api_secret": livekit.api_secret,
            "pid": livekit.process.pid,
        },
        "runs": plan.e2e_runs,
        "cpu_sessions": plan.cpu_sessions,
        "cpu_seconds": plan.cpu_seconds,
        "work_dir": str(WORK / "e2e"),
        "deadline_s": 60 + 12 * plan.e2e_runs,
    }
    raw = await one_shot("e2e", OURS_PYTHON, E2E, job, timeout=240 + 15 * plan.e2e_runs)
    runs: list[Json] = raw["runs"]
    first = [float(r["first_frame_ms"]) for r in runs if r["first_frame_ms"] is not None]
    mouth = [float(r["audio_to_mouth_ms"]) for r in runs if r["audio_to_mouth_ms"] is not None]

    def stage_medians(key: str) -> dict[str, float | None]:
        names = list(runs[0][key]) if runs else []
        medians: dict[str, float | None] = {}
        for stage in names:
            values = [float(r[key][stage]) for r in runs if r[key].get(stage) is not None]
            medians[stage] = pct(values, 50) if values else None
        return medians

    cpu: Json = raw.get("cpu") or {}
    return {
        "plugin": "ours",
        "runs": len(runs),
        "runs_planned": plan.e2e_runs,
        "first_frame_p50_ms": pct(first, 50) if first else None,
        "first_frame_p90_ms": pct(first, 90) if first else None,
        "audio_to_mouth_p50_ms": pct(mouth, 50) if mouth else None,
        "audio_to_mouth_p90_ms": pct(mouth, 90) if mouth else None,
        "emulator_cpu_per_session_pct": cpu.get("emulator_cpu_per_session_pct"),
        "cpu": cpu,
        "first_frame_stages_p50_ms": stage_medians("stages_ms"),
        "mouth_stages_p50_ms": stage_medians("mouth_stages_ms"),
        "first_frame_ms_all": first,
        "audio_to_mouth_ms_all": mouth,
        "mouth_open_before_speech_runs": sum(
            1 for r in runs if r["mouth_open_frames_before_speech"]
        ),
        "errors": raw.get("errors", []),
        "hosted_sessions_left_running": raw.get("hosted_sessions_left_running"),
        "emulator_exit_code": raw.get("emulator_exit_code"),
        "probe_lines": raw.get("probe_lines"),
    }


# -- machine, versions, targets ----------------------------------------------------


def machine() -> Json:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu_model": model,
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def livekit_server_version() -> str | None:
    """`livekit-server --version`, or None if it cannot be found."""
    binary = find_livekit_server()
    if binary is None:
        return None
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().rsplit(" ", 1)[-1] or None


def targets(results: Json) -> Json:
    """Each target of the issue: the measured value and whether it is met."""
    out: Json = {}
    latency = results.get("start_latency")
    if latency and "error" not in latency:
        value = latency.get("ratio_ours_to_floor_p50")
        out["start_within_5pct_of_floor_p50"] = {
            "value": value,
            "limit": 1.05,
            "met": value is not None and value <= 1.05,
        }
    scale = results.get("scale")
    if scale and "error" not in scale:
        ours = scale["ours"]
        out["scale_1000_concurrent_zero_errors"] = {
            "value": {
                "sessions": ours["sessions"],
                "errors": ours["errors"],
                "server_peak_active_sessions": ours["server_peak_active_sessions"],
            },
            "met": ours["sessions"] >= 1000
            and ours["errors"] == 0
            and ours["server_peak_active_sessions"] >= 1000,
        }
    faults = results.get("faults")
    if faults and "error" not in faults:
        ours = faults["ours"]
        out["faults_one_session_per_ok_start_zero_orphans"] = {
            "value": {
                "starts_ok": ours["starts_ok"],
                "ok_starts_with_one_session": ours["ok_starts_with_one_session"],
                "orphaned": ours["orphaned"],
            },
            "met": ours["ok_starts_with_one_session"] == ours["starts_ok"]
            and ours["orphaned"] == 0,
        }
    e2e = results.get("e2e")
    if e2e and "error" not in e2e:
        first = e2e.get("first_frame_p50_ms")
        mouth = e2e.get("audio_to_mouth_p50_ms")
        out["first_frame_p50_under_1s"] = {
            "value": first,
            "limit": 1000,
            "met": first is not None and first < 1000,
        }
        out["audio_to_mouth_p50_within_150ms"] = {
            "value": mouth,
            "limit": 150,
            "met": mouth is not None and mouth <= 150,
        }
    life = results.get("lifetime")
    if life and "error" not in life:
        leave = life["leave"]["ours"]
        heard_max = leave.get("heard_again_max_s")
        out["agent_heard_within_3s_after_the_avatar_left"] = {
            "value": heard_max,
            "limit": 3.0,
            "met": heard_max is not None
            and heard_max <= 3.0
            and leave["heard_again_in_20s"] == leave["runs"],
        }
        out["avatar_restored_after_every_loss"] = {
            "value": {"restored": leave["restored_runs"], "runs": leave["runs"]},
            "met": leave["restored_runs"] == leave["runs"],
        }
        steady = life["steady"]["ours"]["requests_per_session_minute"]
        out["steady_state_at_most_6_requests_per_session_minute"] = {
            "value": steady,
            "limit": 6,
            "met": steady <= 6,
        }
        cap = life["cap"]["ours"]
        gap = cap.get("max_video_gap_s")
        out["call_past_the_cap_keeps_its_avatar"] = {
            "value": {
                "sessions": cap["hosted_sessions"],
                "ceil_duration_over_cap": cap["ceil_duration_over_cap"],
                "max_video_gap_s": gap,
            },
            "met": gap is not None and gap <= 1.0 and bool(cap.get("video_until_end")),
        }
    curve = results.get("scale_curve")
    if curve and "error" not in curve:
        rows = {(r.get("quality"), r.get("sessions")): r for r in curve["rows"]}
        held = curve["largest_held"]
        s16 = rows.get(("standard", 16)) or {}
        out["16_standard_sessions_at_18_fps_p99_under_20ms"] = {
            "value": {
                "largest_standard_held": held.get("standard"),
                "status_p99_ms_at_16": s16.get("status_p99_ms"),
            },
            "limit": 20,
            "met": held.get("standard", 0) >= 16 and (s16.get("status_p99_ms") or 1e9) <= 20,
        }
        out["64_mock_sessions"] = {
            "value": held.get("mock"),
            "met": (held.get("mock") or 0) >= 64,
        }
        idle, s8 = curve.get("status_p99_idle_ms"), (rows.get(("standard", 8)) or {})
        p99_8 = s8.get("status_p99_ms")
        out["api_p99_with_8_sessions_within_2x_of_none"] = {
            "value": {"none_ms": idle, "eight_ms": p99_8},
            "met": idle is not None and p99_8 is not None and p99_8 <= 2 * idle,
        }
    out.update(parity_targets(results))
    out.update(fleet_targets(results))
    out.update(hosted_timing_targets(results))
    return out


def leftover_processes() -> list[str]:
    """Descendants of this process still alive (none expected); they are then stopped."""
    left = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{child.pid} {child.name()}")
                child.kill()
    return left


# -- main --------------------------------------------------------------------------


async def run(plan: Plan, only: set[str]) -> Json:
    if only - {"fleet", "hosted_timing"} and not PUBLISHED_PYTHON.exists():
        raise SystemExit(
            f"{PUBLISHED_PYTHON} is missing: run benchmarks/run, which installs "
            f"livekit-plugins-protoface=={PUBLISHED_VERSION} there"
        )
    started = time.monotonic()
    for old_log in WORK.glob("*.log"):  # logs of this run only
        old_log.unlink()
    results: Json = {
        "mode": plan.mode,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": head_commit(),
        "machine": machine(),
        "plan": asdict(plan),
    }
    durations: dict[str, float] = {}
    livekit: LiveKitServer | None = None
    servers = contextlib.ExitStack()
    try:
        if only & {"faults", "e2e", "lifetime", "scale_curve", "parity", "hosted_timing"}:
            livekit = servers.enter_context(local_livekit_server())
        phases: list[tuple[str, Any]] = [
            ("latency", lambda: measure_latency(plan)),
            ("scale", lambda: measure_scale(plan)),
            ("faults", lambda: measure_faults(plan, livekit)),  # type: ignore[arg-type]
            ("e2e", lambda: measure_e2e(plan, livekit)),  # type: ignore[arg-type]
            (
                "lifetime",
                lambda: measure_lifetime(
                    CLIENTS,
                    livekit,  # type: ignore[arg-type]
                    quick=plan.mode == "quick",
                ),
            ),
            (
                "scale_curve",
                lambda: measure_scale_curve(
                    livekit,  # type: ignore[arg-type]
                    quick=plan.mode == "quick",
                ),
            ),
            (
                "parity",
                lambda: measure_parity(
                    livekit,  # type: ignore[arg-type]
                    quick=plan.mode == "quick",
                ),
            ),
            ("fleet", lambda: measure_fleet(quick=plan.mode == "quick")),
            (
                "hosted_timing",
                lambda: measure_hosted_timing(
                    livekit,  # type: ignore[arg-type]
                    quick=plan.mode == "quick",
                ),
            ),
        ]
        keys = {
            "latency": "start_latency",
            "scale": "scale",
            "faults": "faults",
            "e2e": "e2e",
            "lifetime": "lifetime",
            "scale_curve": "scale_curve",
            "parity": "parity",
            "fleet": "fleet",
            "hosted_timing": "hosted_timing",
        }
        for name, measure in phases:
            if name not in only:
                continue
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            phase_started = time.monotonic()
            try:
                results[keys[name]] = await measure()
            except Exception as exc:
                results[keys[name]] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"bench: {name} failed: {exc}", file=sys.stderr, flush=True)
            durations[name] = round(time.monotonic() - phase_started, 1)
            print(f"bench: {name} took {durations[name]} s", file=sys.stderr, flush=True)
    finally:
        servers.close()
    published_hello = (results.get("start_latency") or {}).get("hello", {}).get("published") or {}
    results["versions"] = {
        "ours": ours_version,
        "published": published_hello.get("plugin_version", PUBLISHED_VERSION),
        "livekit_agents": agents_version,
        "livekit_agents_published_env": published_hello.get("livekit_agents_version"),
        "livekit_rtc": rtc_version,
        "aiohttp_published_env": published_hello.get("aiohttp_version"),
        "livekit_server": livekit_server_version(),
    }
    results["targets"] = targets({k: v for k, v in results.items() if isinstance(v, dict)})
    results["notes"] = []
    results["phase_durations_s"] = durations
    results["duration_s"] = round(time.monotonic() - started, 1)
    left = leftover_processes()
    results["processes_left"] = len(left)
    results["processes_left_names"] = left
    return results


def head_commit() -> str | None:
    """The commit the run measures (HEAD at its start), which scripts/stale-numbers compares."""
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=HERE
    )
    return done.stdout.strip() or None


SECTIONS = {
    "latency": "start_latency",
    "scale": "scale",
    "faults": "faults",
    "e2e": "e2e",
    "lifetime": "lifetime",
    "scale_curve": "scale_curve",
    "parity": "parity",
    "fleet": "fleet",
    "hosted_timing": "hosted_timing",
}


def merged_with_earlier(path: Path, results: Json, only: set[str]) -> Json:
    """`results`, plus the sections of an earlier run at `path` that this one did not measure.

    A run of a subset (`--only lifetime`) updates its sections and keeps the
    others, each stamped with the date and mode of the run that measured it.
    """
    for name in only:
        section = results.get(SECTIONS[name])
        if isinstance(section, dict):
            section["measured"] = {
                "date": results["date"],
                "mode": results["mode"],
                "commit": results.get("commit"),
            }
    if not path.exists():
        return results
    try:
        earlier: Json = json.loads(path.read_text())
    except ValueError:
        return results
    for name, key in SECTIONS.items():
        if name not in only and isinstance(earlier.get(key), dict):
            section = earlier[key]
            section.setdefault(
                "measured", {"date": earlier.get("date"), "mode": earlier.get("mode")}
            )
            results[key] = section
    results["targets"] = targets({k: v for k, v in results.items() if isinstance(v, dict)})
    return results


def main() -> int:
    """Parse the arguments and run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: under 5 minutes")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json/RESULTS.md go")
    args = parser.parse_args()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    out_dir: Path = args.out.resolve()
    results = asyncio.run(run(plan, only))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = merged_with_earlier(out_dir / "results.json", results, only)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out_dir / "RESULTS.md")
    print(json.dumps(results["targets"], indent=2))
    print(f"wrote {args.out.resolve() / 'RESULTS.md'} in {results['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

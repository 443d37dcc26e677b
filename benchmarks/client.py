"""One benchmark client process, run by either plugin's interpreter.

The orchestrator (`bench.py`) runs this file twice per measurement: with the
workspace interpreter (our plugin) and with `benchmarks/.venv-published`'s (the
published 1.8.9). Both import `livekit.plugins.protoface`, so each gets the plugin
of its own environment and neither pollutes the other. Only what both
environments have is imported here: the standard library, aiohttp, psutil and
livekit-agents (with livekit-api and livekit-rtc).

    python benchmarks/client.py '{"role": "latency", ...}'   # JSON lines on stdin/stdout
    python benchmarks/client.py '{"role": "scale", ...}'     # one JSON result on stdout
    python benchmarks/client.py '{"role": "faults", ...}'    # one JSON result on stdout

Roles:

- `latency`: a long-lived process holding a warm aiohttp session. The first
  stdout line is a hello with versions; then each stdin line is a command,
  `{"op": "batch", "n": N}` (N timed `start_session` calls, each followed by an
  untimed `end_session`), `{"op": "profile", "n": N}` (the same under cProfile)
  or `{"op": "exit"}`, answered by one stdout line. `variant` is `plugin` (this
  environment's `ProtofaceAPI.start_session`), `floor` (the same POST, headers
  and body as our plugin sends, with bare aiohttp) or `floor_no_key` (the same
  without `Idempotency-Key`, i.e. what the published plugin sends).
- `scale`: `sessions` concurrent `start_session` calls through one
  `ProtofaceAPI`, then (once all have answered, so they are all live at once)
  as many concurrent `end_session` calls.
- `faults`: `starts` real `AvatarSession.start()` calls (then `aclose()`, as a
  job's shutdown does) in a real LiveKit room, `concurrency` at a time, against
  an emulator with faults armed. Each start gets its own avatar identity, which
  the emulator stores as `transport.worker_identity`, so the orchestrator can
  count hosted sessions per start from the server's side.

Logs (the plugins' retry warnings) go to stderr; the orchestrator files them.
"""

from __future__ import annotations

import asyncio
import contextvars
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import resource
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
from livekit import rtc
from livekit.agents import AgentSession, APIConnectOptions, utils
from livekit.agents import __version__ as agents_version

from livekit.plugins.protoface import AvatarSession
from livekit.plugins.protoface.api import ProtofaceAPI
from livekit.plugins.protoface.version import __version__ as plugin_version

AVATAR_ID = "av_stock_001"
# The latency and scale sessions never reach a room (the emulator runs a worker
# factory that joins nothing); the URL is syntactically valid and unreachable.
UNREACHABLE_LIVEKIT_URL = "ws://127.0.0.1:9"
USER_AGENT = "protoface-bench-floor/1"

Json = dict[str, Any]


def _hello(role: str) -> Json:
    return {
        "role": role,
        "plugin_version": plugin_version,
        "livekit_agents_version": agents_version,
        "livekit_rtc_version": rtc.__version__,
        "aiohttp_version": aiohttp.__version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "pid": os.getpid(),
    }


def _emit(payload: Json) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _transport(room: str, worker_token: str, identity: str = "protoface-avatar-agent") -> Json:
    return {
        "type": "livekit",
        "url": UNREACHABLE_LIVEKIT_URL,
        "room_name": room,
        "worker_token": worker_token,
        "worker_identity": identity,
        "audio_source": "data_stream",
    }


@dataclass
class ConnectionCounter:
    """Counts TCP connections an aiohttp session opens (and reuses), via `TraceConfig`."""

    opened: int = 0
    reused: int = 0
    config: aiohttp.TraceConfig = field(default_factory=aiohttp.TraceConfig)

    def __post_init__(self) -> None:
        self.config.on_connection_create_end.append(self._on_create)
        self.config.on_connection_reuseconn.append(self._on_reuse)

    async def _on_create(self, *_: object) -> None:
        self.opened += 1

    async def _on_reuse(self, *_: object) -> None:
        self.reused += 1


def _job_like_session(counter: ConnectionCounter) -> aiohttp.ClientSession:
    # The connector LiveKit Agents gives a job's shared session (utils.http_context),
    # so both plugins see what they see in production.
    connector = aiohttp.TCPConnector(limit_per_host=50, keepalive_timeout=120)
    return aiohttp.ClientSession(connector=connector, trace_configs=[counter.config])


def _top(profiler: cProfile.Profile, lines: int) -> str:
    """The `lines` functions with the most own time, as pstats prints them."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(lines)
    return out.getvalue()


# -- latency -----------------------------------------------------------------


class LatencyClient:
    """Times one create per sample: the plugin's `start_session`, or the bare POST."""

    def __init__(self, job: Json, http: aiohttp.ClientSession) -> None:
        self._variant: str = job["variant"]  # plugin, plugin_fresh, floor, floor_no_key
        self._url: str = job["api_url"].rstrip("/")
        self._key: str = job["api_key"]
        self._token: str = job["worker_token"]  # minted by the orchestrator
        self._http = http
        self._api = ProtofaceAPI(api_key=self._key, api_url=self._url, session=http)
        self._n = 0
        self._headers = {
            "Authorization": f"Bearer {self._key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }

    async def sample(self, profiler: cProfile.Profile | None = None) -> float:
        """One timed create (milliseconds), then an untimed end.

        With `profiler`, it runs during the timed part only.
        """
        self._n += 1
        transport = _transport(f"lat-{self._variant}-{os.getpid()}-{self._n}", self._token)
        headers = dict(self._headers)
        if self._variant == "plugin_fresh":
            # A new client per create, as each AvatarSession has (same warm session).
            self._api = ProtofaceAPI(api_key=self._key, api_url=self._url, session=self._http)
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter_ns()
        if self._variant in ("plugin", "plugin_fresh"):
            session = await self._api.start_session(avatar_id=AVATAR_ID, transport=transport)
            elapsed = time.perf_counter_ns() - start
            session_id = str(session["id"])
        else:
            if self._variant == "floor":
                headers["Idempotency-Key"] = str(uuid.uuid4())
            async with self._http.post(
                f"{self._url}/v1/sessions",
                json={"avatar_id": AVATAR_ID, "transport": transport},
                headers=headers,
            ) as response:
                raw = await response.read()
                status = response.status
            created = json.loads(raw)
            elapsed = time.perf_counter_ns() - start
            if status != 201:
                raise RuntimeError(f"floor create answered {status}: {raw[:200]!r}")
            session_id = str(created["id"])
        if profiler is not None:
            profiler.disable()
        async with self._http.post(
            f"{self._url}/v1/sessions/{session_id}/end", headers=self._headers
        ) as response:
            await response.read()
        return elapsed / 1e6

    async def batch(self, n: int) -> list[float]:
        """`n` samples, one after another."""
        return [await self.sample() for _ in range(n)]

    async def profile(self, n: int) -> str:
        """`n` samples with cProfile on during their timed part; the top functions."""
        profiler = cProfile.Profile()
        for _ in range(n):
            await self.sample(profiler)
        return _top(profiler, 18)

    @property
    def secrets_held(self) -> int | None:
        """How many secrets our client keeps for redaction (None for the published)."""
        held = getattr(self._api, "_secrets", None)
        return len(held) if isinstance(held, set) else None


async def run_latency(job: Json) -> None:
    counter = ConnectionCounter()
    async with _job_like_session(counter) as http:
        client = LatencyClient(job, http)
        _emit({"hello": _hello("latency"), "variant": job["variant"]})
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            op = command["op"]
            if op == "exit":
                _emit({"ok": True})
                return
            try:
                if op == "batch":
                    samples = await client.batch(int(command["n"]))
                    _emit(
                        {
                            "samples_ms": samples,
                            "connections_opened": counter.opened,
                            "secrets_held": client.secrets_held,
                        }
                    )
                elif op == "profile":
                    _emit({"profile": await client.profile(int(command["n"]))})
                else:
                    _emit({"error": f"unknown op {op!r}"})
            except Exception as exc:
                _emit({"error": f"{type(exc).__name__}: {exc}"})


# -- scale ---------------------------------------------------------------------


class RssSampler:
    """Samples this process's RSS every few milliseconds while running."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self.peak = self._process.memory_info().rss
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self._process.memory_info().rss)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, self._process.memory_info().rss)


async def run_scale(job: Json) -> Json:
    n = int(job["sessions"])
    counter = ConnectionCounter()
    rss_before = psutil.Process().memory_info().rss
    async with _job_like_session(counter) as http:
        client = ProtofaceAPI(api_key=job["api_key"], api_url=job["api_url"], session=http)
        prefix = f"scale-{job['label']}"
        transports = [_transport(f"{prefix}-{i}", job["worker_token"]) for i in range(n)]
        created: list[str | None] = [None] * n
        errors: list[str] = []
        all_created = asyncio.Event()
        remaining = n

        async def one(i: int) -> None:
            nonlocal remaining
            try:
                session = await client.start_session(avatar_id=AVATAR_ID, transport=transports[i])
                created[i] = session["id"]
            except Exception as exc:
                errors.append(f"create: {type(exc).__name__}: {exc}"[:300])
            finally:
                remaining -= 1
                if remaining == 0:
                    all_created.set()
            # Every session is live at once before the first end goes out.
            await all_created.wait()
            session_id = created[i]
            if session_id is None:
                return
            try:
                await client.end_session(session_id)
            except Exception as exc:
                errors.append(f"end: {type(exc).__name__}: {exc}"[:300])

        sampler = RssSampler()
        sampler.start()
        profiler = cProfile.Profile() if job.get("profile") else None
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.wait_for(all_created.wait(), timeout=float(job.get("timeout", 120)))
        created_at = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=float(job.get("timeout", 120)))
        finished = time.perf_counter()
        if profiler is not None:
            profiler.disable()
        await sampler.stop()
    peak = max(sampler.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    held = getattr(client, "_secrets", None)
    wall = finished - started
    return {
        "hello": _hello("scale"),
        "sessions": n,
        "created": sum(1 for c in created if c is not None),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 3),
        "create_phase_s": round(created_at - started, 3),
        "end_phase_s": round(finished - created_at, 3),
        "sessions_per_s": round(n / wall, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "rss_growth_mb": round((sampler.peak - rss_before) / 2**20, 1),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "connections_opened": counter.opened,
        "connections_reused": counter.reused,
        # Our client keeps every worker token it has seen, for redaction.
        "secrets_held": len(held) if isinstance(held, set) else None,
        "profile": None if profiler is None else _top(profiler, 14),
    }


# -- faults --------------------------------------------------------------------


_current_start: contextvars.ContextVar[str] = contextvars.ContextVar("start", default="")


@dataclass
class RequestLog:
    """Every HTTP request of every start, from an aiohttp `TraceConfig`.

    Each start runs in its own task, and the plugin's requests (and the tasks it
    creates) inherit that task's context, so a context variable tells which
    start a request belongs to.
    """

    events: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)
    connections_opened: int = 0
    config: aiohttp.TraceConfig = field(default_factory=aiohttp.TraceConfig)

    def __post_init__(self) -> None:
        self.config.on_request_start.append(self._on_start)
        self.config.on_request_end.append(self._on_end)
        self.config.on_request_exception.append(self._on_exception)
        self.config.on_connection_create_end.append(self._on_connection)

    def _add(self, what: str, detail: str) -> None:
        start = _current_start.get()
        if start:
            self.events.setdefault(start, []).append((time.monotonic(), what, detail))

    async def _on_start(self, _s: object, _c: object, params: Any) -> None:
        self._add("send", f"{params.method} {params.url.path}")

    async def _on_end(self, _s: object, _c: object, params: Any) -> None:
        self._add("answer", f"{params.method} {params.url.path} {params.response.status}")

    async def _on_exception(self, _s: object, _c: object, params: Any) -> None:
        self._add("failed", f"{params.method} {params.url.path} {type(params.exception).__name__}")

    async def _on_connection(self, *_: object) -> None:
        self.connections_opened += 1

    def summary(self) -> Json:
        """Create requests per start, and how long each client waited before a retry."""
        creates_per_start: list[int] = []
        wait_after: dict[str, list[float]] = {"503": [], "timeout": [], "disconnect": []}
        for events in self.events.values():
            creates = [e for e in events if e[1] == "send" and e[2] == "POST /v1/sessions"]
            creates_per_start.append(len(creates))
            for index, (at, what, detail) in enumerate(events):
                if not detail.startswith("POST /v1/sessions "):
                    continue
                if what == "answer" and detail.endswith(" 503"):
                    kind = "503"
                elif what == "failed" and "Timeout" in detail:
                    kind = "timeout"
                elif what == "failed":
                    kind = "disconnect"
                else:
                    continue
                retry = next(
                    (
                        e[0]
                        for e in events[index + 1 :]
                        if e[1] == "send" and e[2] == "POST /v1/sessions"
                    ),
                    None,
                )
                if retry is not None:
                    wait_after[kind].append(round(retry - at, 3))
        return {
            "last_create_outcome": {
                start: self._last_create_outcome(events) for start, events in self.events.items()
            },
            "create_requests_sent": sum(creates_per_start),
            "max_create_requests_for_one_start": max(creates_per_start, default=0),
            "waits_before_retry_s": {k: sorted(v) for k, v in wait_after.items()},
            "connections_opened": self.connections_opened,
        }

    @staticmethod
    def _last_create_outcome(events: list[tuple[float, str, str]]) -> str:
        """How the start's last `POST /v1/sessions` ended: a status or an exception name."""
        for _, what, detail in reversed(events):
            if what in ("answer", "failed") and detail.startswith("POST /v1/sessions "):
                return detail.removeprefix("POST /v1/sessions ")
        return "none"


async def _bounded(aw: Awaitable[None], timeout: float) -> str | None:
    try:
        await asyncio.wait_for(aw, timeout)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def run_faults(job: Json) -> Json:
    lk = job["livekit"]
    prefix: str = job["prefix"]
    n = int(job["starts"])
    options = APIConnectOptions(
        max_retry=int(job["max_retry"]),
        retry_interval=float(job["retry_interval"]),
        timeout=float(job["timeout"]),
    )
    room = rtc.Room()
    await asyncio.wait_for(room.connect(lk["url"], lk["agent_token"]), timeout=20)
    records: list[Json] = []
    semaphore = asyncio.Semaphore(int(job["concurrency"]))

    async def one(i: int) -> None:
        identity = f"{prefix}-{i:04d}"
        _current_start.set(identity)  # this task's context only
        async with semaphore:
            avatar = AvatarSession(
                api_url=job["api_url"],
                api_key=job["api_key"],
                conn_options=options,
                avatar_participant_identity=identity,
            )
            started = time.perf_counter()
            start = avatar.start(
                AgentSession(),
                room,
                livekit_url=lk["url"],
                livekit_api_key=lk["api_key"],
                livekit_api_secret=lk["api_secret"],
            )
            error = await _bounded(start, float(job["start_timeout"]))
            session_id = avatar.session_id
            took = time.perf_counter() - started
            # What the job's shutdown does, whether start() succeeded or not.
            close_error = await _bounded(avatar.aclose(), 30.0)
            records.append(
                {
                    "identity": identity,
                    "ok": error is None,
                    "error": error,
                    "session_id": session_id,
                    "start_s": round(took, 3),
                    "close_error": close_error,
                }
            )

    requests = RequestLog()
    started = time.perf_counter()
    async with utils.http_context.open() as http:  # the job's shared HTTP session, as in a job
        # The job's session is created without trace configs; its public list takes one.
        http.trace_configs.append(requests.config)
        requests.config.freeze()
        await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(n))), timeout=float(job["deadline"])
        )
    wall = time.perf_counter() - started
    await room.disconnect()
    errors: dict[str, int] = {}
    for record in records:
        if record["error"]:
            kind = str(record["error"]).split(":")[0]
            errors[kind] = errors.get(kind, 0) + 1
    return {
        "hello": _hello("faults"),
        "starts_attempted": n,
        "starts_ok": sum(1 for r in records if r["ok"]),
        "wall_s": round(wall, 3),
        "errors_by_type": errors,
        "requests": requests.summary(),
        "records": records,
    }


def main() -> int:
    """Run the role named in the JSON job on argv."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    job: Json = json.loads(sys.argv[1])
    role = job["role"]
    if role == "latency":
        asyncio.run(run_latency(job))
    elif role == "scale":
        _emit(asyncio.run(run_scale(job)))
    elif role == "faults":
        _emit(asyncio.run(run_faults(job)))
    else:
        print(f"unknown role {role!r}", file=sys.stderr)
        return 2
    return 0


def leave(code: int) -> None:
    """Exit with `code` once the result is out, without the interpreter's finalization.

    livekit-rtc's native runtime can abort the process ("panic in a function that
    cannot unwind", or SIGSEGV) while the interpreter finalizes after a room with
    an avatar in it: 3 of 8 agent processes with an avatar on the 2-core machine,
    0 of 8 without one (2026-12-07). The measurement is complete by then; without
    this the round would be lost to it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())

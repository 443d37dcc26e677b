"""A Protoface that is recovering, on 127.0.0.1 in a process of its own.

    python benchmarks/fleet_server.py     # prints its port; stops when stdin closes

`POST /v1/sessions` answers 503 (no `Retry-After`) to the first two attempts of
each `Idempotency-Key`, then creates one session per key (a replay gets the
same one). `GET /stats` says what it saw: attempts per key, the arrival time
(`time.monotonic()`) of every retry, the sessions created (key to id).

`benchmarks/fleet.py` measures a fleet against it and
`tests/plugin/test_fleet_retries.py` pins what must hold; both start it with
`recovering_service()`. A process of its own because a light process is woken
promptly even on a loaded machine: its arrival times are not bunched by the
clients' event loop falling behind.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

FAILURES_PER_KEY = 2
WINDOW_S = 0.1


class RecoveringService:
    """Counts attempts per key: 503 to the first two, then a session (once per key)."""

    def __init__(self) -> None:
        self.attempts: collections.Counter[str] = collections.Counter()
        self.retry_times: list[float] = []
        self.sessions: dict[str, str] = {}

    async def create(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        await request.read()
        self.attempts[key] += 1
        if self.attempts[key] > 1:
            self.retry_times.append(time.monotonic())
        if self.attempts[key] <= FAILURES_PER_KEY:
            error = {"type": "service_unavailable", "code": "unavailable", "message": "recovering"}
            return web.json_response({"error": error}, status=503)
        session_id = self.sessions.setdefault(key, f"ses_{len(self.sessions) + 1:06d}")
        return web.json_response({"id": session_id, "status": "queued"}, status=201)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "attempts": dict(self.attempts),
                "retry_times": self.retry_times,
                "sessions": self.sessions,
            }
        )


async def serve() -> None:
    """The service on 127.0.0.1 (a free port, printed) until stdin closes."""
    state = RecoveringService()
    app = web.Application()
    app.router.add_post("/v1/sessions", state.create)
    app.router.add_get("/stats", state.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=2048).start()
    print(runner.addresses[0][1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the parent closing stdin stops it
    await runner.cleanup()


@asynccontextmanager
async def recovering_service() -> AsyncIterator[str]:
    """A fresh service in a process of its own, and its URL; stopped on leaving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), timeout=30))
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def service_stats(url: str) -> dict[str, Any]:
    """What the service at `url` saw (`GET /stats`)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/stats") as response:
        seen: dict[str, Any] = await response.json()
    return seen


def largest_window(times: list[float], window: float = WINDOW_S) -> int:
    """The most of `times` inside any `window`-second interval."""
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


if __name__ == "__main__":
    asyncio.run(serve())

"""A Protoface that is recovering, run as its own process by `test_fleet_retries.py`.

    python tests/plugin/recovering_server.py     # prints its port; stops when stdin closes

`POST /v1/sessions` answers 503 (no `Retry-After`) to the first two attempts of
each `Idempotency-Key`, then creates one session per key (a replay gets the
same one). `GET /stats` says what it saw: attempts per key, the arrival time
(`time.monotonic()`) of every retry, the sessions created. A process of its own
because a light process is woken promptly on a loaded machine: its arrival
times are not bunched by the clients' event loop falling behind.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time

from aiohttp import web

FAILURES_PER_KEY = 2


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


async def main() -> None:
    state = RecoveringService()
    app = web.Application()
    app.router.add_post("/v1/sessions", state.create)
    app.router.add_get("/stats", state.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())

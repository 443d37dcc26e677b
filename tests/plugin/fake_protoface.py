"""Test doubles and helpers for the plugin tests.

`FakeProtoface` is a real aiohttp server on loopback that plays the Protoface
API (sessions with idempotency, cursor pages, avatars, status) and records
every request it receives. Tests script failures into it (`fake.script(...)`)
instead of patching any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from livekit.agents import APIConnectOptions

API_KEY = "pf_test_4f1c9e8a7b6d5c4e3f2a1b0c"
LIVEKIT_API_KEY = "lk_test_key_8d7c"
LIVEKIT_API_SECRET = "lk_test_secret_0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
LIVEKIT_URL = "ws://127.0.0.1:7880"
AGENT_IDENTITY = "agent-under-test"
ROOM_NAME = "fake-room"  # the name fake_job_context gives an unconnected room

# Fast retries: the first retry waits 0.1 s, the others retry_interval.
FAST = APIConnectOptions(max_retry=3, retry_interval=0.0, timeout=2.0)


@dataclass
class Reply:
    """A scripted answer for one request."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    echo: bool = False  # a careless server: echo the request (key, body) in the error


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    route: str
    headers: dict[str, str]
    query: list[tuple[str, str]]
    body: Any
    arrived_at: float = field(default_factory=time.monotonic)


def envelope(
    status_type: str, code: str, message: str = "", request_id: str = "req_test", **extra: Any
) -> dict[str, Any]:
    """A Protoface error envelope."""
    return {
        "error": {
            "type": status_type,
            "code": code,
            "message": message or code.replace("_", " "),
            "request_id": request_id,
            **extra,
        }
    }


class FakeProtoface:
    """The Protoface API on loopback: real HTTP, scriptable failures, recorded requests."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.avatars: dict[str, dict[str, Any]] = {}
        self.by_idempotency_key: dict[str, str] = {}
        self.ended: list[str] = []
        self.create_received = asyncio.Event()
        self._arrived = asyncio.Event()
        self.create_delay = 0.0  # delay the create's answer after storing the session
        self._scripts: dict[tuple[str, str], list[Reply]] = {}
        self._ids = itertools.count(1)
        self.server: TestServer | None = None
        self.add_avatar("av_stock_001", name="Stock", is_demo=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def script(self, method: str, route: str, *replies: Reply) -> None:
        """Answer the next requests to `route` (e.g. `/v1/sessions/{id}`) with `replies`."""
        self._scripts.setdefault((method, route), []).extend(replies)

    def requests_to(self, method: str, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.route == route]

    async def wait_for_requests(self, method: str, route: str, count: int) -> None:
        """Return once `count` requests to `route` have arrived in total."""
        while len(self.requests_to(method, route)) < count:
            self._arrived.clear()
            await self._arrived.wait()

    def add_avatar(self, avatar_id: str, **fields: Any) -> None:
        self.avatars[avatar_id] = {
            "object": "avatar",
            "id": avatar_id,
            "name": fields.get("name", avatar_id),
            "status": "ready",
            "is_demo": fields.get("is_demo", False),
            "runtime_type": "avtr1",
            "created_at": _now(),
            "default_voice": None,
            "default_custom_instructions": None,
            "failure_reason": None,
        }

    def add_session(self, **fields: Any) -> dict[str, Any]:
        session_id = fields.pop("id", None) or f"sess_{next(self._ids):026d}"
        session: dict[str, Any] = {
            "object": "session",
            "id": session_id,
            "avatar_id": "av_stock_001",
            "status": "queued",
            "created_at": _now(),
            "started_at": None,
            "first_frame_at": None,
            "ended_at": None,
            "failed_at": None,
            "failure": None,
            "idle_timeout_seconds": 30,
            "max_duration_seconds": 600,
            "metadata": {},
            "quality": "standard",
            "transport": {"type": "livekit", "url": LIVEKIT_URL, "room_name": ROOM_NAME},
            "usage": {"billable_seconds": 0, "frames": 0},
        }
        session.update(fields)
        self.sessions[session_id] = session
        return session

    def update_session(self, session_id: str, **fields: Any) -> None:
        self.sessions[session_id].update(fields)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/avatars", self._list_avatars)
        app.router.add_get("/v1/avatars/{id}", self._get_avatar)
        app.router.add_post("/v1/sessions", self._create_session)
        app.router.add_get("/v1/sessions", self._list_sessions)
        app.router.add_get("/v1/sessions/{id}", self._get_session)
        app.router.add_post("/v1/sessions/{id}/end", self._end_session)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else request.path
        raw = await request.read()
        body: Any = None
        if raw:
            with contextlib.suppress(ValueError):
                body = await request.json()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                route=route_name,
                headers=dict(request.headers),
                query=list(request.query.items()),
                body=body,
            )
        )
        self._arrived.set()
        if request.method == "POST" and route_name == "/v1/sessions":
            self.create_received.set()
        queue = self._scripts.get((request.method, route_name))
        if queue:
            reply = queue.pop(0)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            if reply.echo:
                message = f"rejected {request.headers.get('Authorization')} {raw.decode()}"
                return web.json_response(
                    envelope("invalid_request", "echoed", message),
                    status=reply.status,
                    headers={"X-Request-Id": "req_echo", **reply.headers},
                )
            if reply.json is not None:
                return web.json_response(reply.json, status=reply.status, headers=reply.headers)
            headers = {"Content-Type": "text/plain", **reply.headers}
            return web.Response(
                status=reply.status, body=(reply.text or "").encode(), headers=headers
            )
        return await handler(request)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "operational",
                "components": [{"name": "api", "status": "operational"}],
                "updated_at": _now(),
            }
        )

    async def _list_avatars(self, request: web.Request) -> web.Response:
        return _page(list(self.avatars.values()), request)

    async def _get_avatar(self, request: web.Request) -> web.Response:
        avatar = self.avatars.get(request.match_info["id"])
        if avatar is None:
            return web.json_response(envelope("not_found", "avatar_not_found"), status=404)
        return web.json_response(avatar)

    async def _create_session(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self.by_idempotency_key:
            # A replay: the session the first request created, no second one.
            return web.json_response(self.sessions[self.by_idempotency_key[key]], status=201)
        transport = {k: v for k, v in body["transport"].items() if k != "worker_token"}
        session = self.add_session(
            avatar_id=body["avatar_id"],
            transport=transport,
            quality=body.get("quality", "standard"),
            idle_timeout_seconds=body.get("idle_timeout_seconds", 30),
            max_duration_seconds=body.get("max_duration_seconds", 600),
            metadata=body.get("metadata", {}),
        )
        if key is not None:
            self.by_idempotency_key[key] = session["id"]
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        return web.json_response(session, status=201)

    async def _list_sessions(self, request: web.Request) -> web.Response:
        sessions = list(reversed(self.sessions.values()))  # newest first
        statuses = request.query.getall("status", [])
        if statuses:
            sessions = [s for s in sessions if s["status"] in statuses]
        if "avatar_id" in request.query:
            sessions = [s for s in sessions if s["avatar_id"] == request.query["avatar_id"]]
        return _page(sessions, request)

    async def _get_session(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.json_response(envelope("not_found", "session_not_found"), status=404)
        return web.json_response(session)

    async def _end_session(self, request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        session = self.sessions.get(session_id)
        if session is None:
            return web.json_response(envelope("not_found", "session_not_found"), status=404)
        self.ended.append(session_id)
        if session["status"] not in ("ended", "failed", "canceled"):
            session["status"] = "ended"
            session["ended_at"] = _now()
            session["metadata"] = {**session["metadata"], "_avatar.end_reason": "end_requested"}
        return web.json_response(session)


def _page(items: list[dict[str, Any]], request: web.Request) -> web.Response:
    limit = int(request.query.get("limit", "10"))
    start = 0
    if "starting_after" in request.query:
        ids = [item["id"] for item in items]
        start = ids.index(request.query["starting_after"]) + 1
    page = items[start : start + limit]
    has_more = start + limit < len(items)
    return web.json_response(
        {
            "object": "list",
            "data": page,
            "has_more": has_more,
            "next_cursor": page[-1]["id"] if has_more and page else None,
        }
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.formatter = logging.Formatter(
            "%(levelname)s %(name)s %(message)s", datefmt=None, style="%"
        )

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """Every record fully rendered: message, traceback, stack and extra fields."""
        assert self.formatter is not None
        parts = []
        for record in self.records:
            parts.append(self.formatter.format(record))
            parts.append(repr(record.__dict__))
        return "\n".join(parts)


def free_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leftover_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Pending tasks created since `before`, other than the test server's own."""
    current = asyncio.current_task()
    leftovers = []
    for task in asyncio.all_tasks():
        if task in before or task is current or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and f"{os.sep}aiohttp{os.sep}" in code.co_filename:
            continue  # connection handlers of the loopback test server
        leftovers.append(task)
    return leftovers

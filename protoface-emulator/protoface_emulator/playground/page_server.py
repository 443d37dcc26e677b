"""The page's HTTP side: the page, its livekit-client bundle, and the API the page calls.

The LiveKit secret and the Protoface key stay in this process. The page's API:

- `POST /api/connect`: a new room for the tab (or the one room the page was
  started for, `Playground.room`) and a token to join it;
- `GET /api/sessions`: the emulator's hosted sessions (id, status, timings,
  failure, usage; never their worker tokens);
- `POST /api/sessions/{id}/end`: end one.

The page (`page/`) ships in the package. The livekit-client bundle is
`page/vendor/livekit-client.umd.js`, copied there from the locked npm package
when the wheel is built (`hatch_build.py`); in a clone of the repository, where
the package is installed in place, it is read from `web/node_modules` instead.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from protoface_emulator.local.livekit_dev import mint_token

__all__ = [
    "LIVEKIT_CLIENT",
    "PAGE",
    "EmulatorClient",
    "EmulatorError",
    "LiveKitEndpoint",
    "Playground",
    "livekit_client_bundle",
    "session_summary",
]

PAGE = Path(__file__).resolve().parent / "page"
"""The page's files, as shipped in the package."""

LIVEKIT_CLIENT = PAGE / "vendor" / "livekit-client.umd.js"
"""Where the wheel carries the livekit-client browser bundle."""

# A clone of the repository with the package installed in place (uv sync):
# protoface-emulator/protoface_emulator/playground/ -> the repository's web/.
_REPO_BUNDLE = (
    Path(__file__).resolve().parents[3]
    / "web"
    / "node_modules"
    / "livekit-client"
    / "dist"
    / "livekit-client.umd.js"
)
PAGE_FILES = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
SESSIONS_SHOWN = 50
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TOKEN_TTL = datetime.timedelta(hours=6)


def livekit_client_bundle() -> Path | None:
    """The livekit-client browser bundle to serve: the package's, else a clone's `web/`."""
    for candidate in (LIVEKIT_CLIENT, _REPO_BUNDLE):
        if candidate.is_file():
            return candidate
    return None


class LiveKitEndpoint(Protocol):
    """A livekit-server the page's tokens are for: the playground's own, or one run by hand."""

    @property
    def url(self) -> str:
        """Where the page connects (`ws://127.0.0.1:7880`)."""

    @property
    def api_key(self) -> str:
        """The key the tokens name."""

    @property
    def api_secret(self) -> str:
        """The secret that signs them (it stays in this process)."""


class EmulatorError(RuntimeError):
    """The emulator could not be reached or refused a call; the message says which."""


class EmulatorClient:
    """The two Protoface calls the page needs, over plain HTTP with the key.

    Not the plugin's `ProtofaceAPI`: importing the plugin pulls in livekit-agents,
    seconds of start-up on a busy machine, for two requests.
    """

    def __init__(self, url: str, api_key: str) -> None:
        self._url = url.rstrip("/")
        self._api_key = api_key
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"EmulatorClient(url={self._url!r})"  # never the key

    async def _call(self, method: str, path: str) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=aiohttp.ClientTimeout(total=10),
            )
        try:
            async with self._http.request(method, self._url + path) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise EmulatorError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise EmulatorError(f"{method} {path} answered {status} with a non-object body")
        if status >= 400:
            error = body.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else None
            raise EmulatorError(f"{method} {path} answered {status}: {message or body}")
        return body

    async def list_sessions(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` sessions (1..100), newest first."""
        body = await self._call("GET", f"/v1/sessions?limit={limit}")
        data = body.get("data")
        return [s for s in data if isinstance(s, dict)] if isinstance(data, list) else []

    async def end_session(self, session_id: str) -> dict[str, Any]:
        """End one session (idempotent)."""
        return await self._call("POST", f"/v1/sessions/{session_id}/end")

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.close()


def _check_origin(request: web.Request) -> None:
    """Refuse writes from pages served elsewhere (a browser sends Origin on POST)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text=f"requests from {origin} are not accepted")


def session_summary(session: dict[str, Any]) -> dict[str, Any]:
    """The fields of a hosted session the page shows (no transport secrets)."""
    transport = session.get("transport") or {}
    failure = session.get("failure") or {}
    return {
        "id": session.get("id"),
        "status": session.get("status"),
        "avatar_id": session.get("avatar_id"),
        "quality": session.get("quality"),
        "room_name": transport.get("room_name"),
        "created_at": session.get("created_at"),
        "started_at": session.get("started_at"),
        "first_frame_at": session.get("first_frame_at"),
        "ended_at": session.get("ended_at"),
        "failed_at": session.get("failed_at"),
        "failure_code": failure.get("code"),
        "failure_message": failure.get("message"),
        "max_duration_seconds": session.get("max_duration_seconds"),
        "idle_timeout_seconds": session.get("idle_timeout_seconds"),
        "usage": session.get("usage"),
    }


@dataclass
class Playground:
    """The page's HTTP side: tokens for LiveKit, a window on the emulator.

    Attributes:
        livekit: The livekit-server (its secret signs the tabs' tokens).
        protoface: The emulator's API.
        livekit_client: The livekit-client browser bundle to serve.
        agent_name: The agent worker's `agent_name`: when set, each tab's token
            has the server dispatch that agent to the tab's room (a named worker
            gets no room otherwise).
        room: The room every tab joins; "" gives each tab a new room.
    """

    livekit: LiveKitEndpoint
    protoface: EmulatorClient
    livekit_client: Path
    agent_name: str = ""
    room: str = ""

    def app(self) -> web.Application:
        """The aiohttp application serving the page and its API."""
        app = web.Application()
        for path, name in PAGE_FILES.items():
            app.router.add_get(path, self._file(PAGE / name))
        app.router.add_get("/vendor/livekit-client.umd.js", self._file(self.livekit_client))
        app.router.add_post("/api/connect", self.connect)
        app.router.add_get("/api/sessions", self.sessions)
        app.router.add_post("/api/sessions/{session_id}/end", self.end_session)
        return app

    @staticmethod
    def _file(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(_request: web.Request) -> web.StreamResponse:
            response = web.FileResponse(path)
            response.headers["Cache-Control"] = "no-store"
            return response

        return handler

    async def connect(self, request: web.Request) -> web.Response:
        """A room (fresh, or `room`) and a person's token for it (the agent is dispatched
        when the room is created: any unnamed worker automatically, a named one through
        the token)."""
        _check_origin(request)
        room = self.room or f"playground-{uuid.uuid4().hex[:8]}"
        identity = f"person-{uuid.uuid4().hex[:6]}"
        token = mint_token(
            self.livekit.api_key,
            self.livekit.api_secret,
            identity,
            room,
            name="you",
            ttl=TOKEN_TTL,
            dispatch_agent=self.agent_name or None,
        )
        return web.json_response(
            {"url": self.livekit.url, "token": token, "room": room, "identity": identity}
        )

    async def sessions(self, _request: web.Request) -> web.Response:
        """The most recent hosted sessions, newest first as the API lists them."""
        try:
            sessions = await self.protoface.list_sessions(SESSIONS_SHOWN)
        except EmulatorError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        return web.json_response({"sessions": [session_summary(s) for s in sessions]})

    async def end_session(self, request: web.Request) -> web.Response:
        """End one hosted session."""
        _check_origin(request)
        session_id = request.match_info["session_id"]
        if not SESSION_ID.match(session_id):
            return web.json_response(
                {"error": f"{session_id!r} is not a session id (expected letters, digits, _ or -)"},
                status=400,
            )
        try:
            session = await self.protoface.end_session(session_id)
        except EmulatorError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        return web.json_response(session_summary(session))

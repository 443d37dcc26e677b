"""Everything the playground runs, in one process group: LiveKit, the emulator, an agent, the page.

`playground.py` starts this file in a process group of its own and stops it with
SIGTERM (killing the group if anything is left), so use `scripts/playground`
rather than this file directly. In order, it:

1. starts `livekit-server --dev` and the `protoface-emulator` command on 127.0.0.1;
2. starts the agent file as a LiveKit Agents worker (`FILE dev --no-reload`) with
   `LIVEKIT_*` and `PROTOFACE_*` pointed at them, and waits until it registers;
3. serves the page (`web/`) and a small API the page uses, then prints
   `playground: http://127.0.0.1:PORT/` on a line of its own.

The page's API (the LiveKit secret and the Protoface key stay in this process):

- `POST /api/connect`: a new room for the tab and a token to join it;
- `GET /api/sessions`: the emulator's hosted sessions (id, status, timings,
  failure, usage; never their worker tokens);
- `POST /api/sessions/{id}/end`: end one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
import webbrowser
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web

from protoface_emulator.testing.launch import EmulatorProcess, start_emulator_process, stop_process
from protoface_emulator.testing.livekit_dev import (
    LiveKitServer,
    LiveKitServerMissing,
    mint_token,
    start_livekit_server,
)

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
LIVEKIT_CLIENT_JS = WEB / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"
BUNDLED_AGENT = Path(__file__).resolve().parent / "echo_agent.py"
PAGE_FILES = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
SESSIONS_SHOWN = 50
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TOKEN_TTL = datetime.timedelta(hours=6)

log = logging.getLogger("playground")


class PlaygroundError(RuntimeError):
    """The playground could not start; the message says what to do."""


# -- the agent worker ----------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines every run prints that say nothing to a playground user.
_NOISE = (
    "dev mode is deprecated",
    "no warmed process available",
    "event loop blocked for",  # a busy machine; --verbose shows them
    "Attempted to drop unknown FFI handle",
)
_LOG_LEVEL = re.compile(r"\b(DEBUG|INFO|DEV|WARNING|WARN|ERROR|CRITICAL)\b")


@dataclass
class AgentProcess:
    """The agent worker process and what its output told us."""

    process: subprocess.Popen[bytes]
    log_path: Path
    registered: threading.Event = field(default_factory=threading.Event)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the agent wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the worker drains its jobs, which end their hosted sessions), then kill."""
        stop_process(self.process, timeout)


def start_agent(agent_file: Path, env: dict[str, str], *, verbose: bool) -> AgentProcess:
    """Run `agent_file dev --no-reload` and relay its output.

    Everything goes to a log file; warnings, errors and anything that is not a
    log line (prints, tracebacks) also go to stderr, and all of it with `verbose`.
    """
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the agent
        prefix="playground-agent-", suffix=".log", delete=False
    )
    process = subprocess.Popen(
        [sys.executable, str(agent_file), "dev", "--no-reload", "--log-level", "info"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=agent_file.parent,
    )
    agent = AgentProcess(process, Path(log_file.name))
    thread = threading.Thread(
        target=_relay, args=(agent, log_file, verbose), name="agent-output", daemon=True
    )
    thread.start()
    return agent


def _relay(agent: AgentProcess, log_file: IO[bytes], verbose: bool) -> None:
    assert agent.process.stdout is not None
    show = True
    with log_file:
        for raw in agent.process.stdout:
            log_file.write(raw)
            log_file.flush()
            line = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
            if "registered worker" in line:
                agent.registered.set()
            level = _LOG_LEVEL.search(line[:40])
            if level is not None:
                show = level.group(1) not in {"DEBUG", "INFO", "DEV"}
            if verbose or (show and not any(noise in line for noise in _NOISE)):
                print(f"agent | {line}", file=sys.stderr, flush=True)


async def wait_registered(
    agent: AgentProcess, agent_file: Path, timeout: float, stop: asyncio.Event
) -> None:
    """Wait until the worker registered with livekit-server (or `stop` is set).

    Raises:
        PlaygroundError: It exited or did not register in time (with its last output).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not agent.registered.is_set() and not stop.is_set():
        if agent.process.poll() is not None:
            raise PlaygroundError(
                f"the agent {agent_file} exited with code {agent.process.returncode} "
                f"before registering as a worker; its last output:\n{agent.log_tail()}"
            )
        if loop.time() > deadline:
            raise PlaygroundError(
                f"the agent {agent_file} did not register as a worker within {timeout:.0f} s "
                "(it must run livekit.agents.cli.run_app); its last output:\n" + agent.log_tail()
            )
        await asyncio.sleep(0.1)


# -- the emulator's sessions ---------------------------------------------------------


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


# -- the page and its API -------------------------------------------------------------


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
    """The page's HTTP side: tokens for LiveKit, a window on the emulator."""

    livekit: LiveKitServer
    protoface: EmulatorClient

    def app(self) -> web.Application:
        """The aiohttp application serving the page and its API."""
        app = web.Application()
        for path, name in PAGE_FILES.items():
            app.router.add_get(path, self._file(WEB / name))
        app.router.add_get("/vendor/livekit-client.umd.js", self._file(LIVEKIT_CLIENT_JS))
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
        """A fresh room and a person's token for it (the agent is dispatched on join)."""
        _check_origin(request)
        room = f"playground-{uuid.uuid4().hex[:8]}"
        identity = f"person-{uuid.uuid4().hex[:6]}"
        token = mint_token(
            self.livekit.api_key, self.livekit.api_secret, identity, room, name="you", ttl=TOKEN_TTL
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


# -- start and stop -------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    """Start everything, print the URL, run until SIGTERM/SIGINT, stop everything."""
    if not LIVEKIT_CLIENT_JS.is_file():
        raise PlaygroundError(
            f"{LIVEKIT_CLIENT_JS.relative_to(ROOT)} is missing: run scripts/install-playground-deps"
        )
    agent_file: Path = args.agent.resolve()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    watch_parent = asyncio.create_task(_stop_when_orphaned(stop))

    livekit: LiveKitServer | None = None
    emulator: EmulatorProcess | None = None
    agent: AgentProcess | None = None
    runner: web.AppRunner | None = None
    protoface: EmulatorClient | None = None
    try:
        # Both at once (each takes seconds on a busy machine); if one fails, the
        # other is still stopped below.
        started = await asyncio.gather(
            asyncio.to_thread(start_livekit_server),
            asyncio.to_thread(
                start_emulator_process, args=["--log-level", "warning"], stderr=sys.stderr
            ),
            return_exceptions=True,
        )
        if isinstance(started[0], LiveKitServer):
            livekit = started[0]
        if isinstance(started[1], EmulatorProcess):
            emulator = started[1]
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        assert livekit is not None and emulator is not None
        env = {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret,
            "PROTOFACE_API_URL": emulator.url,
            "PROTOFACE_API_KEY": emulator.api_key,
        }
        agent = start_agent(agent_file, env, verbose=args.verbose)
        protoface = EmulatorClient(emulator.url, emulator.api_key)
        runner = web.AppRunner(Playground(livekit, protoface).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        try:
            await site.start()
        except OSError as exc:
            raise PlaygroundError(
                f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}): "
                "pass --port with a free port, or --port 0 for any"
            ) from None
        await wait_registered(agent, agent_file, args.ready_timeout, stop)
        if stop.is_set():
            return
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/"
        print(f"playground: {url}", flush=True)
        if args.open:
            webbrowser.open(url)
        await stop.wait()
    finally:
        watch_parent.cancel()
        if runner is not None:
            await runner.cleanup()
        if agent is not None:
            await asyncio.to_thread(agent.stop)
        if protoface is not None:
            await protoface.aclose()
        if emulator is not None:
            await asyncio.to_thread(emulator.stop)
        if livekit is not None:
            await asyncio.to_thread(_stop_livekit, livekit)
        if agent is not None:
            agent.log_path.unlink(missing_ok=True)


def _stop_livekit(livekit: LiveKitServer) -> None:
    """Stop livekit-server at once: a second SIGTERM skips its wait for rooms to empty.

    Everyone it would wait for (the agent, the avatars) has gone already, and the
    first SIGTERM alone keeps it up for 10 s while it drains the tabs' rooms.
    """
    process = livekit.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    livekit.stop()


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """Stop if the supervising `playground.py` is gone (it would have killed us)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()
            return


def main(argv: list[str] | None = None) -> int:
    """Run the stack (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--agent", type=Path, default=BUNDLED_AGENT)
    parser.add_argument("--open", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("livekit").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(args))
    except (PlaygroundError, LiveKitServerMissing) as exc:
        print(f"playground: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

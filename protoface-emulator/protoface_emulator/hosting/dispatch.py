"""Sessions' avatar workers placed on other machines by LiveKit's agent dispatch.

`AgentDispatch` is a `lifecycle.WorkerFactory` for a fleet of
`protoface-emulator worker` hosts registered with the developer's own
livekit-server (`agent_worker.py`). For each session it asks the server for one
job in the session's room (`AgentDispatchService.create_dispatch`), carrying in
the job's metadata the session's `WorkerSpec` (worker token included), where to
report and a one-time ticket. LiveKit's load-aware dispatch picks the host; the
host runs the same `AvatarWorker` a worker process runs and reports its events
back over a WebSocket to a small server this factory runs, with the same
messages as a worker process's pipe (`protocol.py`).

A host that dies (or loses its network) drops its WebSockets: only its own
sessions fail, with `worker_crashed` and a message naming the host. A job no
host takes within `pickup_timeout` fails its session with `worker_join_timeout`
and a message saying which agent name to start workers for.

This mode needs the LiveKit API key and secret of that server, given to the
emulator only; the plugin's hosted path never sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from protoface_emulator.hosting.protocol import apply_event, decode, job_metadata
from protoface_emulator.hosting.sites import start_site
from protoface_emulator.lifecycle import (
    FAILURE_JOIN_TIMEOUT,
    FAILURE_WORKER_CRASHED,
    WorkerEvents,
    WorkerSpec,
)

__all__ = [
    "DEFAULT_AGENT_NAME",
    "AgentDispatch",
    "DispatchedJob",
    "LiveKitAgents",
    "check_livekit",
]

logger = logging.getLogger("protoface_emulator.workers.dispatch")

DEFAULT_AGENT_NAME = "protoface-avatar"
# How long a closed job may take to report that its worker left the room.
_CLOSE_TIMEOUT = 8.0
# WebSocket pings: a host whose network vanished is noticed within about twice this.
_HEARTBEAT = 5.0
_ALL_INTERFACES = {"", "0.0.0.0", "::"}


def check_livekit(url: str, api_key: str, api_secret: str, *, needed_by: str) -> None:
    """Refuse a livekit-server address or credentials that cannot work.

    Raises:
        ValueError: naming what is missing and the flag or variable that gives it.
    """
    if not url or not url.startswith(("http://", "https://", "ws://", "wss://")):
        raise ValueError(
            f"{needed_by} needs the livekit-server URL (ws(s):// or http(s)://); "
            f"got {url!r}: pass --livekit-url or set LIVEKIT_URL"
        )
    if not api_key or not api_secret:
        missing = "API key" if not api_key else "API secret"
        raise ValueError(
            f"{needed_by} needs the livekit-server's {missing}: pass --livekit-api-key "
            "and --livekit-api-secret, or set LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
        )


@dataclass(frozen=True)
class LiveKitAgents:
    """A livekit-server, its credentials and the agent name avatars are dispatched under.

    What the emulator's dispatch and every worker host both need; `checked()`
    refuses what cannot work.
    """

    url: str
    api_key: str
    # Never logged or shown.
    api_secret: str = field(repr=False)
    agent_name: str

    @classmethod
    def checked(
        cls, url: str, api_key: str, api_secret: str, agent_name: str, *, needed_by: str
    ) -> LiveKitAgents:
        """These settings, once usable.

        Raises:
            ValueError: a missing URL, key, secret or agent name, naming `needed_by`.
        """
        check_livekit(url, api_key, api_secret, needed_by=needed_by)
        if not agent_name:
            raise ValueError(f"{needed_by} needs an agent name, e.g. 'protoface-avatar'")
        return cls(url, api_key, api_secret, agent_name)

    @property
    def ws_url(self) -> str:
        """The server's URL as `ws(s)://` (what agent workers register at)."""
        return self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)

    @property
    def http_url(self) -> str:
        """The server's URL as `http(s)://` (what its API is called at)."""
        return self.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


class DispatchedJob:
    """The store's handle on one session's worker, running as a LiveKit job.

    `host` is the worker host that took it (its `--name`), once it reported.
    """

    def __init__(self, owner: AgentDispatch, key: str, spec: WorkerSpec, events: WorkerEvents):
        self._owner = owner
        self.key = key
        self.spec = spec
        self.events = events
        self.ticket = secrets.token_urlsafe(24)
        self.host: str | None = None
        self.dispatch_id: str | None = None
        self.socket: web.WebSocketResponse | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.close_requested = False
        self._pickup_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return (
            f"DispatchedJob(key={self.key!r}, session={self.spec.session_id!r}, host={self.host!r})"
        )

    @property
    def finished(self) -> bool:
        """True once the worker left its room, failed, or the job was withdrawn."""
        return self.closed.done()

    def finish(self) -> None:
        """The job is over: nothing more is reported for it."""
        if self._pickup_timer is not None:
            self._pickup_timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        self._owner._forget(self)

    def fail(self, code: str, message: str) -> None:
        """Fail its session (unless it was being closed) and end the job."""
        if not self.finished and not self.close_requested:
            self.events.on_failed(code, message)
        self.finish()

    def arm_pickup_timer(self, seconds: float) -> None:
        self._pickup_timer = asyncio.get_running_loop().call_later(
            seconds, self._pickup_missed, seconds
        )

    def _pickup_missed(self, seconds: float) -> None:
        if self.socket is None and not self.finished:
            self.fail(
                FAILURE_JOIN_TIMEOUT,
                f"No worker host took the avatar's job within {seconds:g} s. Start one with "
                f"`protoface-emulator worker --agent-name {self._owner.agent_name}` against "
                "the same livekit-server (or check that the running ones use that agent name).",
            )

    async def aclose(self) -> None:
        """Ask the worker to leave its room and wait until it has (bounded). Idempotent."""
        if not self.close_requested:
            self.close_requested = True
            if self.socket is not None and not self.socket.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.socket.send_str(json.dumps({"op": "close", "key": self.key}))
            elif not self.finished:
                # No host has it yet: take the job back (finish() deletes the dispatch).
                self.finish()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), _CLOSE_TIMEOUT)
        if not self.finished:
            logger.warning("the worker of %s did not report leaving its room", self.spec.session_id)
            if self.socket is not None:
                await self.socket.close()
            self.finish()


class AgentDispatch:
    """A `WorkerFactory` that dispatches each session's worker as a LiveKit agent job.

        dispatch = AgentDispatch("http://127.0.0.1:7880", api_key, api_secret)
        async with Emulator(worker_factory=dispatch) as emu:  # starts and closes it
            ...

    Args:
        livekit_url: The livekit-server the worker hosts registered with
            (`http(s)://` or `ws(s)://`).
        api_key: That server's API key (dispatch needs `roomAdmin`).
        api_secret: Its secret; never logged or shown.
        agent_name: The agent name the hosts registered (`--agent-name`).
        host: Address the report server listens on.
        port: Its port; 0 picks a free one (the address travels in each job).
        public_url: The `ws://` base the hosts reach the report server at, when
            `host:port` is not it (a bind to all interfaces, a proxy).
        pickup_timeout: Seconds a job may wait for a host before its session fails.

    Raises:
        ValueError: a missing URL, key or secret, or an unusable timeout.
    """

    def __init__(
        self,
        livekit_url: str,
        api_key: str,
        api_secret: str,
        *,
        agent_name: str = DEFAULT_AGENT_NAME,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        pickup_timeout: float = 20.0,
    ) -> None:
        self._livekit = LiveKitAgents.checked(
            livekit_url, api_key, api_secret, agent_name, needed_by="agent dispatch"
        )
        if not pickup_timeout > 0:
            raise ValueError(
                f"pickup_timeout must be a positive number of seconds; got {pickup_timeout!r}"
            )
        self._livekit_url = self._livekit.http_url
        self.agent_name = agent_name
        self._host = host
        self._port = port
        self._public_url = public_url.rstrip("/") if public_url else None
        self.pickup_timeout = pickup_timeout
        self._jobs: dict[str, DispatchedJob] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._api: Any = None
        self._runner: web.AppRunner | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AgentDispatch(livekit_url={self._livekit_url!r}, agent_name={self.agent_name!r})"

    @property
    def reports_url(self) -> str:
        """The `ws://` base the hosts report to (valid once started)."""
        if self._public_url:
            return self._public_url
        host = socket.getfqdn() if self._host in _ALL_INTERFACES else self._host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self._port}"

    @property
    def jobs(self) -> list[DispatchedJob]:
        """The jobs not finished yet."""
        return list(self._jobs.values())

    async def start(self) -> None:
        """Start the report server and the LiveKit API client."""
        from livekit import api

        app = web.Application()
        app.router.add_get("/jobs/{key}", self._job_socket)
        runner = web.AppRunner(app, access_log=None)
        _, self._port = await start_site(runner, self._host, self._port)
        self._runner = runner
        livekit = self._livekit
        self._api = api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)
        logger.info(
            "dispatching avatars as agent %r through %s; hosts report to %s",
            self.agent_name,
            self._livekit_url,
            self.reports_url,
        )

    def __call__(self, spec: WorkerSpec, events: WorkerEvents) -> DispatchedJob:
        """Ask LiveKit for a job in the session's room; returns its handle at once.

        Raises:
            RuntimeError: not started, or closed.
        """
        if self._closed or self._api is None:
            raise RuntimeError("this AgentDispatch is not running; start() it (Emulator does)")
        key = secrets.token_hex(8)
        job = DispatchedJob(self, key, spec, events)
        self._jobs[key] = job
        job.arm_pickup_timer(self.pickup_timeout)
        self._spawn(self._dispatch(job))
        return job

    async def aclose(self) -> None:
        """Withdraw every job, stop the report server. Idempotent."""
        self._closed = True
        for job in list(self._jobs.values()):
            job.close_requested = True
            if job.socket is not None:
                await job.socket.close()
            job.finish()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_CLOSE_TIMEOUT)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    # -- the job's life ----------------------------------------------------------

    async def _dispatch(self, job: DispatchedJob) -> None:
        from livekit import api

        request = api.CreateAgentDispatchRequest(
            agent_name=self.agent_name,
            room=job.spec.room_name,
            metadata=job_metadata(
                job.key, job.ticket, f"{self.reports_url}/jobs/{job.key}", job.spec
            ),
        )
        try:
            dispatch = await self._api.agent_dispatch.create_dispatch(request)
        except Exception as exc:  # an aiohttp error, a Twirp error: the session fails either way
            logger.warning("could not dispatch the avatar of %s: %s", job.spec.session_id, exc)
            job.fail(
                FAILURE_WORKER_CRASHED,
                f"The emulator could not dispatch the avatar's job through {self._livekit_url} "
                f"({type(exc).__name__}: {exc}).",
            )
            return
        job.dispatch_id = dispatch.id
        if job.finished:  # closed while the request was in flight
            self._withdraw(job)

    def _withdraw(self, job: DispatchedJob) -> None:
        """Delete the job's dispatch, in the background, so no host starts it later."""
        if job.dispatch_id is not None and self._api is not None:
            self._spawn(self._delete_dispatch(job.dispatch_id, job.spec.room_name))

    async def _delete_dispatch(self, dispatch_id: str, room: str) -> None:
        with contextlib.suppress(Exception):  # the room may be gone already
            await self._api.agent_dispatch.delete_dispatch(dispatch_id, room)

    def _forget(self, job: DispatchedJob) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
            self._withdraw(job)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _job_socket(self, request: web.Request) -> web.StreamResponse:
        """A host's reports for one job: its events in, `close` out."""
        job = self._jobs.get(request.match_info["key"])
        presented = request.headers.get("Authorization", "")
        if job is None or not hmac.compare_digest(presented, f"Bearer {job.ticket}"):
            return web.json_response({"error": "no such job, or it is over"}, status=404)
        if job.socket is not None:
            return web.json_response({"error": "this job already reports"}, status=409)
        ws = web.WebSocketResponse(heartbeat=_HEARTBEAT)
        await ws.prepare(request)
        job.socket = ws
        job.host = request.query.get("host") or request.remote
        logger.info("the avatar of %s runs on worker host %s", job.spec.session_id, job.host)
        if job.close_requested:
            await ws.send_str(json.dumps({"op": "close", "key": job.key}))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                if job.finished:
                    break
                try:
                    if apply_event(job.events, decode(message.data.encode())):
                        job.finish()
                except (KeyError, ValueError):
                    logger.warning("worker host %s sent a malformed report; dropping it", job.host)
                    break
        finally:
            if not job.finished:
                job.fail(
                    FAILURE_WORKER_CRASHED,
                    f"The avatar's worker host {job.host} disconnected from the emulator.",
                )
        return ws

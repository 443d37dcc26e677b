"""A worker host: avatar workers as a LiveKit Agents worker pool (`protoface-emulator worker`).

    protoface-emulator worker --livekit-url ws://lk:7880 [--agent-name protoface-avatar]
                              [--capacity 8] [--name HOST]

registers with the developer's livekit-server under an agent name; an emulator
started with `--dispatch` asks LiveKit for one job per session
(`dispatch.AgentDispatch`) and LiveKit's load-aware dispatch picks the host. Run
it on any number of machines (or one per core on one machine: each host's jobs
share one Python process).

Each job carries the session's `WorkerSpec` in its metadata. The host joins the
room with the session's worker token (never the job's own token), runs the same
`AvatarWorker` a worker process runs, and reports its events back to the
emulator over a WebSocket until the emulator says `close` or goes away; then the
worker leaves the room and the job ends. The host reports its load as running
jobs over `capacity`, so LiveKit marks it full at `capacity`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from protoface_emulator.hosting.dispatch import LiveKitAgents
from protoface_emulator.hosting.protocol import EventWriter, JobOrder, decode, read_job_metadata

if TYPE_CHECKING:
    from protoface_emulator.avatar.options import WorkerOptions

__all__ = ["DEFAULT_CAPACITY", "WorkerHost"]

logger = logging.getLogger("protoface_emulator.workers.agent_worker")

DEFAULT_CAPACITY = 8
# How long the last reports may take to reach the emulator once the worker left.
_FLUSH_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 10.0


class _NoJobConnectWarning(logging.Filter):
    """Drops livekit-agents' warnings that a job never called `ctx.connect()`.

    Our jobs never do, on purpose: the avatar joins with the session's worker
    token, not as the job's own participant (which would be one more agent in the
    customer's room). The warnings would say something is wrong when nothing is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.startswith("The room connection was not established")
            or message.startswith("The job task completed without establishing a connection")
        )


class WorkerHost:
    """One worker host: a LiveKit Agents `AgentServer` whose jobs are avatar workers.

    Args:
        livekit: The livekit-server to register with, its credentials and the
            agent name jobs are dispatched to (the emulator's `--agent-name`), as
            `LiveKitAgents.checked(..., needed_by="a worker host")` returns them.
        capacity: Jobs this host runs at once; LiveKit sends no more.
        name: How the emulator's logs and failures name this host.
        options: `WorkerOptions` for every avatar worker; from the environment by default.

    Raises:
        ValueError: a capacity below 1.
    """

    def __init__(
        self,
        livekit: LiveKitAgents,
        *,
        capacity: int = DEFAULT_CAPACITY,
        name: str | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        self._livekit = livekit
        if capacity < 1:
            raise ValueError(
                f"a worker host runs at least 1 job at once; got capacity {capacity!r}"
            )
        self._livekit_url = self._livekit.ws_url
        self.agent_name = livekit.agent_name
        self.capacity = capacity
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        if options is None:
            from protoface_emulator.avatar.options import WorkerOptions

            options = WorkerOptions.from_env()
        self._options = options
        self._server: Any = None

    def __repr__(self) -> str:
        return (
            f"WorkerHost(name={self.name!r}, livekit_url={self._livekit_url!r}, "
            f"agent_name={self.agent_name!r}, capacity={self.capacity})"
        )

    def build_server(self) -> Any:
        """The `livekit.agents.AgentServer` that runs this host's jobs."""
        from livekit import agents

        capacity = self.capacity

        def load(server: agents.AgentServer) -> float:
            return len(server.active_jobs) / capacity

        options = agents.WorkerOptions(
            entrypoint_fnc=self._run_job,
            request_fnc=self._answer,
            agent_name=self.agent_name,
            ws_url=self._livekit_url,
            api_key=self._livekit.api_key,
            api_secret=self._livekit.api_secret,
            # Jobs are threads of this process: an avatar costs a worker's CPU, not
            # a Python interpreter's memory and start-up.
            job_executor_type=agents.JobExecutorType.THREAD,
            # One warm slot per job: the load of a reserved job is then 1/capacity.
            num_idle_processes=capacity,
            load_fnc=load,
            load_threshold=1.0,
            host="127.0.0.1",
            port=0,
        )
        return agents.AgentServer.from_server_options(options)

    async def run(self) -> None:
        """Register with LiveKit and run jobs until cancelled or `aclose()`d."""
        self._server = self.build_server()
        logging.getLogger("livekit.agents").addFilter(_NoJobConnectWarning())
        logger.info(
            "worker host %s: agent %r on %s, up to %d avatars",
            self.name,
            self.agent_name,
            self._livekit_url,
            self.capacity,
        )
        await self._server.run(devmode=False)

    async def aclose(self) -> None:
        """Leave every room and unregister."""
        if self._server is not None:
            await self._server.aclose()

    async def _answer(self, request: Any) -> None:
        # Accepting with an identity of our own: the job's token is never used (the
        # avatar joins with the session's worker token), but LiveKit wants one.
        await request.accept(identity=f"protoface-job-{request.id}")

    async def _run_job(self, ctx: Any) -> None:
        """A job: one session's avatar worker, reported to the emulator until it ends."""
        try:
            order = read_job_metadata(ctx.job.metadata)
        except ValueError as exc:
            logger.error("refusing job %s: %s", ctx.job.id, exc)
            ctx.shutdown(reason="not a protoface-emulator job")
            return
        try:
            await self._serve(order)
        finally:
            ctx.shutdown(reason="the avatar left its room")

    async def _serve(self, order: JobOrder) -> None:
        session = order.spec.session_id
        url = f"{order.reports}?host={quote(self.name)}"
        timeout = aiohttp.ClientTimeout(total=None, connect=_CONNECT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                ws = await http.ws_connect(
                    url, headers={"Authorization": f"Bearer {order.ticket}"}, heartbeat=5.0
                )
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                # The URL names the emulator and the job key, no secret.
                logger.error(
                    "cannot report %s to the emulator at %s: %s", session, order.reports, exc
                )
                return
            async with ws:
                await self._host_worker(order, ws)

    async def _host_worker(
        self, order: JobOrder, ws: aiohttp.ClientWebSocketResponse[bool]
    ) -> None:
        outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def send_reports() -> None:
            while (message := await outbox.get()) is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(json.dumps(message, separators=(",", ":")))

        from protoface_emulator.avatar.worker import make_worker_factory

        sender = asyncio.create_task(send_reports())
        handle = make_worker_factory(self._options)(
            order.spec, EventWriter(outbox.put_nowait, order.key)
        )
        logger.info(
            "job for %s: avatar %s joining %s",
            order.spec.session_id,
            order.spec.identity,
            order.spec.room_name,
        )
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError):
                    if decode(message.data.encode()).get("op") == "close":
                        break
        finally:
            # Asked to close, or the emulator went away: leave the room either way.
            await handle.aclose()
            outbox.put_nowait({"key": order.key, "event": "closed"})
            outbox.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sender, _FLUSH_TIMEOUT)
        logger.info("job for %s: avatar left", order.spec.session_id)

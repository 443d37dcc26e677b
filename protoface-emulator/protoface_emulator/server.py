"""The emulator in-process: an async context manager serving the API on loopback.

    async with Emulator() as emu:
        client = ProtofaceClient(emu.api_key, base_url=emu.url)
        ...

Leaving the block ends every session, waits until every worker has left its
room, and stops the server. The `protoface-emulator` command is this plus
signal handling (`cli.py`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from types import TracebackType
from typing import Any

from aiohttp import web

from protoface_emulator.api.app import Api, error_response
from protoface_emulator.api.errors import CODE_INTERNAL, CODE_MALFORMED_HTTP, ApiError
from protoface_emulator.api.faults import Faults
from protoface_emulator.api.ids import new_id
from protoface_emulator.api.limits import (
    DEFAULT_AVATAR_PROCESSING_SECONDS,
    DEFAULT_JOIN_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONCURRENCY,
    StoreConfig,
)
from protoface_emulator.api.request_log import RequestLog
from protoface_emulator.api.store import Store
from protoface_emulator.avatar.readonly import ReadOnly
from protoface_emulator.hosting.sites import start_site
from protoface_emulator.hosting.timing import Delays, TimedWorkers, Timing, resolve_timing
from protoface_emulator.lifecycle import ManagedWorkerFactory, WorkerFactory

logger = logging.getLogger("protoface_emulator.server")

# Long header lines and URLs reach the app (which answers with an envelope) instead
# of being cut off by aiohttp's 8 KiB default with a 400.
_MAX_LINE = 64 * 1024
# In-flight requests (a `late` fault, say) get this long once shutdown starts.
_SHUTDOWN_TIMEOUT_SECONDS = 2.0


def generate_api_key() -> str:
    """A fresh random API key for an emulator started without one."""
    return f"pf_emu_{secrets.token_urlsafe(24)}"


def _is_sendable_key(key: str) -> bool:
    return all("!" <= char <= "~" for char in key)


def default_worker_factory() -> WorkerFactory:
    """The real LiveKit worker (`protoface_emulator.avatar.worker.start_worker`).

    Imported here, not at module level, so the API and its tests do not load
    LiveKit unless a real worker is wanted.
    """
    from protoface_emulator.avatar.worker import start_worker

    return start_worker


class _EnvelopeRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, answering unparseable HTTP with an envelope.

    Relies on one upstream behaviour: a request line or header aiohttp cannot parse
    never reaches a handler; aiohttp answers it with `handle_error`, by default a
    plain-text page (and an ERROR log line with a traceback). Clients of the API
    can tell, so this answers with the envelope and logs one INFO line.
    `test_unparseable_http_gets_an_envelope` fails if an upgrade stops calling it.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer already went out: nothing sensible can follow it.
            raise ConnectionError("an answer was already being sent; closing the connection")
        if status >= 500:
            logger.error("failed to read a request from %s", request.remote, exc_info=exc)
            error = ApiError(status, CODE_INTERNAL, "The emulator failed to read this request.")
        else:
            # aiohttp's message may span lines (it draws a caret under the bad byte).
            detail = (message or "").strip().splitlines()
            first = detail[0][:120] if detail else type(exc).__name__
            logger.info("malformed request from %s: %s", request.remote, first)
            error = ApiError(
                status, CODE_MALFORMED_HTTP, f"The request is not valid HTTP: {first.rstrip('.')}."
            )
        response = error_response(error, new_id("req"))
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    """aiohttp's low-level server, with `_EnvelopeRequestHandler` connections."""

    def __init__(self, api: Api, **options: Any) -> None:
        super().__init__(api.handle)
        self._connection_options = options

    def __call__(self) -> web.RequestHandler:
        # The protocol factory asyncio calls per connection, on the running loop.
        return _EnvelopeRequestHandler(
            self, loop=asyncio.get_running_loop(), **self._connection_options
        )


class Emulator:
    """A Protoface API server on loopback, for tests and local development.

    Args:
        api_key: the bearer key clients must send; None generates one.
        host: address to listen on.
        port: port to listen on; 0 picks a free one (see `url`).
        worker_factory: starts a worker per session; None means the real LiveKit
            worker from `protoface_emulator.avatar.worker`, in this process. A
            `lifecycle.ManagedWorkerFactory` (`workers.ProcessPool`) is started
            with the emulator and closed after its sessions.
        max_concurrency: the plan's concurrent-session limit (429 beyond it).
        join_timeout: seconds a session may take to publish its first frame
            before it fails with `worker_join_timeout`.
        avatar_processing_delay: seconds an uploaded avatar stays `processing`.
        fault_seed: seed for probabilistic faults (see `faults.py`).
        faults: the `Faults` to consult (e.g. a subclass that also counts what it
            drew); a fresh one seeded with `fault_seed` by default.
        timing: how slow to be, as the hosted service is: a profile name
            (`"fast"`, the default, adds nothing; `"hosted"`: cold starts of
            1-5 s, API answers of 20-80 ms) or a `timing.Timing` (see there).

    Raises:
        ValueError: a bad argument (an unknown timing profile among them).
    """

    timing: ReadOnly[Timing] = ReadOnly(
        "The delays this emulator adds (`Timing()` for the default `fast` profile)."
    )
    api_key: ReadOnly[str] = ReadOnly("The bearer key clients must send.")
    store: ReadOnly[Store] = ReadOnly("The sessions and avatars behind the API.")
    faults: ReadOnly[Faults] = ReadOnly("Arm faults here (see `faults.Faults.add`).")
    requests: ReadOnly[RequestLog] = ReadOnly(
        "Every request the API received, with headers, body and answer (see `RequestLog`)."
    )
    host: ReadOnly[str] = ReadOnly("The address listened on.")
    port: ReadOnly[int] = ReadOnly("The port listened on (the real one once started with port 0).")

    def __init__(
        self,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        worker_factory: WorkerFactory | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        join_timeout: float = DEFAULT_JOIN_TIMEOUT_SECONDS,
        avatar_processing_delay: float = DEFAULT_AVATAR_PROCESSING_SECONDS,
        fault_seed: int | None = None,
        faults: Faults | None = None,
        timing: str | Timing | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1; got {max_concurrency}")
        if not (math.isfinite(join_timeout) and join_timeout > 0):
            raise ValueError(
                f"join_timeout must be a positive number of seconds; got {join_timeout}"
            )
        if not host.strip():
            raise ValueError("host must not be empty; use 0.0.0.0 or :: for every interface")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be within 0..65535 (0 picks a free one); got {port}")
        if api_key and not _is_sendable_key(api_key):
            # A key a client cannot put in an Authorization header would lock everyone out.
            raise ValueError(
                "the API key must be printable ASCII without spaces (it travels in "
                "'Authorization: Bearer <key>')"
            )
        self._api_key = api_key or generate_api_key()
        # `[::1]` as in a URL means the address `::1`.
        self._host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self._port = port
        config = StoreConfig(
            max_concurrency=max_concurrency,
            join_timeout_seconds=join_timeout,
            avatar_processing_seconds=avatar_processing_delay,
        )
        self._timing = resolve_timing(timing)
        self._delays = Delays(self._timing)
        self._worker_factory = worker_factory or default_worker_factory()
        self._store = Store(self._timed(self._worker_factory), config)
        self._faults = faults if faults is not None else Faults(seed=fault_seed)
        self._requests = RequestLog()
        self._runner: web.BaseRunner | None = None
        self._site: web.TCPSite | None = None

    def _timed(self, factory: WorkerFactory) -> WorkerFactory:
        # The fast profile leaves the factory as it is: the default path stays untouched.
        return factory if self._timing.is_instant else TimedWorkers(factory, self._delays)

    @property
    def url(self) -> str:
        """Base URL for clients, e.g. `http://127.0.0.1:8790`."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        """Start serving; `url` is valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("this Emulator is already started")
        if isinstance(self._worker_factory, ManagedWorkerFactory):
            await self._worker_factory.start()
        latency = None if self._timing.bounds("api_latency")[1] == 0 else self._delays.api_latency
        api = Api(self._store, self._api_key, self._faults, self._requests, latency=latency)
        access_log = logging.getLogger("aiohttp.access")
        server = _EnvelopeServer(
            api,
            # None: no access log unless debug logging asked for one.
            access_log=access_log if access_log.isEnabledFor(logging.DEBUG) else None,
            max_line_size=_MAX_LINE,
            max_field_size=_MAX_LINE,
        )
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS)
        self._site, self._port = await start_site(runner, self._host, self._port)
        self._runner = runner
        logger.info("serving on %s", self.url)

    async def aclose(self) -> None:
        """End every session, wait for every worker to leave, stop serving. Idempotent."""
        runner, site = self._runner, self._site
        self._runner = self._site = None
        if site is not None:
            await site.stop()  # no new connections while sessions wind down
        await self._store.aclose()
        if isinstance(self._worker_factory, ManagedWorkerFactory):
            await self._worker_factory.aclose()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

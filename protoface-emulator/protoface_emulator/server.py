"""The emulator in-process: an async context manager serving the API on loopback.

    async with Emulator() as emu:
        client = ProtofaceClient(emu.api_key, base_url=emu.url)
        ...

Leaving the block ends every session, waits until every worker has left its
room, and stops the server. The `protoface-emulator` command is this plus
signal handling (`cli.py`).
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from protoface_emulator.app import Api, error_response, http_exception_error
from protoface_emulator.errors import CODE_INTERNAL, CODE_MALFORMED_HTTP, ApiError
from protoface_emulator.faults import Faults, RequestLog
from protoface_emulator.ids import new_id
from protoface_emulator.lifecycle import WorkerFactory
from protoface_emulator.store import (
    DEFAULT_AVATAR_PROCESSING_SECONDS,
    DEFAULT_JOIN_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONCURRENCY,
    Store,
    StoreConfig,
)

logger = logging.getLogger("protoface_emulator.server")

# Long header lines and URLs reach the app (which answers with an envelope) instead
# of being cut off by aiohttp's 8 KiB default with a plain-text 400.
_MAX_LINE = 64 * 1024
# In-flight requests (a `late` fault, say) get this long once shutdown starts.
_SHUTDOWN_TIMEOUT_SECONDS = 2.0


def generate_api_key() -> str:
    """A fresh random API key for an emulator started without one."""
    return f"pf_emu_{secrets.token_urlsafe(24)}"


def _is_sendable_key(key: str) -> bool:
    return all("!" <= char <= "~" for char in key)


def default_worker_factory() -> WorkerFactory:
    """The real LiveKit worker (`protoface_emulator.worker.start_worker`).

    Imported here, not at module level, so the API and its tests do not load
    LiveKit unless a real worker is wanted.
    """
    from protoface_emulator.worker import start_worker

    return start_worker


class _EnvelopeRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering unparseable HTTP with an envelope.

    A request line or header aiohttp cannot parse never reaches the middleware;
    without this it would get aiohttp's plain-text page.
    """

    def handle_error(
        self,
        request: BaseRequest,
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
            # The client's mistake, answered below: one line, not aiohttp's traceback.
            logger.info(
                "malformed request from %s: %s",
                request.remote,
                detail[0][:120] if detail else type(exc).__name__,
            )
            error = ApiError(
                status,
                CODE_MALFORMED_HTTP,
                f"The request is not valid HTTP: {detail[0][:120] if detail else 'unparseable'}.",
            )
        response = error_response(error, new_id("req"))
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


_RequestHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def _answer_before_the_app(api: Api, handler: _RequestHandler) -> _RequestHandler:
    """Wrap the application's entry point for what happens before its middleware.

    aiohttp handles `Expect` and raises some HTTP errors (an unknown expectation:
    417) ahead of every middleware, as plain text. Here those get the envelope,
    and `Expect: 100-continue` is checked (key, declared length) before aiohttp
    invites the body with `100 Continue`.
    """

    async def handle(request: BaseRequest) -> web.StreamResponse:
        if request.version >= HttpVersion11 and hdrs.EXPECT in request.headers:
            error = api.check_expectation(request)
            if error is not None:
                response = error_response(error, new_id("req"))
                # The body was never invited: do not read it as the next request.
                response.force_close()
                return response
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return error_response(http_exception_error(exc), new_id("req"))

    return handle


class _Runner(web.AppRunner):
    def __init__(
        self,
        app: web.Application,
        api: Api,
        *,
        access_log: logging.Logger | None,
        max_line_size: int,
        max_field_size: int,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(
            app,
            access_log=access_log,
            max_line_size=max_line_size,
            max_field_size=max_field_size,
            shutdown_timeout=shutdown_timeout,
        )
        self._api = api

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Swap in the envelope-speaking connection handler when this aiohttp has the
        # attributes it relies on; otherwise keep aiohttp's own (still correct HTTP).
        if hasattr(server, "_loop") and hasattr(server, "_kwargs"):
            server.__class__ = _EnvelopeServer
        server.request_handler = _answer_before_the_app(self._api, server.request_handler)
        return server


class Emulator:
    """A Protoface API server on loopback, for tests and local development.

    Args:
        api_key: the bearer key clients must send; None generates one.
        host: address to listen on.
        port: port to listen on; 0 picks a free one (see `url`).
        worker_factory: starts a worker per session; None means the real LiveKit
            worker from `protoface_emulator.worker`.
        max_concurrency: the plan's concurrent-session limit (429 beyond it).
        join_timeout: seconds a session may take to publish its first frame
            before it fails with `worker_join_timeout`.
        avatar_processing_delay: seconds an uploaded avatar stays `processing`.
        fault_seed: seed for probabilistic faults (see `faults.py`).
        faults: the `Faults` to consult (e.g. a subclass that also counts what it
            drew); a fresh one seeded with `fault_seed` by default.
    """

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
        self._store = Store(worker_factory or default_worker_factory(), config)
        self._faults = faults if faults is not None else Faults(seed=fault_seed)
        self._requests = RequestLog()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def api_key(self) -> str:
        """The bearer key clients must send."""
        return self._api_key

    @property
    def store(self) -> Store:
        """The sessions and avatars behind the API."""
        return self._store

    @property
    def faults(self) -> Faults:
        """Arm faults here (see `faults.Faults.add`)."""
        return self._faults

    @property
    def requests(self) -> RequestLog:
        """Every request the API received, with headers, body and answer (see `RequestLog`)."""
        return self._requests

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._host

    @property
    def port(self) -> int:
        """The port listened on (the real one once started with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL for clients, e.g. `http://127.0.0.1:8790`."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        """Start serving; `url` is valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("this Emulator is already started")
        api = Api(self._store, self._api_key, self._faults, self._requests)
        debug = logging.getLogger("aiohttp.access").isEnabledFor(logging.DEBUG)
        runner = _Runner(
            api.build(),
            api,
            access_log=logging.getLogger("aiohttp.access") if debug else None,
            max_line_size=_MAX_LINE,
            max_field_size=_MAX_LINE,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site
        address = runner.addresses[0]
        self._port = int(address[1])
        logger.info("serving on %s", self.url)

    async def aclose(self) -> None:
        """End every session, wait for every worker to leave, stop serving. Idempotent."""
        runner, site = self._runner, self._site
        self._runner = self._site = None
        if site is not None:
            await site.stop()  # no new connections while sessions wind down
        await self._store.aclose()
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

"""The HTTP side of the Protoface public API: request -> requests/queries -> store -> views.

`Api.handle` is the whole server's request handler (aiohttp's low-level server
calls it for every parsed request, see `server.py`). It gives the request an id,
logs it (`RequestLog`), applies an armed fault, authenticates `/v1`, finds the
route (`urls.py`) and calls its handler. A handler reads what it needs from the
request (`reading.Call`), lets `checks`, `requests` or `queries` check it, makes one store call and
returns the view as JSON. Every failure, including ones nobody foresaw, leaves as the error envelope
with an `X-Request-Id` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import partial
from typing import cast

from aiohttp import HttpVersion11, hdrs, web

from protoface_emulator.api.checks import (
    check_bearer,
    check_body_headers,
    check_expectation,
    parse_idempotency_key,
)
from protoface_emulator.api.errors import (
    CODE_INTERNAL,
    CODE_METHOD_NOT_ALLOWED,
    CODE_ROUTE_NOT_FOUND,
    CODE_SERVICE_UNAVAILABLE,
    CODE_TOO_MANY_REQUESTS,
    CODE_TRANSPORT_UNSUPPORTED,
    ApiError,
    invalid,
)
from protoface_emulator.api.faults import Fault, Faults, gateway_html
from protoface_emulator.api.ids import new_id
from protoface_emulator.api.queries import (
    parse_avatar_list_query,
    parse_no_query,
    parse_session_list_query,
    parse_usage_query,
)
from protoface_emulator.api.reading import Call
from protoface_emulator.api.request_log import RecordedRequest, RequestLog
from protoface_emulator.api.requests import (
    parse_avatar_upload,
    parse_no_body,
    parse_session_create,
    request_fingerprint,
    validate_pipecat_create,
)
from protoface_emulator.api.store import Store
from protoface_emulator.api.urls import Resolved, resolve
from protoface_emulator.contract import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    JSON_BODY_LIMIT,
    REQUEST_ID_HEADER,
    UPLOAD_BODY_LIMIT,
)

logger = logging.getLogger("protoface_emulator.app")

Handler = Callable[..., Awaitable[web.StreamResponse]]

_dumps = partial(json.dumps, separators=(",", ":"), ensure_ascii=False)


def _needs_key(path: str) -> bool:
    """Every /v1 path takes the bearer key, including ones with no route."""
    return path == "/v1" or path.startswith("/v1/")


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def error_response(error: ApiError, request_id: str) -> web.Response:
    """The envelope answer for `error`, with `X-Request-Id` and `Retry-After`."""
    response = _json(error.envelope(request_id), status=error.status)
    response.headers.update(error.headers)
    response.headers[REQUEST_ID_HEADER] = request_id
    if error.retry_after is not None:
        response.headers[hdrs.RETRY_AFTER] = _format_seconds(error.retry_after)
    return response


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _fault_error(fault: Fault) -> ApiError:
    default_codes = {429: CODE_TOO_MANY_REQUESTS, 503: CODE_SERVICE_UNAVAILABLE}
    code = (
        fault.code
        or default_codes.get(fault.status)
        or (CODE_INTERNAL if fault.status >= 500 else "injected_fault")
    )
    return ApiError(
        fault.status,
        code,
        f"Injected fault: this request was answered with {fault.status} on purpose.",
        retry_after=fault.retry_after,
    )


class Api:
    """The request handler of one emulator.

    Args:
        store: the state behind the routes.
        api_key: the one bearer key that authenticates `/v1` requests.
        faults: armed faults (usually none).
        requests: where every request is logged (a fresh log by default).
        json_body_limit: largest JSON body, in bytes; more is a 413.
        upload_body_limit: largest avatar upload, in bytes; more is a 413.
        latency: seconds to add to each answer, drawn per request (`timing.Delays`);
            None adds nothing.
    """

    def __init__(
        self,
        store: Store,
        api_key: str,
        faults: Faults,
        requests: RequestLog | None = None,
        *,
        json_body_limit: int = JSON_BODY_LIMIT,
        upload_body_limit: int = UPLOAD_BODY_LIMIT,
        latency: Callable[[], float] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the emulator needs a non-empty API key")
        self._store = store
        self._key_digest = hashlib.sha256(api_key.encode("utf-8")).digest()
        # Idempotency keys are remembered per API key; never the key itself.
        self._scope = self._key_digest.hex()[:16]
        self._faults = faults
        self._requests = requests if requests is not None else RequestLog()
        self._json_limit = json_body_limit
        self._upload_limit = upload_body_limit
        self._latency = latency

    # -- the entry point -------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request (aiohttp's low-level server calls this)."""
        request_id = new_id("req")
        raw_path = request.rel_url.raw_path
        entry = self._requests.record(
            request.method, raw_path, request.query, request.headers, request_id
        )
        if not request.body_exists:
            entry.body = b""
        route = resolve(request.method, raw_path)
        if route.endpoint is not None:
            entry.route = route.endpoint.path
        try:
            response, fault = await self._answer(request, request_id, entry, route)
        except BaseException:
            self._requests.answered(entry, None)
            raise
        # A gateway's page knows nothing of request ids, and a scripted reply carries
        # exactly what was scripted; everything else carries one.
        if not response.prepared and (fault is None or fault.kind not in ("html", "reply")):
            response.headers[REQUEST_ID_HEADER] = request_id
        dropped = fault is not None and fault.kind == "drop"
        self._requests.answered(entry, None if dropped else response.status)
        return response

    async def _answer(
        self, request: web.BaseRequest, request_id: str, entry: RecordedRequest, route: Resolved
    ) -> tuple[web.StreamResponse, Fault | None]:
        if request.version >= HttpVersion11 and hdrs.EXPECT in request.headers:
            refused = self._refuse_expectation(request)
            if refused is not None:
                response = error_response(refused, request_id)
                # The body was never invited: do not read it as the next request.
                response.force_close()
                return response, None
            await _send_continue(request)
        if self._latency is not None:
            # Before the answer is worked out, so what it says is as fresh as it can be.
            await asyncio.sleep(self._latency())
        fault = self._faults.draw(request.method, request.rel_url.raw_path)
        entry.fault = fault
        if fault is None:
            return await self._respond(request, request_id, entry, route), None
        return await self._apply_fault(fault, request, request_id, entry, route), fault

    def _refuse_expectation(self, request: web.BaseRequest) -> ApiError | None:
        """What the headers alone rule out before a client sends the body it announced.

        A client waits for `100 Continue` before sending its body, so no key (401),
        a declared length over the limit (413) or an expectation other than
        100-continue (417) is answered instead, and the body never sent.
        """
        try:
            check_expectation(request.headers[hdrs.EXPECT])
            if _needs_key(request.path):
                check_bearer(request.headers.getall(hdrs.AUTHORIZATION, []), self._key_digest)
            is_upload = request.method == hdrs.METH_POST and request.path == "/v1/avatars"
            limit = self._upload_limit if is_upload else self._json_limit
            check_body_headers(None, request.content_length, limit)
        except ApiError as exc:
            return exc
        return None

    async def _respond(
        self, request: web.BaseRequest, request_id: str, entry: RecordedRequest, route: Resolved
    ) -> web.StreamResponse:
        try:
            return await self._dispatch(request, entry, route)
        except ApiError as exc:
            return error_response(exc, request_id)
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            # The client went away mid-request; nobody is left to read an answer.
            logger.info(
                "%s %s: client disconnected (request %s)", request.method, request.path, request_id
            )
            raise
        except Exception:
            logger.exception("%s %s failed (request %s)", request.method, request.path, request_id)
            return error_response(
                ApiError(
                    500,
                    CODE_INTERNAL,
                    f"The emulator failed to handle this request; please report request "
                    f"{request_id}.",
                ),
                request_id,
            )

    async def _dispatch(
        self, request: web.BaseRequest, entry: RecordedRequest, route: Resolved
    ) -> web.StreamResponse:
        # The key first, as the hosted API does: without it, a caller learns nothing,
        # not even which /v1 routes and methods exist.
        if _needs_key(request.path):
            check_bearer(request.headers.getall(hdrs.AUTHORIZATION, []), self._key_digest)
        if route.endpoint is None and route.allowed:
            allowed = ", ".join(route.allowed)
            raise ApiError(
                405,
                CODE_METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed on {request.path}; use {allowed}.",
                headers={"Allow": allowed},
            )
        if route.endpoint is None:
            raise ApiError(
                404,
                CODE_ROUTE_NOT_FOUND,
                f"No route {request.method} {request.path}; the API lives under /v1.",
            )
        handler = cast(Handler, getattr(self, route.endpoint.handler))
        return await handler(Call(request, entry), **route.params)

    async def _apply_fault(
        self,
        fault: Fault,
        request: web.BaseRequest,
        request_id: str,
        entry: RecordedRequest,
        route: Resolved,
    ) -> web.StreamResponse:
        logger.info("fault %s on %s %s", fault.kind, request.method, request.path)
        response: web.StreamResponse | None = None
        if fault.handled:
            response = await self._respond(request, request_id, entry, route)
        elif (
            fault.kind != "late"  # a late answer is the API's: it reads the body itself
            and request.body_exists
            and request.content_type != "multipart/form-data"
        ):
            # Read what the API will not, so the request log shows what was sent.
            with contextlib.suppress(ApiError):
                await Call(request, entry).body(self._json_limit)
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.kind == "late":
            if response is None:
                response = await self._respond(request, request_id, entry, route)
        elif fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            # aiohttp drops the answer silently once the transport is closed.
            return web.Response(status=500)
        elif fault.kind == "reply":
            # Exactly the scripted headers: `faults` gave any body a Content-Type.
            response = web.Response(status=fault.status, body=fault.reply_body(entry))
        elif fault.kind == "html":
            response = web.Response(
                status=fault.status, text=gateway_html(fault.status), content_type="text/html"
            )
            if fault.retry_after is not None:
                response.headers[hdrs.RETRY_AFTER] = _format_seconds(fault.retry_after)
        else:
            response = error_response(_fault_error(fault), request_id)
        response.headers.update(fault.headers)
        return response

    # -- routes ----------------------------------------------------------------------

    async def status(self, call: Call) -> web.StreamResponse:
        """`GET /v1/status`."""
        parse_no_query(call.query)
        return _json(self._store.status())

    async def plans(self, call: Call) -> web.StreamResponse:
        """`GET /v1/billing/plans`: a JSON array of plans."""
        parse_no_query(call.query)
        return _json([self._store.plan()])

    async def usage(self, call: Call) -> web.StreamResponse:
        """`GET /v1/usage`."""
        start, end = parse_usage_query(call.query, datetime.now(timezone.utc))
        return _json(self._store.usage(start, end))

    async def list_avatars(self, call: Call) -> web.StreamResponse:
        """`GET /v1/avatars`: stock avatars, then uploads, newest first."""
        return _json(self._store.list_avatars(parse_avatar_list_query(call.query)))

    async def get_avatar(self, call: Call, avatar_id: str) -> web.StreamResponse:
        """`GET /v1/avatars/{avatar_id}`."""
        parse_no_query(call.query)
        return _json(self._store.get_avatar(avatar_id).view())

    async def create_avatar(self, call: Call) -> web.StreamResponse:
        """`POST /v1/avatars`: multipart `image` (PNG/JPEG), `name`, `runtime_type`."""
        parse_no_query(call.query)
        upload = parse_avatar_upload(await call.form(self._upload_limit))
        avatar = self._store.create_avatar(
            name=upload.name, runtime_type=upload.runtime_type, image=upload.image
        )
        return _json(avatar.view(), status=201)

    async def delete_avatar(self, call: Call, avatar_id: str) -> web.StreamResponse:
        """`DELETE /v1/avatars/{avatar_id}`: 204; stock avatars are a 403."""
        parse_no_query(call.query)
        self._store.delete_avatar(avatar_id)
        return web.Response(status=204)

    async def create_session(self, call: Call) -> web.StreamResponse:
        """`POST /v1/sessions`: 201 with the session, `queued`.

        A replay under the same `Idempotency-Key` answers 201 again with the same
        session and the header `Idempotent-Replayed: true`.
        """
        parse_no_query(call.query)
        key = parse_idempotency_key(call.headers.getall(IDEMPOTENCY_KEY_HEADER, []))
        body = await call.json(self._json_limit)
        record, replayed = await self._store.create_session(
            parse_session_create(body),
            idempotency_key=key,
            idempotency_scope=self._scope,
            fingerprint=request_fingerprint(body),
        )
        response = _json(record.view(), status=201)
        if replayed:
            response.headers[IDEMPOTENT_REPLAYED_HEADER] = "true"
        return response

    async def list_sessions(self, call: Call) -> web.StreamResponse:
        """`GET /v1/sessions`: newest first, cursor paginated."""
        query = parse_session_list_query(call.query)
        return _json(
            self._store.list_sessions(
                limit=query.limit, starting_after=query.starting_after, filters=query.filters
            )
        )

    async def get_session(self, call: Call, session_id: str) -> web.StreamResponse:
        """`GET /v1/sessions/{session_id}`."""
        parse_no_query(call.query)
        return _json(self._store.get_session(session_id).view())

    async def end_session(self, call: Call, session_id: str) -> web.StreamResponse:
        """`POST /v1/sessions/{session_id}/end`: idempotent; returns the session."""
        parse_no_query(call.query)
        parse_no_body(await call.json(self._json_limit, optional=True))
        return _json((await self._store.end_session(session_id)).view())

    async def create_pipecat_session(self, call: Call) -> web.StreamResponse:
        """`POST /v1/pipecat/sessions`: validated, then refused (not emulated)."""
        parse_no_query(call.query)
        parse_idempotency_key(call.headers.getall(IDEMPOTENCY_KEY_HEADER, []))
        self._store.get_avatar(validate_pipecat_create(await call.json(self._json_limit)))
        raise invalid(
            CODE_TRANSPORT_UNSUPPORTED,
            "Pipecat relay sessions are not available in protoface-emulator; create a "
            "session with POST /v1/sessions and transport.type 'livekit'.",
        )


async def _send_continue(request: web.BaseRequest) -> None:
    """Invite the announced body with `100 Continue`.

    aiohttp's low-level server leaves `Expect` to the handler. The interim answer
    is not part of the final one: aiohttp's own expect handler resets the writer's
    count the same way, so a failure later can still be answered.
    """
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0

"""The HTTP routes of the Protoface public API.

Thin on purpose: each handler parses and validates its request (`schema.py`),
makes one store call and returns JSON. One middleware gives every request an id,
applies armed faults, checks the bearer key on `/v1` routes and turns every
failure, including ones nobody foresaw, into the error envelope with an
`X-Request-Id` header; nothing else leaves the server as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import partial

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from protoface_emulator.errors import (
    CODE_DUPLICATE_FIELD,
    CODE_EXPECTATION_FAILED,
    CODE_INTERNAL,
    CODE_INVALID_API_KEY,
    CODE_INVALID_BODY,
    CODE_INVALID_IDEMPOTENCY_KEY,
    CODE_INVALID_IMAGE,
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_METHOD_NOT_ALLOWED,
    CODE_MISSING_API_KEY,
    CODE_MISSING_FIELD,
    CODE_REQUEST_TOO_LARGE,
    CODE_ROUTE_NOT_FOUND,
    CODE_SERVICE_UNAVAILABLE,
    CODE_TOO_MANY_REQUESTS,
    CODE_TRANSPORT_UNSUPPORTED,
    CODE_UNKNOWN_FIELD,
    CODE_UNSUPPORTED_MEDIA_TYPE,
    ApiError,
    invalid,
    shown,
)
from protoface_emulator.faults import Fault, Faults, RecordedRequest, RequestLog, gateway_html
from protoface_emulator.ids import new_id
from protoface_emulator.schema import (
    JSONObject,
    parse_json_object,
    parse_session_create,
    query_limit,
    query_single,
    query_statuses,
    query_timestamp,
    reject_unknown_parameters,
    validate_pipecat_create,
)
from protoface_emulator.store import SessionFilter, Store, current_month

logger = logging.getLogger("protoface_emulator.app")

JSON_BODY_LIMIT = 64 * 1024
UPLOAD_BODY_LIMIT = 10 * 1024 * 1024
IDEMPOTENCY_KEY_MAX_LENGTH = 255
AVATAR_NAME_MAX_LENGTH = 100
AVATAR_RUNTIME_TYPES = ("avtr1", "mock")
DEFAULT_AVATAR_NAME = "Custom Avatar"
REQUEST_ID_HEADER = "X-Request-Id"
_LOG_ENTRY = web.RequestKey("log_entry", RecordedRequest)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Codings aiohttp decodes while reading a body (br and zstd only when their packages
# are installed; without them aiohttp refuses the request before the app sees it).
_DECODED_CONTENT_ENCODINGS = frozenset({"identity", "gzip", "deflate", "br", "zstd"})


def _needs_key(path: str) -> bool:
    """Every /v1 path takes the bearer key, including ones with no route."""
    return path == "/v1" or path.startswith("/v1/")


_dumps = partial(json.dumps, separators=(",", ":"), ensure_ascii=False)


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


def _snake(phrase: str) -> str:
    return "_".join(phrase.lower().replace("-", " ").split())


def http_exception_error(exc: web.HTTPException) -> ApiError:
    """The envelope error for an exception aiohttp raised itself.

    E.g. a 413 while reading a multipart body (the only body it reads for us, so
    its limit is the upload limit).
    """
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return ApiError(413, CODE_REQUEST_TOO_LARGE, f"The request body is too large: {exc.text}")
    return ApiError(exc.status, _snake(exc.reason or "error"), exc.reason or "Request failed.")


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
    """The routes and middleware of one emulator.

    Args:
        store: the state behind the routes.
        api_key: the one bearer key that authenticates `/v1` requests.
        faults: armed faults (usually none).
        requests: where every request is logged (a fresh log by default).
        json_body_limit: largest JSON body, in bytes; more is a 413.
        upload_body_limit: largest avatar upload, in bytes; more is a 413.
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
    ) -> None:
        if not api_key:
            raise ValueError("the emulator needs a non-empty API key")
        self._store = store
        self._key = api_key.encode("utf-8")
        # Idempotency keys are remembered per API key; never the key itself.
        self._scope = hashlib.sha256(self._key).hexdigest()[:16]
        self._faults = faults
        self._requests = requests if requests is not None else RequestLog()
        self._json_limit = json_body_limit
        self._upload_limit = upload_body_limit

    def build(self) -> web.Application:
        """A new aiohttp application serving the API."""
        # aiohttp enforces client_max_size only on the multipart reader; JSON bodies
        # are read with the smaller limit below.
        app = web.Application(middlewares=[self._middleware], client_max_size=self._upload_limit)
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/billing/plans", self.plans)
        app.router.add_get("/v1/usage", self.usage)
        app.router.add_get("/v1/avatars", self.list_avatars)
        app.router.add_post("/v1/avatars", self.create_avatar)
        app.router.add_get("/v1/avatars/{avatar_id}", self.get_avatar)
        app.router.add_delete("/v1/avatars/{avatar_id}", self.delete_avatar)
        app.router.add_get("/v1/sessions", self.list_sessions)
        app.router.add_post("/v1/sessions", self.create_session)
        app.router.add_get("/v1/sessions/{session_id}", self.get_session)
        app.router.add_post("/v1/sessions/{session_id}/end", self.end_session)
        app.router.add_post("/v1/pipecat/sessions", self.create_pipecat_session)
        return app

    # -- middleware ------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = new_id("req")
        raw_path = request.rel_url.raw_path
        entry = self._requests.record(
            request.method, raw_path, request.query, request.headers, request_id
        )
        if not request.body_exists:
            entry.body = b""
        request[_LOG_ENTRY] = entry
        fault = self._faults.draw(request.method, raw_path)
        entry.fault = fault
        try:
            if fault is None:
                response = await self._respond(request, handler, request_id)
            else:
                response = await self._apply_fault(fault, request, handler, request_id)
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

    async def _respond(
        self, request: web.Request, handler: Handler, request_id: str
    ) -> web.StreamResponse:
        try:
            return await self._dispatch(request, handler)
        except ApiError as exc:
            return error_response(exc, request_id)
        except web.HTTPException as exc:
            return error_response(http_exception_error(exc), request_id)
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

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The key first, as the hosted API does: without it, a caller learns nothing,
        # not even which /v1 routes and methods exist.
        if _needs_key(request.path):
            self._authenticate(request)
        routing_error = request.match_info.http_exception
        if isinstance(routing_error, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(routing_error.allowed_methods))
            raise ApiError(
                405,
                CODE_METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed on {request.path}; use {allowed}.",
                headers={"Allow": allowed},
            )
        if routing_error is not None:
            raise ApiError(
                404,
                CODE_ROUTE_NOT_FOUND,
                f"No route {request.method} {request.path}; the API lives under /v1.",
            )
        return await handler(request)

    def _authenticate(self, request: web.BaseRequest) -> None:
        headers = request.headers.getall(hdrs.AUTHORIZATION, [])
        challenge = {"WWW-Authenticate": 'Bearer realm="protoface"'}
        if not headers or (len(headers) == 1 and not headers[0].strip()):
            raise ApiError(
                401,
                CODE_MISSING_API_KEY,
                "No API key: send the header 'Authorization: Bearer <api key>'.",
                headers=challenge,
            )
        # RFC 9110 separates scheme and credentials by one or more spaces.
        scheme, _, token = headers[0].strip().partition(" ")
        presented = token.strip().encode("utf-8", "backslashreplace")
        # Digests of equal length, compared even for a malformed header, so neither
        # the key's length nor its content shows in the timing.
        valid = hmac.compare_digest(
            hashlib.sha256(presented).digest(), hashlib.sha256(self._key).digest()
        )
        # Two Authorization headers are ambiguous (which one counts?): refused.
        if len(headers) != 1 or scheme.lower() != "bearer" or not valid:
            raise ApiError(
                401,
                CODE_INVALID_API_KEY,
                "The API key is not valid; send 'Authorization: Bearer <api key>' with the "
                "key the emulator printed or was started with.",
                headers=challenge,
            )

    async def _apply_fault(
        self, fault: Fault, request: web.Request, handler: Handler, request_id: str
    ) -> web.StreamResponse:
        logger.info("fault %s on %s %s", fault.kind, request.method, request.path)
        response: web.StreamResponse | None = None
        if fault.handled:
            response = await self._respond(request, handler, request_id)
        else:
            await self._read_for_the_log(request)
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.kind == "late":
            if response is None:
                response = await self._respond(request, handler, request_id)
        elif fault.kind == "drop":
            transport = request.transport
            if transport is not None:
                transport.close()
            # aiohttp drops the answer silently once the transport is closed.
            return web.Response(status=500)
        elif fault.kind == "reply":
            response = web.Response(status=fault.status, body=fault.body)
            # Exactly the scripted headers: no Content-Type aiohttp would pick itself.
            response.headers.clear()
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

    async def _read_for_the_log(self, request: web.Request) -> None:
        """Read a body the API will not, so the request log shows what was sent."""
        if request.body_exists and request.content_type != "multipart/form-data":
            with contextlib.suppress(ApiError):
                await self._read_body(request, self._json_limit)

    def check_expectation(self, request: web.BaseRequest) -> ApiError | None:
        """The answer to a request with `Expect`, given before its body is sent.

        aiohttp would answer `100 Continue` to any `Expect: 100-continue` and only
        then run the API. A client waits for that answer to send its body, so what
        the headers alone rule out (no key, a declared length over the limit, an
        expectation other than 100-continue) is answered instead, and the body never
        sent. None: go on (aiohttp then answers `100 Continue`).
        """
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect.strip().lower() != "100-continue":
            return ApiError(
                417,
                CODE_EXPECTATION_FAILED,
                f"The only expectation supported is 'Expect: 100-continue'; got {expect!r}.",
            )
        if _needs_key(request.path):
            try:
                self._authenticate(request)
            except ApiError as exc:
                return exc
        is_upload = request.method == hdrs.METH_POST and request.path == "/v1/avatars"
        limit = self._upload_limit if is_upload else self._json_limit
        length = request.content_length
        if length is not None and length > limit:
            return self._too_large(limit)
        return None

    # -- request helpers ---------------------------------------------------------------

    def _too_large(self, limit: int) -> ApiError:
        return ApiError(
            413,
            CODE_REQUEST_TOO_LARGE,
            f"The request body is larger than the {limit} bytes allowed here.",
        )

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
        if encoding not in _DECODED_CONTENT_ENCODINGS:
            # aiohttp passes a coding it does not know through undecoded.
            raise ApiError(
                415,
                CODE_UNSUPPORTED_MEDIA_TYPE,
                f"Content-Encoding {encoding!r} is not supported; send the body "
                "uncompressed, or as gzip or deflate.",
            )
        length = request.content_length
        if length is not None and length > limit:
            raise self._too_large(limit)
        data = bytearray()
        try:
            async for chunk in request.content.iter_any():
                data += chunk
                if len(data) > limit:
                    raise self._too_large(limit)
        except (HttpProcessingError, web.RequestPayloadError):
            # Bad gzip/deflate or chunk framing surfaces only while the body is read.
            raise invalid(
                CODE_INVALID_BODY,
                "The request body could not be decoded; check its Content-Encoding and "
                "Transfer-Encoding.",
            ) from None
        body = bytes(data)
        entry: RecordedRequest | None = request.get(_LOG_ENTRY)
        if entry is not None:
            entry.body = body
        return body

    async def _read_json(self, request: web.Request, *, optional: bool = False) -> JSONObject:
        """The body as a JSON object; with `optional`, an empty body is `{}`."""
        raw = await self._read_body(request, self._json_limit)
        if optional and not raw.strip():
            return {}
        if raw.strip():
            media = request.content_type if hdrs.CONTENT_TYPE in request.headers else None
            is_json = media == "application/json" or (
                media is not None and media.startswith("application/") and media.endswith("+json")
            )
            charset = (request.charset or "utf-8").lower()
            if not is_json or charset not in ("utf-8", "utf8"):
                raise ApiError(
                    415,
                    CODE_UNSUPPORTED_MEDIA_TYPE,
                    f"Send the body as Content-Type: application/json (UTF-8); got "
                    f"{request.headers.get(hdrs.CONTENT_TYPE, 'no Content-Type')!r}.",
                )
        return parse_json_object(raw)

    @staticmethod
    def _idempotency_key(request: web.Request) -> str | None:
        values = request.headers.getall("Idempotency-Key", [])
        if not values:
            return None
        key = values[0]
        if (
            len(values) > 1
            or not key
            or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH
            or not key.isascii()
            or not key.isprintable()
        ):
            raise invalid(
                CODE_INVALID_IDEMPOTENCY_KEY,
                f"Idempotency-Key must be sent once, 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
                "printable ASCII characters (a UUID is ideal).",
            )
        return key

    # -- routes ----------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/status`."""
        reject_unknown_parameters(request.query, ())
        return _json(self._store.status())

    async def plans(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/billing/plans`: a JSON array of plans."""
        reject_unknown_parameters(request.query, ())
        return _json([self._store.plan()])

    async def usage(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/usage`: `period=current_month` (default) or `period_start`[/`period_end`]."""
        query = request.query
        reject_unknown_parameters(query, ("period", "period_start", "period_end"))
        period = query_single(query, "period")
        start = query_timestamp(query, "period_start")
        end = query_timestamp(query, "period_end")
        if period is not None:
            if period != "current_month":
                raise invalid(
                    CODE_INVALID_VALUE,
                    f"period must be 'current_month'; got {shown(period)}. For another window "
                    "pass period_start and period_end.",
                    "period",
                )
            if start is not None or end is not None:
                raise invalid(
                    CODE_INVALID_VALUE,
                    "Pass either period or period_start/period_end, not both.",
                    "period",
                )
        if start is None and end is None:
            start, end = current_month()
        elif start is None:
            raise invalid(CODE_MISSING_FIELD, "period_end needs a period_start.", "period_start")
        elif end is None:
            end = datetime.now(timezone.utc)
            if start >= end:
                raise invalid(
                    CODE_INVALID_VALUE,
                    "period_start is in the future; without period_end the window ends now.",
                    "period_start",
                )
        if start >= end:
            raise invalid(
                CODE_INVALID_VALUE, "period_start must be before period_end.", "period_end"
            )
        return _json(self._store.usage(start, end))

    async def list_avatars(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/avatars`: stock avatars, then uploads, newest first."""
        query = request.query
        reject_unknown_parameters(query, ("limit", "starting_after", "scope", "q"))
        scope = query_single(query, "scope")
        if scope is not None and scope not in ("all", "stock", "custom"):
            raise invalid(
                CODE_INVALID_VALUE,
                f"scope must be all, stock or custom; got {shown(scope)}.",
                "scope",
            )
        page = self._store.list_avatars(
            limit=query_limit(query),
            starting_after=query_single(query, "starting_after"),
            scope=scope,
            q=query_single(query, "q"),
        )
        return _json(page)

    async def get_avatar(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/avatars/{avatar_id}`."""
        reject_unknown_parameters(request.query, ())
        return _json(self._store.get_avatar(request.match_info["avatar_id"]).view())

    async def create_avatar(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/avatars`: multipart `image` (PNG/JPEG), `name`, `runtime_type`."""
        reject_unknown_parameters(request.query, ())
        if request.content_type != "multipart/form-data":
            raise ApiError(
                415,
                CODE_UNSUPPORTED_MEDIA_TYPE,
                "Upload an avatar as multipart/form-data with an 'image' file part; got "
                f"{request.headers.get(hdrs.CONTENT_TYPE, 'no Content-Type')!r}.",
            )
        length = request.content_length
        if length is not None and length > self._upload_limit:
            raise self._too_large(self._upload_limit)
        try:
            form = await request.post()
        except web.HTTPException:
            raise
        except Exception as exc:  # aiohttp's multipart parser raises assorted types
            raise invalid(
                CODE_INVALID_BODY, f"The multipart body could not be parsed: {exc}."
            ) from None
        for key in form:
            if key not in ("image", "name", "runtime_type"):
                raise invalid(
                    CODE_UNKNOWN_FIELD,
                    f"Unknown form field {key!r}; the accepted fields are image, name, "
                    "runtime_type.",
                    key,
                )
            if len(form.getall(key)) > 1:
                raise invalid(CODE_DUPLICATE_FIELD, f"Send the form field {key!r} once.", key)
        image = form.get("image")
        if image is None:
            raise invalid(CODE_MISSING_FIELD, "image is required (a PNG or JPEG file).", "image")
        if isinstance(image, web.FileField):
            data = image.file.read()
        elif isinstance(image, str):
            data = image.encode()
        else:
            data = bytes(image)
        if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")):
            raise invalid(CODE_INVALID_IMAGE, "image must be a PNG or JPEG file.", "image")
        name = self._form_text(form.get("name"), "name") or DEFAULT_AVATAR_NAME
        if len(name) > AVATAR_NAME_MAX_LENGTH:
            raise invalid(
                CODE_INVALID_VALUE,
                f"name must be at most {AVATAR_NAME_MAX_LENGTH} characters.",
                "name",
            )
        if not name.isprintable():
            raise invalid(
                CODE_INVALID_VALUE,
                "name must be one line of printable text (no control characters).",
                "name",
            )
        runtime_type = self._form_text(form.get("runtime_type"), "runtime_type") or "avtr1"
        if runtime_type not in AVATAR_RUNTIME_TYPES:
            raise invalid(
                CODE_INVALID_VALUE,
                f"runtime_type must be one of {', '.join(AVATAR_RUNTIME_TYPES)}; "
                f"got {runtime_type!r}.",
                "runtime_type",
            )
        avatar = self._store.create_avatar(name=name, runtime_type=runtime_type)
        return _json(avatar.view(), status=201)

    @staticmethod
    def _form_text(value: str | bytes | bytearray | web.FileField | None, name: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid(CODE_INVALID_TYPE, f"{name} must be a text field, not a file.", name)
        return value.strip() or None

    async def delete_avatar(self, request: web.Request) -> web.StreamResponse:
        """`DELETE /v1/avatars/{avatar_id}`: 204; stock avatars are a 403."""
        reject_unknown_parameters(request.query, ())
        self._store.delete_avatar(request.match_info["avatar_id"])
        return web.Response(status=204)

    async def create_session(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/sessions`: 201 with the session, `queued`.

        A replay under the same `Idempotency-Key` answers 201 again with the same
        session and the header `Idempotent-Replayed: true`.
        """
        reject_unknown_parameters(request.query, ())
        key = self._idempotency_key(request)
        body = await self._read_json(request)
        create = parse_session_create(body)
        fingerprint = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        record, replayed = await self._store.create_session(
            create, idempotency_key=key, idempotency_scope=self._scope, fingerprint=fingerprint
        )
        response = _json(record.view(), status=201)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    async def list_sessions(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/sessions`: newest first, cursor paginated."""
        query = request.query
        reject_unknown_parameters(
            query,
            ("status", "avatar_id", "created_after", "created_before", "limit", "starting_after"),
        )
        filters = SessionFilter(
            statuses=query_statuses(query),
            avatar_id=query_single(query, "avatar_id"),
            created_after=query_timestamp(query, "created_after"),
            created_before=query_timestamp(query, "created_before"),
        )
        page = self._store.list_sessions(
            limit=query_limit(query),
            starting_after=query_single(query, "starting_after"),
            filters=filters,
        )
        return _json(page)

    async def get_session(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/sessions/{session_id}`."""
        reject_unknown_parameters(request.query, ())
        return _json(self._store.get_session(request.match_info["session_id"]).view())

    async def end_session(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/sessions/{session_id}/end`: idempotent; returns the session."""
        reject_unknown_parameters(request.query, ())
        body = await self._read_json(request, optional=True)
        if body:
            first = next(iter(body))
            raise invalid(
                CODE_UNKNOWN_FIELD, f"Unknown field {first!r}; this call takes no body.", first
            )
        record = await self._store.end_session(request.match_info["session_id"])
        return _json(record.view())

    async def create_pipecat_session(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/pipecat/sessions`: validated, then refused (not emulated)."""
        reject_unknown_parameters(request.query, ())
        self._idempotency_key(request)
        avatar_id = validate_pipecat_create(await self._read_json(request))
        self._store.get_avatar(avatar_id)
        raise invalid(
            CODE_TRANSPORT_UNSUPPORTED,
            "Pipecat relay sessions are not available in protoface-emulator; create a "
            "session with POST /v1/sessions and transport.type 'livekit'.",
        )

"""Async client for the Protoface HTTP API.

Everything that goes over the network passes through `ProtofaceAPI._request`:
one place for headers, timeouts, retries, idempotency, `Retry-After`, error
mapping and secret redaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import email.utils
import ipaddress
import json
import math
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypedDict, cast

import aiohttp
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectionError,
    APIConnectOptions,
    APITimeoutError,
    NotGivenOr,
    utils,
)
from multidict import CIMultiDict, CIMultiDictProxy

from .errors import (
    ProtofaceAPIError,
    ProtofaceException,
    ProtofaceRetryAfterTooLongError,
    ProtofaceValueError,
)
from .log import logger
from .validation import (
    API_URL_SCHEMES,
    FIELD_CHARS,
    IDLE_TIMEOUT_RANGE,
    LIVEKIT_URL_SCHEMES,
    MAX_DURATION_RANGE,
    QUALITIES,
    MetadataValue,
    check_id,
    check_idempotency_key,
    check_int_range,
    check_nonblank,
    check_positive_int,
    check_quality,
    check_secret,
    check_url,
    checked_metadata,
    clip,
    instant,
)
from .version import __version__

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_MAX_RETRY_AFTER",
    "MAX_RESPONSE_BYTES",
    "QUALITIES",
    "SESSION_STATUSES",
    "TERMINAL_SESSION_STATUSES",
    "AvatarResource",
    "MetadataValue",
    "PlatformStatus",
    "ProtofaceAPI",
    "SessionResource",
]

DEFAULT_API_URL = "https://api.protoface.com"
DEFAULT_MAX_RETRY_AFTER = 20.0
"""Longest `Retry-After`, in seconds, that `ProtofaceAPI` waits by default."""
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest response body `ProtofaceAPI` reads; a larger one fails the call."""

SESSION_STATUSES = (
    "created",
    "queued",
    "starting",
    "running",
    "ending",
    "ended",
    "failed",
    "canceled",
)
TERMINAL_SESSION_STATUSES = frozenset({"ended", "failed", "canceled"})


_USER_AGENT = f"livekit-plugins-protoface/{__version__}"
_REDACTED = "[redacted]"
# Secrets that belong to the request in flight (a create's worker token), redacted
# alongside the client's own. Per request rather than collected on the client: a
# client that creates thousands of sessions must not redact against thousands of
# tokens (nor keep them all alive).
_REQUEST_SECRETS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "protoface_request_secrets", default=()
)
_BODY_EXCERPT_CHARS = 500
_BODY_KEEP_BYTES = 4096  # a larger error body is kept as a text excerpt, not decoded
_MESSAGE_CHARS = 300  # the envelope's human message quoted in errors
_NOT_JSON = object()  # a body that did not decode (not JSON, too deep, too large)


class SessionFailure(TypedDict):
    """`failure` of a failed session."""

    code: str
    message: str


class SessionUsage(TypedDict):
    """`usage` of a session (eventually consistent)."""

    billable_seconds: int
    frames: int


class SessionResource(TypedDict, total=False):
    """A Protoface session as the API returns it (decoded JSON, not validated)."""

    object: Literal["session"]
    id: str
    avatar_id: str
    status: str
    created_at: str
    started_at: str | None
    first_frame_at: str | None
    ended_at: str | None
    failed_at: str | None
    failure: SessionFailure | None
    idle_timeout_seconds: int
    max_duration_seconds: int
    metadata: dict[str, MetadataValue]
    quality: str
    transport: dict[str, Any]
    usage: SessionUsage | None


class AvatarResource(TypedDict, total=False):
    """A Protoface avatar as the API returns it (decoded JSON, not validated)."""

    object: Literal["avatar"]
    id: str
    name: str
    status: str
    is_demo: bool
    runtime_type: str
    created_at: str
    default_voice: str | None
    default_custom_instructions: str | None
    failure_reason: str | None


class StatusComponent(TypedDict):
    """One component of the platform status."""

    name: str
    status: str


class PlatformStatus(TypedDict, total=False):
    """`GET /v1/status`: `operational`, `degraded` or `outage`, per component."""

    status: str
    components: list[StatusComponent]
    updated_at: str


class ProtofaceAPI:
    """Async client for the Protoface session API.

    Works inside a LiveKit Agents job (it then borrows the job's shared HTTP
    session) and in plain scripts (it then creates and owns one; close it with
    `aclose()` or `async with`)::

        async with ProtofaceAPI() as api:
            async for session in api.list_sessions(status="running"):
                await api.end_session(session["id"])

    Retries: network errors, timeouts, 408, 429 and 5xx are retried up to
    `conn_options.max_retry` times; other 4xx and 2xx answers whose body is not
    a JSON object are not. Every `POST /v1/sessions` carries an
    `Idempotency-Key` that stays the same across its retries, so a retried
    create can never start a second billed session. `Retry-After` on 429/503
    sets the wait, up to `max_retry_after`.
    """

    def __init__(
        self,
        *,
        api_key: NotGivenOr[str | None] = NOT_GIVEN,
        api_url: NotGivenOr[str | None] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        session: aiohttp.ClientSession | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        """Create a Protoface API client.

        Args:
            api_key: Protoface API key. Defaults to the `PROTOFACE_API_KEY`
                environment variable.
            api_url: Protoface API base URL. Defaults to `PROTOFACE_API_URL`,
                then `https://api.protoface.com`. A trailing `/` is dropped.
            conn_options: `max_retry` retries after the first attempt,
                `retry_interval` between them (the first retry waits 0.1 s), and
                `timeout` per attempt, in seconds.
            session: A caller-owned aiohttp session; `aclose()` never closes
                it. When omitted, the job's shared session is used inside a
                LiveKit Agents job, else the client creates and owns one.
            max_retry_after: Longest wait, in seconds, the client accepts from a
                `Retry-After` header. When the server asks for longer, the call
                fails at once with `ProtofaceRetryAfterTooLongError` instead of
                sleeping.

        Raises:
            ProtofaceException: If no API key is passed and `PROTOFACE_API_KEY`
                is not set.
            ProtofaceValueError: If `api_url`, `api_key` or `max_retry_after`
                is malformed.
        """
        key = _resolve(api_key, "PROTOFACE_API_KEY")
        if not key:
            raise ProtofaceException(
                "api_key must be set by passing it to ProtofaceAPI or "
                "setting the PROTOFACE_API_KEY environment variable"
            )
        check_secret(key, "api_key")

        url = _resolve(api_url, "PROTOFACE_API_URL") or DEFAULT_API_URL
        check_url(url, "api_url", API_URL_SCHEMES, env_name="PROTOFACE_API_URL")
        url = url.rstrip("/")

        if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, (int, float)):
            raise ProtofaceValueError(
                f"max_retry_after must be a number of seconds, got {max_retry_after!r}",
                param="max_retry_after",
            )
        if not math.isfinite(max_retry_after) or max_retry_after < 0:
            raise ProtofaceValueError(
                f"max_retry_after must be a finite number of seconds >= 0, got {max_retry_after!r}",
                param="max_retry_after",
            )
        if not isinstance(conn_options, APIConnectOptions):
            raise ProtofaceValueError(
                f"conn_options must be an APIConnectOptions, got {type(conn_options).__name__}",
                param="conn_options",
            )
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ProtofaceValueError(
                f"session must be an aiohttp.ClientSession or None, got "
                f"{type(session).__name__}; omit it to let the client manage one",
                param="session",
            )

        self._api_key = key
        self._api_url = url
        self._conn_options = conn_options
        self._max_retry_after = float(max_retry_after)
        self._session = session
        self._owned_session: aiohttp.ClientSession | None = None
        # The loop the owned session is bound to: a script may call asyncio.run twice.
        self._owned_loop: asyncio.AbstractEventLoop | None = None
        self._secrets: set[str] = {key}

        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "http" and not _is_loopback_host(parsed.hostname or ""):
            # The bearer key would cross the network readable by anyone on the path.
            logger.warning(
                "the Protoface API key will travel in plaintext: api_url %s uses http:// "
                "to a host that is not loopback; use https://",
                url,
            )

    def __repr__(self) -> str:
        return f"ProtofaceAPI(api_url={self._api_url!r})"

    async def __aenter__(self) -> ProtofaceAPI:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session this client created, if any.

        A session passed by the caller, or the job's shared session, is left
        open. Safe to call more than once; a later call creates a new session.
        """
        owned, loop = self._owned_session, self._owned_loop
        self._owned_session = self._owned_loop = None
        await _close_owned(owned, loop)

    @property
    def api_url(self) -> str:
        """The API base URL requests go to (no trailing `/`)."""
        return self._api_url

    async def start_session(
        self,
        *,
        avatar_id: str,
        transport: dict[str, Any],
        max_duration_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        quality: NotGivenOr[str | None] = NOT_GIVEN,
        idle_timeout_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        metadata: NotGivenOr[Mapping[str, MetadataValue] | None] = NOT_GIVEN,
        idempotency_key: NotGivenOr[str | None] = NOT_GIVEN,
    ) -> dict[str, Any]:
        """Create a hosted Protoface avatar session (`POST /v1/sessions`).

        Args:
            avatar_id: Protoface avatar id to render (e.g. `av_stock_001`).
            transport: Transport configuration; for LiveKit
                `{type: "livekit", url, room_name, worker_token, ...}`.
            max_duration_seconds: Hard ceiling on the session, an int in
                1..3600. Protoface clamps it to the plan limit.
            quality: `mock`, `lite`, `standard` or `pro` (drives billing).
            idle_timeout_seconds: End the session after this many seconds
                without received audio, an int in 1..600.
            metadata: Your own key/value data (str keys; str, int, float, bool
                or None values; at most 8 KB as JSON; no `_avatar.` keys).
            idempotency_key: Key identifying this logical create. Generated
                (uuid4) when omitted or None. Reuse it to retry a create
                yourself without risking a second session.

        Returns:
            The decoded session object.

        Raises:
            ProtofaceValueError: If an argument is refused (nothing is sent).
            ProtofaceAPIError: If Protoface answers with a non-retryable error,
                or with a 2xx whose body is not a JSON object.
            APIConnectionError: If retryable failures persist after all retries.
        """
        body = self._session_body(
            avatar_id=avatar_id,
            transport=transport,
            max_duration_seconds=max_duration_seconds,
            quality=quality,
            idle_timeout_seconds=idle_timeout_seconds,
            metadata=metadata,
        )
        if utils.is_given(idempotency_key) and idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            key = idempotency_key
        else:
            key = str(uuid.uuid4())
        return await self._request("POST", "/v1/sessions", json_body=body, idempotency_key=key)

    async def end_session(self, session_id: str) -> dict[str, Any]:
        """End a hosted session now (`POST /v1/sessions/{id}/end`).

        The API makes this idempotent, so it is retried like a read.

        Args:
            session_id: Protoface session id returned by `start_session()`.

        Returns:
            The decoded session object.

        Raises:
            ProtofaceValueError: If `session_id` is not an id (blank, or with
                characters such as `/`, `?` or spaces); nothing is sent.
            ProtofaceAPIError: If Protoface answers with a non-retryable error.
            APIConnectionError: If retryable failures persist after all retries.
        """
        check_id(session_id, "session_id")
        return await self._request("POST", f"/v1/sessions/{session_id}/end")

    async def get_session(self, session_id: str) -> SessionResource:
        """Fetch one session (`GET /v1/sessions/{id}`).

        Args:
            session_id: Protoface session id.

        Returns:
            The decoded session object.

        Raises:
            ProtofaceValueError: If `session_id` is not an id (blank, or with
                characters such as `/`, `?` or spaces); nothing is sent.
            ProtofaceAPIError: If Protoface answers with a non-retryable error
                (`code` is `not_found` for an unknown id).
            APIConnectionError: If retryable failures persist after all retries.
        """
        check_id(session_id, "session_id")
        payload = await self._request("GET", f"/v1/sessions/{session_id}")
        return cast(SessionResource, payload)

    async def list_sessions(
        self,
        *,
        status: NotGivenOr[str | Sequence[str]] = NOT_GIVEN,
        avatar_id: NotGivenOr[str] = NOT_GIVEN,
        created_after: NotGivenOr[str | datetime.datetime] = NOT_GIVEN,
        created_before: NotGivenOr[str | datetime.datetime] = NOT_GIVEN,
        limit: NotGivenOr[int] = NOT_GIVEN,
    ) -> AsyncIterator[SessionResource]:
        """Iterate over sessions, newest first, fetching pages as needed.

        Follows `next_cursor` (sent back as `starting_after`) until the API
        reports no more pages::

            async for session in api.list_sessions(status=["queued", "running"]):
                print(session["id"], session["status"])

        Args:
            status: Only sessions in this status (or any of these statuses).
            avatar_id: Only sessions of this avatar.
            created_after: Only sessions created after this instant (ISO 8601
                string or timezone-aware datetime).
            created_before: Only sessions created before this instant.
            limit: Page size: how many sessions each request asks for. The
                iterator still yields every matching session.

        Yields:
            Decoded session objects.

        Raises:
            ProtofaceValueError: If an argument is refused (nothing is sent).
            ProtofaceAPIError: If Protoface answers with a non-retryable error.
            ProtofaceException: If a page is malformed.
            APIConnectionError: If retryable failures persist after all retries.
        """
        params: list[tuple[str, str]] = []
        if utils.is_given(status):
            if isinstance(status, str):
                statuses = [status]
            elif isinstance(status, Iterable):
                statuses = list(status)
            else:
                raise ProtofaceValueError(
                    f"status must be a session status or a list of them, got {status!r}",
                    param="status",
                )
            if not statuses:
                raise ProtofaceValueError(
                    "status must name at least one session status; omit it to list all",
                    param="status",
                )
            for value in statuses:
                if value not in SESSION_STATUSES:
                    raise ProtofaceValueError(
                        f"status {value!r} is not a session status; use one of "
                        f"{', '.join(SESSION_STATUSES)}",
                        param="status",
                    )
                params.append(("status", value))
        if utils.is_given(avatar_id):
            check_nonblank(avatar_id, "avatar_id")
            params.append(("avatar_id", avatar_id))
        if utils.is_given(created_after):
            params.append(("created_after", instant(created_after, "created_after")))
        if utils.is_given(created_before):
            params.append(("created_before", instant(created_before, "created_before")))
        if utils.is_given(limit):
            check_positive_int(limit, "limit")
            params.append(("limit", str(limit)))

        async for item in self._paginate("/v1/sessions", params):
            yield cast(SessionResource, item)

    async def list_avatars(
        self,
        *,
        scope: NotGivenOr[str] = NOT_GIVEN,
        q: NotGivenOr[str] = NOT_GIVEN,
        limit: NotGivenOr[int] = NOT_GIVEN,
    ) -> AsyncIterator[AvatarResource]:
        """Iterate over the avatars the API key can use, fetching pages as needed.

        Args:
            scope: Passed to the API's `scope` filter as is.
            q: Search text, passed to the API's `q` filter.
            limit: Page size: how many avatars each request asks for.

        Yields:
            Decoded avatar objects.

        Raises:
            ProtofaceValueError: If an argument is refused (nothing is sent).
            ProtofaceAPIError: If Protoface answers with a non-retryable error.
            ProtofaceException: If a page is malformed.
            APIConnectionError: If retryable failures persist after all retries.
        """
        params: list[tuple[str, str]] = []
        if utils.is_given(scope):
            check_nonblank(scope, "scope")
            params.append(("scope", scope))
        if utils.is_given(q):
            if not isinstance(q, str):
                raise ProtofaceValueError(f"q must be a string, got {q!r}", param="q")
            params.append(("q", q))
        if utils.is_given(limit):
            check_positive_int(limit, "limit")
            params.append(("limit", str(limit)))

        async for item in self._paginate("/v1/avatars", params):
            yield cast(AvatarResource, item)

    async def get_avatar(self, avatar_id: str) -> AvatarResource:
        """Fetch one avatar (`GET /v1/avatars/{id}`).

        Args:
            avatar_id: Protoface avatar id.

        Returns:
            The decoded avatar object.

        Raises:
            ProtofaceValueError: If `avatar_id` is not an id (blank, or with
                characters such as `/`, `?` or spaces); nothing is sent.
            ProtofaceAPIError: If Protoface answers with a non-retryable error.
            APIConnectionError: If retryable failures persist after all retries.
        """
        check_id(avatar_id, "avatar_id")
        payload = await self._request("GET", f"/v1/avatars/{avatar_id}")
        return cast(AvatarResource, payload)

    async def get_status(self) -> PlatformStatus:
        """Fetch the platform status (`GET /v1/status`).

        Returns:
            `{status, components, updated_at}`; `status` is `operational`,
            `degraded` or `outage`.

        Raises:
            ProtofaceAPIError: If Protoface answers with a non-retryable error.
            APIConnectionError: If retryable failures persist after all retries.
        """
        payload = await self._request("GET", "/v1/status")
        return cast(PlatformStatus, payload)

    # -- internals ---------------------------------------------------------

    def _session_body(
        self,
        *,
        avatar_id: str,
        transport: Mapping[str, Any],
        max_duration_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        quality: NotGivenOr[str | None] = NOT_GIVEN,
        idle_timeout_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        metadata: NotGivenOr[Mapping[str, MetadataValue] | None] = NOT_GIVEN,
    ) -> dict[str, Any]:
        """The checked `POST /v1/sessions` body; refuses bad input before the network."""
        check_nonblank(avatar_id, "avatar_id")
        body: dict[str, Any] = {
            "avatar_id": avatar_id,
            "transport": self._checked_transport(transport),
        }
        if utils.is_given(max_duration_seconds) and max_duration_seconds is not None:
            check_int_range(max_duration_seconds, "max_duration_seconds", *MAX_DURATION_RANGE)
            body["max_duration_seconds"] = max_duration_seconds
        if utils.is_given(quality) and quality is not None:
            check_quality(quality, "quality")
            body["quality"] = quality
        if utils.is_given(idle_timeout_seconds) and idle_timeout_seconds is not None:
            check_int_range(idle_timeout_seconds, "idle_timeout_seconds", *IDLE_TIMEOUT_RANGE)
            body["idle_timeout_seconds"] = idle_timeout_seconds
        if utils.is_given(metadata) and metadata is not None:
            body["metadata"] = checked_metadata(metadata, "metadata")
        return body

    def _add_secret(self, value: str) -> None:
        """Redact `value` from everything this client surfaces (bodies, messages)."""
        if value:
            self._secrets.add(value)

    def _active_secrets(self) -> tuple[str, ...]:
        """The client's secrets and the current request's."""
        return (*self._secrets, *_REQUEST_SECRETS.get())

    def _redact_text(self, text: str) -> str:
        # Longest first, so a secret containing another is replaced whole.
        for secret in sorted(self._active_secrets(), key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def _field(self, value: object, limit: int = FIELD_CHARS) -> str | None:
        """A server-provided string fit to quote in an error: redacted, one line, short."""
        if not isinstance(value, str) or not value:
            return None
        # Redact before clipping, so a secret cut in half cannot survive.
        return _one_line(clip(self._redact_text(value), limit))

    def _parse(self, raw: bytes | None) -> object:
        """The decoded JSON body with secrets redacted, or `_NOT_JSON`."""
        if raw is None:
            return _NOT_JSON
        try:
            payload: object = json.loads(raw)
            secrets = self._active_secrets()
            # Without a backslash every decoded string stands in the raw bytes as
            # is, so a secret absent from them is absent from the payload: the
            # common case skips re-encoding the whole body.
            if b"\\" in raw or any(secret.encode() in raw for secret in secrets):
                # Redacting the text form also reaches keys and escaped characters.
                text = json.dumps(payload, ensure_ascii=False)
                if any(secret in text for secret in secrets):
                    payload = json.loads(self._redact_text(text))
        except (ValueError, RecursionError):
            # RecursionError: a hostile body nested thousands of levels deep.
            return _NOT_JSON
        return payload

    def _error_body(self, raw: bytes | None, payload: object) -> object:
        """What an exception keeps as `body`: small JSON decoded, else a short excerpt."""
        if raw is None or not raw.strip():
            return None
        if payload is not _NOT_JSON and len(raw) <= _BODY_KEEP_BYTES:
            return payload
        return clip(self._redact_text(raw.decode("utf-8", "replace")), _BODY_EXCERPT_CHARS)

    def _scrub(self, error: BaseException) -> None:
        """Redact what aiohttp copied into a network error and its causes.

        `ClientResponseError` keeps the request headers (the bearer key) and the
        response headers for its repr, and a parse error quotes the bytes the
        server sent; the exception is kept as a cause, so it must not carry them.
        """
        current: BaseException | None = error
        seen: set[int] = set()
        while current is not None and id(current) not in seen and len(seen) < 8:
            seen.add(id(current))
            if isinstance(current, aiohttp.ClientResponseError):
                info = current.request_info
                current.request_info = aiohttp.RequestInfo(
                    info.url, info.method, self._redact_headers(info.headers), info.real_url
                )
                if current.headers is not None:
                    current.headers = self._redact_headers(current.headers)
                current.args = (current.request_info, current.history)
            message = getattr(current, "message", None)
            if isinstance(message, str):
                with contextlib.suppress(AttributeError):
                    current.message = self._redact_text(message)  # type: ignore[attr-defined]
            current.args = tuple(
                self._redact_text(arg) if isinstance(arg, str) else arg for arg in current.args
            )
            current = current.__cause__ or current.__context__

    def _redact_headers(self, headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(
            CIMultiDict(
                (name, _REDACTED if name.lower() == "authorization" else self._redact_text(value))
                for name, value in headers.items()
            )
        )

    def _checked_transport(self, transport: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(transport, Mapping):
            raise ProtofaceValueError(
                f"transport must be a dict such as {{'type': 'livekit', 'url': ..., "
                f"'room_name': ..., 'worker_token': ...}}, got {type(transport).__name__}",
                param="transport",
            )
        checked = dict(transport)
        if checked.get("type") != "livekit":
            raise ProtofaceValueError(
                f"transport.type must be 'livekit' (the only transport Protoface accepts), "
                f"got {checked.get('type')!r}",
                param="transport.type",
            )
        check_url(checked.get("url"), "transport.url", LIVEKIT_URL_SCHEMES)
        check_nonblank(checked.get("room_name"), "transport.room_name")
        token = checked.get("worker_token")
        check_secret(token, "transport.worker_token")
        if "worker_identity" in checked and checked["worker_identity"] is not None:
            check_nonblank(checked["worker_identity"], "transport.worker_identity")
        # Values JSON cannot carry are refused when the body is encoded (`_encode_body`).
        return checked

    async def _http_session(self) -> aiohttp.ClientSession:
        if self._session is not None:
            if self._session.closed:
                raise ProtofaceException(
                    "the aiohttp session passed to ProtofaceAPI(session=...) is closed; "
                    "pass an open one, or omit session to let the client manage its own"
                )
            return self._session
        loop = asyncio.get_running_loop()
        stale: aiohttp.ClientSession | None = None
        stale_loop = self._owned_loop
        if self._owned_session is not None and (
            self._owned_session.closed or self._owned_loop is not loop
        ):
            # Closed, or made for another event loop (a script's second asyncio.run).
            stale, self._owned_session, self._owned_loop = self._owned_session, None, None
        session = self._owned_session
        if session is None:
            try:
                # Inside a job, share the job's session (its proxy and TLS settings).
                session = utils.http_context.http_session()
            except RuntimeError:
                # A plain script: nothing to borrow, so create one and own it.
                session = self._owned_session = aiohttp.ClientSession()
                self._owned_loop = loop
        await _close_owned(stale, stale_loop)
        return session

    async def _paginate(
        self, path: str, params: list[tuple[str, str]]
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page_params = list(params)
            if cursor is not None:
                page_params.append(("starting_after", cursor))
            page = await self._request("GET", path, params=page_params)
            data = page.get("data")
            if not isinstance(data, list):
                raise ProtofaceException(
                    f"Protoface API GET {path} returned a page without a `data` list"
                )
            for item in data:
                if isinstance(item, dict):
                    yield item
            next_cursor = page.get("next_cursor")
            if not page.get("has_more") or not isinstance(next_cursor, str) or not next_cursor:
                return
            if next_cursor in seen:
                # A server that hands back a cursor it already gave would loop forever.
                raise ProtofaceException(
                    f"Protoface API GET {path} returned next_cursor "
                    f"{clip(next_cursor, FIELD_CHARS)!r} again (the same next_cursor "
                    f"twice); stopping instead of looping forever"
                )
            seen.add(next_cursor)
            cursor = next_cursor

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Sequence[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        attempts: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one logical request, retrying per `conn_options`.

        `attempts` and `timeout` override `conn_options` for internal calls.
        A worker token in the body is redacted from whatever this request
        surfaces (errors, bodies, logs), like the client's own secrets.
        """
        data = _encode_body(json_body)
        transport = json_body.get("transport") if json_body is not None else None
        token = transport.get("worker_token") if isinstance(transport, Mapping) else None
        if not isinstance(token, str) or not token:
            return await self._send(method, path, data, params, idempotency_key, attempts, timeout)
        scope = _REQUEST_SECRETS.set((*_REQUEST_SECRETS.get(), token))
        try:
            return await self._send(method, path, data, params, idempotency_key, attempts, timeout)
        finally:
            _REQUEST_SECRETS.reset(scope)

    async def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        params: Sequence[tuple[str, str]] | None,
        idempotency_key: str | None,
        attempts: int | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
        }
        if idempotency_key is not None:
            # The same key on every retry: the server answers a replay with the
            # session it already created instead of starting a second one.
            headers["Idempotency-Key"] = idempotency_key
        if data is not None:
            headers["Content-Type"] = "application/json"

        url = f"{self._api_url}{path}"
        if attempts is None:
            attempts = self._conn_options.max_retry + 1
        per_attempt = self._conn_options.timeout if timeout is None else timeout
        client_timeout = aiohttp.ClientTimeout(total=per_attempt or None)
        last_error: Exception | None = None

        for attempt in range(attempts):
            delay: float | None = None
            try:
                session = await self._http_session()
                # No redirects: the API never sends one, and following it would
                # hand the bearer key (or a POST) to wherever it points.
                async with session.request(
                    method,
                    url,
                    data=data,
                    params=params,
                    headers=headers,
                    timeout=client_timeout,
                    allow_redirects=False,
                ) as response:
                    raw = await _read_body(response)
                    if 200 <= response.status < 300:
                        return self._decode_success(method, path, response, raw)
                    error = self._error_from_response(method, path, response, raw)
            except asyncio.TimeoutError as exc:
                last_error = APITimeoutError(
                    f"Protoface API {method} {path} timed out after {per_attempt:g}s"
                )
                last_error.__cause__ = exc
            except aiohttp.ClientError as exc:
                self._scrub(exc)
                last_error = APIConnectionError(f"Protoface API {method} {path}: network error")
                last_error.__cause__ = exc
            else:
                if not error.retryable:
                    raise error
                last_error = error
                if error.retry_after is not None and error.status_code in (429, 503):
                    delay = error.retry_after

            if delay is not None and delay > self._max_retry_after:
                # Said even on the last attempt: how long the server wants is the
                # actionable part, more than "retries ran out".
                assert isinstance(last_error, ProtofaceAPIError)
                raise _retry_after_too_long(last_error, self._max_retry_after) from last_error
            if attempt + 1 >= attempts:
                break
            if delay is None:
                delay = self._conn_options._interval_for_retry(attempt)

            logger.warning(
                "Protoface API %s %s failed (%s); retrying in %.2fs (retry %d of %d)",
                method,
                path,
                _describe(last_error),
                delay,
                attempt + 1,
                attempts - 1,
                extra={"attempt": attempt + 1, "method": method, "path": path},
            )
            await asyncio.sleep(delay)

        raise APIConnectionError(
            f"Protoface API {method} {path} failed after {attempts} attempt(s)"
        ) from last_error

    def _decode_success(
        self, method: str, path: str, response: aiohttp.ClientResponse, raw: bytes | None
    ) -> dict[str, Any]:
        payload = self._parse(raw)
        if isinstance(payload, dict):
            return payload

        # Not retryable: a 2xx means the server acted (a create may have started
        # a session); retrying would only repeat that.
        request_id = self._field(response.headers.get("X-Request-Id"))
        shape = (
            _describe_body(response, raw)
            if payload is _NOT_JSON
            else f"JSON that is not an object ({type(payload).__name__})"
        )
        raise ProtofaceAPIError(
            f"Protoface API {method} {path} answered {response.status} with {shape}; "
            f"expected a JSON object" + _request_id_suffix(request_id),
            status_code=response.status,
            request_id=request_id,
            body=self._error_body(raw, payload),
            retryable=False,
        )

    def _error_from_response(
        self, method: str, path: str, response: aiohttp.ClientResponse, raw: bytes | None
    ) -> ProtofaceAPIError:
        status = response.status
        retry_after = _parse_retry_after(response.headers.get("Retry-After"))
        retryable = status in (408, 429) or status >= 500
        header_request_id = self._field(response.headers.get("X-Request-Id"))
        payload = self._parse(raw)
        envelope = payload.get("error") if isinstance(payload, dict) else None

        if isinstance(envelope, dict):
            code = self._field(envelope.get("code"))
            err_type = self._field(envelope.get("type"))
            param = self._field(envelope.get("param"))
            request_id = self._field(envelope.get("request_id")) or header_request_id
            api_message = self._field(envelope.get("message"), _MESSAGE_CHARS) or "no message"
            details = [f"request_id={request_id or 'unknown'}"]
            if param:
                details.append(f"param={param}")
            message = (
                f"Protoface API {method} {path} failed: {status} {code or 'unknown_error'}: "
                f"{api_message} ({', '.join(details)})"
            )
        else:
            code = err_type = param = None
            request_id = header_request_id
            if 300 <= status < 400:
                location = self._field(response.headers.get("Location")) or "nowhere"
                shape = (
                    f"a redirect to {location}; the Protoface API does not redirect, so "
                    f"check api_url ({self._api_url})"
                )
            elif payload is _NOT_JSON:
                shape = _describe_body(response, raw)
            else:
                shape = "JSON that is not a Protoface error envelope"
            message = f"Protoface API {method} {path} failed: {status} with {shape}"
            message += _request_id_suffix(request_id)

        return ProtofaceAPIError(
            message,
            status_code=status,
            code=code,
            type=err_type,
            param=param,
            request_id=request_id,
            retry_after=retry_after,
            body=self._error_body(raw, payload),
            retryable=retryable,
        )


# -- helpers shared with avatar.py ------------------------------------------


def _resolve(value: NotGivenOr[str | None], env_name: str) -> str | None:
    """The argument when given (and not None), else the environment variable."""
    if utils.is_given(value) and value is not None:
        return value
    return os.environ.get(env_name) or None


async def _close_owned(
    session: aiohttp.ClientSession | None, loop: asyncio.AbstractEventLoop | None
) -> None:
    """Close a session this client created, from whichever loop is running now."""
    if session is None or session.closed:
        return
    if loop is None or loop is asyncio.get_running_loop() or loop.is_closed():
        # A finished loop's session can still be marked closed from here (its
        # sockets went with that loop); nothing is awaited on the dead loop.
        await session.close()
    # Otherwise it belongs to a loop still running in another thread, where
    # only that loop can close it; it is left alone.


def _encode_body(body: Mapping[str, Any] | None) -> bytes | None:
    """The request body as JSON bytes, encoded once for all attempts.

    Raises:
        ProtofaceValueError: A value JSON cannot carry (a set, NaN, ...), naming
            the top-level field that holds it.
    """
    if body is None:
        return None
    try:
        return json.dumps(body, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        param = next((str(key) for key in body if not _encodes(body[key])), "body")
        raise ProtofaceValueError(
            f"{param} must hold only JSON values (str, int, float, bool, None, lists and "
            f"dicts of them); {exc}",
            param=param,
        ) from None


def _encodes(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


async def _read_body(response: aiohttp.ClientResponse) -> bytes | None:
    """The response body, or None when it exceeds `MAX_RESPONSE_BYTES` (left unread)."""
    length = response.content_length
    if length is not None:
        # aiohttp holds a body to its declared length: read it in one go.
        return None if length > MAX_RESPONSE_BYTES else await response.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _is_loopback_host(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _one_line(text: str) -> str:
    # A hostile server must not be able to forge log lines through an error message.
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _retry_after_too_long(error: ProtofaceAPIError, cap: float) -> ProtofaceRetryAfterTooLongError:
    asked = error.retry_after or 0.0
    return ProtofaceRetryAfterTooLongError(
        f"{error.message}; the server asked to retry after {_seconds(asked)}, longer than "
        f"max_retry_after={cap:g}s, so the call fails now instead of waiting "
        f"(raise max_retry_after on ProtofaceAPI to wait longer)",
        status_code=error.status_code,
        max_retry_after=cap,
        code=error.code,
        type=error.type,
        param=error.param,
        request_id=error.request_id,
        retry_after=error.retry_after,
        body=error.body,
    )


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


def _describe_body(response: aiohttp.ClientResponse, raw: bytes | None) -> str:
    if raw is None:
        return f"a body larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB (not read)"
    text = raw.strip()
    if not text:
        return "an empty body"
    content_type = response.headers.get("Content-Type", "").lower()
    if "html" in content_type or text[:1] == b"<":
        return "an HTML page (likely from a gateway or proxy in front of the API)"
    return "a body that is not JSON"


def _request_id_suffix(request_id: str | None) -> str:
    return f" (request_id={request_id})" if request_id else ""


def _describe(error: Exception | None) -> str:
    if isinstance(error, ProtofaceAPIError):
        return f"{error.status_code} {error.code or 'no error code'}"
    if error is None:
        return "unknown error"
    cause = error.__cause__
    return type(cause).__name__ if cause is not None else type(error).__name__

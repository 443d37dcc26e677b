"""`ProtofaceAPI`: the public client for the Protoface HTTP API, one method per endpoint.

Each method checks its arguments, then hands one logical request to the
`Requester` (`requester.py`: the request loop, retries and error mapping).
Resource types and the contract's constants are in `types.py`.
"""

from __future__ import annotations

import datetime
import math
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import aiohttp
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
    utils,
)

from .errors import ProtofaceException, ProtofaceValueError
from .log import logger
from .params import avatar_query, checked_transport, session_query
from .redact import Redactor
from .requester import MAX_RESPONSE_BYTES, Requester, encode_body
from .types import (
    QUALITIES,
    SESSION_STATUSES,
    TERMINAL_SESSION_STATUSES,
    AvatarResource,
    MetadataValue,
    PlatformStatus,
    SessionOptions,
    SessionResource,
    check_idempotency_key,
)
from .validation import (
    API_URL_SCHEMES,
    FIELD_CHARS,
    check_id,
    check_secret,
    check_url,
    clip,
    is_loopback_host,
    resolve_setting,
)

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
    "SessionOptions",
    "SessionResource",
]

DEFAULT_API_URL = "https://api.protoface.com"
DEFAULT_MAX_RETRY_AFTER = 20.0
"""Longest `Retry-After`, in seconds, that `ProtofaceAPI` waits by default."""


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
    sets the shortest wait, up to `max_retry_after`. Every wait is drawn at
    random from a window (`retry.retry_window`), so a fleet meeting the same
    errors does not retry in step.

    Errors: every method checks its arguments before anything is sent, and
    raises `ProtofaceValueError` for one it refuses (an id that is blank or
    holds characters such as `/`, `?` or spaces, say), with nothing sent;
    `ProtofaceAPIError` when Protoface answers with a non-retryable error, or
    with a 2xx whose body is not a JSON object; `APIConnectionError` when
    retryable failures persist after all retries; and, from the `list_*`
    iterators, `ProtofaceException` when a page is malformed.

    Args:
        api_key: Protoface API key. Defaults to the `PROTOFACE_API_KEY`
            environment variable.
        api_url: Protoface API base URL. Defaults to `PROTOFACE_API_URL`,
            then `https://api.protoface.com`. A trailing `/` is dropped.
        conn_options: `max_retry` retries after the first attempt,
            `retry_interval` between them on average (the first retry waits
            0.1-0.6 s), and
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

    def __init__(
        self,
        *,
        api_key: NotGivenOr[str | None] = NOT_GIVEN,
        api_url: NotGivenOr[str | None] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        session: aiohttp.ClientSession | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        """Create a Protoface API client; the arguments are described on the class."""
        key, url = _client_settings(api_key, api_url, max_retry_after, conn_options, session)
        self._api_url = url
        self._requester = Requester(
            api_url=url,
            api_key=key,
            conn_options=conn_options,
            max_retry_after=float(max_retry_after),
            session=session,
            redactor=Redactor(key),
        )

        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "http" and not is_loopback_host(parsed.hostname or ""):
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
        await self._requester.aclose()

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
        """
        options = SessionOptions(
            avatar_id=avatar_id,
            max_duration_seconds=_given(max_duration_seconds),
            quality=_given(quality),
            idle_timeout_seconds=_given(idle_timeout_seconds),
            metadata=_given(metadata) or {},
        )
        return await self.create_session(
            options, transport=transport, idempotency_key=_given(idempotency_key)
        )

    async def create_session(
        self,
        options: SessionOptions,
        *,
        transport: Mapping[str, Any],
        idempotency_key: str | None = None,
        conn_options: APIConnectOptions | None = None,
    ) -> dict[str, Any]:
        """Create a hosted session from checked options (`POST /v1/sessions`).

        `start_session` with its keyword arguments builds the `SessionOptions`
        and comes here; `AvatarSession` builds them once and creates every
        session of a conversation with them.

        Args:
            options: What the session is created with (checked when built).
            transport: Transport configuration; for LiveKit
                `{type: "livekit", url, room_name, worker_token, ...}`.
            idempotency_key: Key identifying this logical create. Generated
                (uuid4) when None. Pass the same key again to retry a create
                yourself without risking a second session.
            conn_options: Retries and timeout for this call only (the client's
                own when None).

        Returns:
            The decoded session object.
        """
        checked = checked_transport(transport)
        if idempotency_key is None:
            idempotency_key = str(uuid.uuid4())
        else:
            check_idempotency_key(idempotency_key)
        body = encode_body(options.body(checked))
        with self._requester.redactor.request_secret(checked.get("worker_token")):
            return await self._requester.request(
                "POST",
                "/v1/sessions",
                body=body,
                idempotency_key=idempotency_key,
                conn_options=conn_options,
            )

    async def end_session(self, session_id: str) -> dict[str, Any]:
        """End a hosted session now (`POST /v1/sessions/{id}/end`).

        The API makes this idempotent, so it is retried like a read.

        Args:
            session_id: Protoface session id returned by `start_session()`.

        Returns:
            The decoded session object.
        """
        check_id(session_id, "session_id")
        return await self._requester.request("POST", f"/v1/sessions/{session_id}/end")

    async def get_session(
        self, session_id: str, *, conn_options: APIConnectOptions | None = None
    ) -> SessionResource:
        """Fetch one session (`GET /v1/sessions/{id}`).

        Args:
            session_id: Protoface session id.
            conn_options: Retries and timeout for this call only (the client's
                otherwise); a watcher that must decide fast passes a short one.

        Returns:
            The decoded session object.

        Raises:
            ProtofaceAPIError: With `code` `not_found` for an unknown id.
        """
        check_id(session_id, "session_id")
        payload = await self._requester.request(
            "GET", f"/v1/sessions/{session_id}", conn_options=conn_options
        )
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
        """
        params = session_query(
            status=status,
            avatar_id=avatar_id,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
        )
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
        """
        params = avatar_query(scope=scope, q=q, limit=limit)
        async for item in self._paginate("/v1/avatars", params):
            yield cast(AvatarResource, item)

    async def get_avatar(self, avatar_id: str) -> AvatarResource:
        """Fetch one avatar (`GET /v1/avatars/{id}`).

        Args:
            avatar_id: Protoface avatar id.

        Returns:
            The decoded avatar object.
        """
        check_id(avatar_id, "avatar_id")
        payload = await self._requester.request("GET", f"/v1/avatars/{avatar_id}")
        return cast(AvatarResource, payload)

    async def get_status(self) -> PlatformStatus:
        """Fetch the platform status (`GET /v1/status`).

        Returns:
            `{status, components, updated_at}`; `status` is `operational`,
            `degraded` or `outage`.
        """
        payload = await self._requester.request("GET", "/v1/status")
        return cast(PlatformStatus, payload)

    # -- internals ---------------------------------------------------------

    async def _paginate(
        self, path: str, params: list[tuple[str, str]]
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page_params = list(params)
            if cursor is not None:
                page_params.append(("starting_after", cursor))
            page = await self._requester.request("GET", path, params=page_params)
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


def _given(value: NotGivenOr[Any]) -> Any:
    """`value`, or None when it was not given."""
    return value if utils.is_given(value) else None


def _client_settings(
    api_key: NotGivenOr[str | None],
    api_url: NotGivenOr[str | None],
    max_retry_after: object,
    conn_options: object,
    session: object,
) -> tuple[str, str]:
    """The checked API key and URL (arguments, else the environment)."""
    key = resolve_setting(api_key, "PROTOFACE_API_KEY")
    if not key:
        raise ProtofaceException(
            "api_key must be set by passing it to ProtofaceAPI or "
            "setting the PROTOFACE_API_KEY environment variable"
        )
    check_secret(key, "api_key")

    url = resolve_setting(api_url, "PROTOFACE_API_URL") or DEFAULT_API_URL
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

    return key, url

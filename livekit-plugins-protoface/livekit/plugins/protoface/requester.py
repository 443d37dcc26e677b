"""The one request loop: HTTP session ownership, headers, timeouts, size cap, retries.

`Requester.request` sends one logical request and returns the decoded JSON
object, or raises: `ProtofaceAPIError` for an answer it cannot use,
`APIConnectionError` when retries run out. Which failures are retried and how
long to wait come from `retry.py`; what is redacted from `redact.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from livekit.agents import APIConnectionError, APIConnectOptions, APITimeoutError, utils

from .errors import ProtofaceAPIError, ProtofaceException, ProtofaceValueError
from .log import logger
from .redact import NOT_JSON, Redactor
from .retry import RETRY_AFTER_STATUSES, parse_retry_after, retry_delay, should_retry
from .version import __version__

__all__ = ["MAX_RESPONSE_BYTES", "Requester", "encode_body"]

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest response body the client reads; a larger one fails the call."""

_USER_AGENT = f"livekit-plugins-protoface/{__version__}"
_MESSAGE_CHARS = 300  # the envelope's human message quoted in errors


class Requester:
    """Sends requests to one Protoface API with one key; owns its HTTP session if it made it."""

    def __init__(
        self,
        *,
        api_url: str,
        api_key: str,
        conn_options: APIConnectOptions,
        max_retry_after: float,
        session: aiohttp.ClientSession | None,
        redactor: Redactor,
    ) -> None:
        self._api_url = api_url
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
        }
        self._conn_options = conn_options
        self._max_retry_after = max_retry_after
        self._session = session
        self._owned_session: aiohttp.ClientSession | None = None
        # The loop the owned session is bound to: a script may call asyncio.run twice.
        self._owned_loop: asyncio.AbstractEventLoop | None = None
        self.redactor = redactor

    def __repr__(self) -> str:
        return f"Requester(api_url={self._api_url!r})"

    @property
    def owned_session(self) -> aiohttp.ClientSession | None:
        """The HTTP session this object created and will close, if any."""
        return self._owned_session

    async def aclose(self) -> None:
        """Close the HTTP session this object created, if any (a later request makes another)."""
        owned, loop = self._owned_session, self._owned_loop
        self._owned_session = self._owned_loop = None
        await _close_owned(owned, loop)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Sequence[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        conn_options: APIConnectOptions | None = None,
    ) -> dict[str, Any]:
        """Send one logical request, retrying per `conn_options`.

        Args:
            method: HTTP method.
            path: Path under the API URL, e.g. `/v1/sessions`.
            body: JSON bytes (see `encode_body`), the same for every attempt.
            params: Query parameters.
            idempotency_key: Sent as `Idempotency-Key` on every attempt.
            conn_options: Overrides the client's retries and timeout for this call.

        Returns:
            The decoded JSON object of the 2xx answer, secrets redacted.
        """
        headers = self._headers_for(idempotency_key, json_body=body is not None)
        options = self._conn_options if conn_options is None else conn_options
        attempts = options.max_retry + 1
        per_attempt = options.timeout
        url = f"{self._api_url}{path}"
        last_error: Exception | None = None
        for attempt in range(attempts):
            outcome = await self._attempt(method, url, path, body, params, headers, per_attempt)
            if isinstance(outcome, dict):
                return outcome
            last_error = outcome
            delay = self._wait_before_retry(outcome, attempt, options)
            if attempt + 1 >= attempts:
                break
            logger.warning(
                "Protoface API %s %s failed (%s); retrying in %.2fs (retry %d of %d)",
                method,
                path,
                _describe(outcome),
                delay,
                attempt + 1,
                attempts - 1,
                extra={"attempt": attempt + 1, "method": method, "path": path},
            )
            await asyncio.sleep(delay)
        raise APIConnectionError(
            f"Protoface API {method} {path} failed after {attempts} attempt(s)"
        ) from last_error

    def _headers_for(self, idempotency_key: str | None, *, json_body: bool) -> dict[str, str]:
        headers = dict(self._headers)
        if idempotency_key is not None:
            # The same key on every retry: the server answers a replay with the
            # session it already created instead of starting a second one.
            headers["Idempotency-Key"] = idempotency_key
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _wait_before_retry(
        self, outcome: Exception, attempt: int, options: APIConnectOptions
    ) -> float:
        """Seconds before the next attempt; raises when `outcome` must not be retried."""
        if not isinstance(outcome, ProtofaceAPIError):
            return retry_delay(attempt, None, status=None, conn_options=options)
        if not outcome.retryable:
            raise outcome
        status, retry_after = outcome.status_code, outcome.retry_after
        if (
            status in RETRY_AFTER_STATUSES
            and retry_after is not None
            and retry_after > self._max_retry_after
        ):
            # Said even on the last attempt: how long the server wants is the
            # actionable part, more than "retries ran out".
            raise outcome.retry_after_too_long(self._max_retry_after) from outcome
        return retry_delay(attempt, retry_after, status=status, conn_options=options)

    async def _attempt(
        self,
        method: str,
        url: str,
        path: str,
        body: bytes | None,
        params: Sequence[tuple[str, str]] | None,
        headers: Mapping[str, str],
        per_attempt: float,
    ) -> dict[str, Any] | Exception:
        """One attempt: the decoded object, or the error (not raised) it ended with."""
        try:
            session = await self._http_session()
            # No redirects: the API never sends one, and following it would hand
            # the bearer key (or a POST) to wherever it points.
            async with session.request(
                method,
                url,
                data=body,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=per_attempt or None),
                allow_redirects=False,
            ) as response:
                raw = await _read_body(response)
                if 200 <= response.status < 300:
                    return self._decode_success(method, path, response, raw)
                return self._error_from_response(method, path, response, raw)
        except asyncio.TimeoutError as exc:
            error: Exception = APITimeoutError(
                f"Protoface API {method} {path} timed out after {per_attempt:g}s"
            )
            error.__cause__ = exc
            return error
        except aiohttp.ClientError as exc:
            self.redactor.scrub(exc)
            error = APIConnectionError(f"Protoface API {method} {path}: network error")
            error.__cause__ = exc
            return error

    def _decode_success(
        self, method: str, path: str, response: aiohttp.ClientResponse, raw: bytes | None
    ) -> dict[str, Any]:
        payload = self.redactor.parse(raw)
        if isinstance(payload, dict):
            return payload
        # Not retryable: a 2xx means the server acted (a create may have started
        # a session); retrying would only repeat that.
        request_id = self.redactor.field(response.headers.get("X-Request-Id"))
        shape = (
            _describe_body(response, raw)
            if payload is NOT_JSON
            else f"JSON that is not an object ({type(payload).__name__})"
        )
        raise ProtofaceAPIError(
            f"Protoface API {method} {path} answered {response.status} with {shape}; "
            f"expected a JSON object" + _request_id_suffix(request_id),
            status_code=response.status,
            request_id=request_id,
            body=self.redactor.error_body(raw, payload),
            retryable=False,
        )

    def _error_from_response(
        self, method: str, path: str, response: aiohttp.ClientResponse, raw: bytes | None
    ) -> ProtofaceAPIError:
        status = response.status
        field = self.redactor.field
        header_request_id = field(response.headers.get("X-Request-Id"))
        payload = self.redactor.parse(raw)
        envelope = payload.get("error") if isinstance(payload, dict) else None
        code = err_type = param = None
        if isinstance(envelope, dict):
            code, err_type, param = (field(envelope.get(k)) for k in ("code", "type", "param"))
            request_id = field(envelope.get("request_id")) or header_request_id
            api_message = field(envelope.get("message"), _MESSAGE_CHARS) or "no message"
            details = [f"request_id={request_id or 'unknown'}"] + ([f"param={param}"] * bool(param))
            message = (
                f"Protoface API {method} {path} failed: {status} {code or 'unknown_error'}: "
                f"{api_message} ({', '.join(details)})"
            )
        else:
            request_id = header_request_id
            if 300 <= status < 400:
                location = field(response.headers.get("Location")) or "nowhere"
                shape = (
                    f"a redirect to {location}; the Protoface API does not redirect, so "
                    f"check api_url ({self._api_url})"
                )
            elif payload is NOT_JSON:
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
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            body=self.redactor.error_body(raw, payload),
            retryable=should_retry(status),
        )

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


def encode_body(body: Mapping[str, Any] | None) -> bytes | None:
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


def _describe(error: Exception) -> str:
    if isinstance(error, ProtofaceAPIError):
        return f"{error.status_code} {error.code or 'no error code'}"
    cause = error.__cause__
    return type(cause).__name__ if cause is not None else type(error).__name__

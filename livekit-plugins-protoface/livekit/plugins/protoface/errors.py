"""Exceptions raised by the Protoface plugin.

`ProtofaceException` is the published base for configuration and protocol
errors. API failures are `livekit.agents.APIStatusError` subclasses so the
`except APIStatusError` clauses agents already have keep working.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import APIStatusError

__all__ = [
    "AvatarSessionFailedError",
    "ProtofaceAPIError",
    "ProtofaceException",
    "ProtofaceRetryAfterTooLongError",
    "ProtofaceValueError",
]


class ProtofaceException(Exception):
    """Raised for Protoface configuration or protocol errors."""


class ProtofaceValueError(ProtofaceException, ValueError):
    """An argument was refused before anything was sent to the network.

    It is both a `ProtofaceException` and a `ValueError`, so either `except`
    clause catches it.

    Attributes:
        param: Name of the refused parameter (a dot path such as
            `transport.url` for nested values), when there is one.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class AvatarSessionFailedError(ProtofaceException):
    """The hosted Protoface session ended before its avatar joined the room.

    Raised by `AvatarSession.wait_for_join()` instead of a silent join timeout.

    Attributes:
        session_id: The Protoface session id.
        status: The session status seen (`failed`, `ended` or `canceled`).
        failure_code: The session's `failure.code` when it failed (for example
            `livekit_auth_failed`), else `None`.
    """

    def __init__(
        self,
        message: str,
        *,
        session_id: str,
        status: str,
        failure_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.status = status
        self.failure_code = failure_code


class ProtofaceAPIError(APIStatusError):
    """The Protoface API answered with an error (or with a body it could not use).

    Switch on `code` (stable, lower_snake_case), never on the message.

    Attributes:
        status_code: HTTP status of the answer.
        code: The envelope's error code, or `None` when the body had no envelope
            (an HTML page from a gateway, an empty body).
        type: The envelope's error type (`invalid_request`, `rate_limit`, ...).
        param: The offending request field as a dot path, when the API named one.
        request_id: The API request id (from the envelope, else the
            `X-Request-Id` header); quote it when contacting Protoface support.
        retry_after: Seconds the server asked to wait (`Retry-After`), if any.
        body: The decoded body (or a text excerpt), with secrets redacted.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: object | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            request_id=request_id,
            body=body,
            retryable=retryable,
        )
        self.code = code
        self.type = type
        self.param = param
        self.retry_after = retry_after

    def retry_after_too_long(self, cap: float) -> ProtofaceRetryAfterTooLongError:
        """This error, as the refusal to wait its `Retry-After` beyond `cap` seconds."""
        asked = self.retry_after or 0.0
        shown = f"{asked:.0f}s" if asked >= 10 else f"{asked:.1f}s"
        return ProtofaceRetryAfterTooLongError(
            f"{self.message}; the server asked to retry after {shown}, longer than "
            f"max_retry_after={cap:g}s, so the call fails now instead of waiting "
            f"(raise max_retry_after on ProtofaceAPI to wait longer)",
            status_code=self.status_code,
            max_retry_after=cap,
            code=self.code,
            type=self.type,
            param=self.param,
            request_id=self.request_id,
            retry_after=self.retry_after,
            body=self.body,
        )


class ProtofaceRetryAfterTooLongError(ProtofaceAPIError):
    """The server asked to wait longer (`Retry-After`) than the client's cap allows.

    Raised at once instead of sleeping. Raise `max_retry_after` on
    `ProtofaceAPI` to wait longer, or retry later yourself.

    Takes the arguments of `ProtofaceAPIError` (all but `retryable`: it never
    is), and the cap.

    Attributes:
        max_retry_after: The cap, in seconds, that the request exceeded.
    """

    def __init__(self, message: str, *, max_retry_after: float, **fields: Any) -> None:
        super().__init__(message, **fields, retryable=False)
        self.max_retry_after = max_retry_after

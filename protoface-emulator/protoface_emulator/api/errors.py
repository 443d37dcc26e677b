"""The API error model: one exception type, the envelope, and the stable codes.

Every non-2xx answer of the emulator is built here, so the envelope has one shape:
`{"error": {"type", "code", "message", "param", "request_id"}}`. The store raises
domain failures through `not_found`, `forbidden`, `conflict`, `limited` and
`unavailable` (unknown avatar, stock avatar, idempotency conflict, concurrency
limit, shutdown), so it carries no status numbers; the parsers (`decoding`,
`requests`, `queries`, `checks`) raise `invalid` and the transport-level errors;
`app.py` turns every `ApiError` into a response.
"""

from __future__ import annotations

from typing import Literal, TypedDict

ErrorType = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "conflict",
    "unprocessable",
    "rate_limit",
    "quota_exceeded",
    "internal",
    "service_unavailable",
]

# Stable `code` values. Clients switch on these, so they never change meaning.
# Request shape
CODE_INVALID_JSON = "invalid_json"
CODE_INVALID_BODY = "invalid_body"  # JSON, but not an object
CODE_UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
CODE_REQUEST_TOO_LARGE = "request_too_large"
CODE_UNKNOWN_FIELD = "unknown_field"
CODE_DUPLICATE_FIELD = "duplicate_field"
CODE_MISSING_FIELD = "missing_field"
CODE_INVALID_TYPE = "invalid_type"
CODE_INVALID_VALUE = "invalid_value"
CODE_OUT_OF_RANGE = "out_of_range"
CODE_METADATA_TOO_LARGE = "metadata_too_large"
CODE_METADATA_RESERVED_KEY = "metadata_reserved_key"
CODE_TRANSPORT_UNSUPPORTED = "transport.unsupported"  # spelled as the API contract does
CODE_UNKNOWN_PARAMETER = "unknown_parameter"
CODE_INVALID_CURSOR = "invalid_cursor"
CODE_INVALID_IMAGE = "invalid_image"
CODE_INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
CODE_MALFORMED_HTTP = "malformed_http_request"  # not parseable as HTTP at all
CODE_EXPECTATION_FAILED = "expectation_failed"  # an `Expect` other than 100-continue
# Auth and routing
CODE_MISSING_API_KEY = "missing_api_key"
CODE_INVALID_API_KEY = "invalid_api_key"
CODE_ROUTE_NOT_FOUND = "route_not_found"
CODE_METHOD_NOT_ALLOWED = "method_not_allowed"
# Resources and state
CODE_AVATAR_NOT_FOUND = "avatar_not_found"
CODE_AVATAR_NOT_READY = "avatar_not_ready"
CODE_STOCK_AVATAR_IMMUTABLE = "stock_avatar_immutable"
CODE_SESSION_NOT_FOUND = "session_not_found"
CODE_IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
CODE_CONCURRENCY_LIMIT = "concurrency_limit_exceeded"
# Server side
CODE_INTERNAL = "internal_error"
CODE_SHUTTING_DOWN = "shutting_down"
CODE_SERVICE_UNAVAILABLE = "service_unavailable"
CODE_TOO_MANY_REQUESTS = "too_many_requests"

_TYPE_BY_STATUS: dict[int, ErrorType] = {
    400: "invalid_request",
    401: "authentication",
    402: "quota_exceeded",
    403: "permission",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "invalid_request",
    415: "invalid_request",
    417: "invalid_request",
    422: "unprocessable",
    429: "rate_limit",
    503: "service_unavailable",
}


def error_type_for_status(status: int) -> ErrorType:
    """The envelope `type` that goes with an HTTP status."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "internal" if status >= 500 else "invalid_request"


class ErrorBody(TypedDict):
    """The inside of the error envelope."""

    type: ErrorType
    code: str
    message: str
    param: str | None
    request_id: str


class ErrorEnvelope(TypedDict):
    """`{"error": {...}}`, the wire format of every non-2xx answer."""

    error: ErrorBody


class ApiError(Exception):
    """A failure the API reports to the client as an error envelope.

    Args:
        status: HTTP status of the answer.
        code: stable lower_snake_case subcode (one of the `CODE_*` constants).
        message: what was wrong, with the value and the fix; for people only.
        param: the offending field as a dot path (`transport.url`), if any.
        retry_after: seconds for a `Retry-After` header (429 and 503).
        headers: further headers for the answer (e.g. `Allow` on a 405).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type: ErrorType = error_type_for_status(status)
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def envelope(self, request_id: str) -> ErrorEnvelope:
        """The JSON body for this error."""
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": _encodable(self.message),
                "param": None if self.param is None else _encodable(self.param),
                "request_id": request_id,
            }
        }

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, param={self.param!r})"


def shown(value: str, limit: int = 80) -> str:
    """`value` quoted for a message, cut at `limit` characters (ids in paths can be long)."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _encodable(text: str) -> str:
    # Messages and params may quote the request (a field name, a query value); an
    # undecodable byte there arrives as a lone surrogate, which UTF-8 cannot carry.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def invalid(code: str, message: str, param: str | None = None) -> ApiError:
    """A 400 `invalid_request` error."""
    return ApiError(400, code, message, param=param)


# Domain failures, named for what happened; the status each maps to lives here, so
# the store (which knows no HTTP) raises these without a status number.


def not_found(code: str, message: str, param: str | None = None) -> ApiError:
    """A resource that does not exist (404 `not_found`)."""
    return ApiError(404, code, message, param=param)


def forbidden(code: str, message: str, param: str | None = None) -> ApiError:
    """An action the caller may not take on this resource (403 `permission`)."""
    return ApiError(403, code, message, param=param)


def conflict(code: str, message: str, param: str | None = None) -> ApiError:
    """A request at odds with the resource's state (409 `conflict`)."""
    return ApiError(409, code, message, param=param)


def limited(code: str, message: str, retry_after: float) -> ApiError:
    """A plan limit reached; retry after `retry_after` seconds (429 `rate_limit`)."""
    return ApiError(429, code, message, retry_after=retry_after)


def unavailable(code: str, message: str, retry_after: float) -> ApiError:
    """The service cannot take this now (503 `service_unavailable`)."""
    return ApiError(503, code, message, retry_after=retry_after)

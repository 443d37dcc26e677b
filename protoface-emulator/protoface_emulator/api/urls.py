"""The route table: every method and path the API serves, and which `Api` method answers.

One table, read by `app.py` to dispatch and to tell a 404 from a 405 (with its
`Allow`). Paths are matched as sent, each segment percent-decoded on its own (an
encoded `/` stays inside its segment); a `{name}` segment takes any non-empty
segment and hands it to the handler as the keyword argument `name`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True)
class Endpoint:
    """One route: `method` on `path`, answered by the `Api` method named `handler`."""

    method: str
    path: str
    handler: str

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, e.g. `("v1", "sessions", "{session_id}")`."""
        return tuple(self.path.split("/")[1:])


# Path -> method -> the `Api` method that answers it.
_TABLE: dict[str, dict[str, str]] = {
    "/v1/status": {"GET": "status"},
    "/v1/billing/plans": {"GET": "plans"},
    "/v1/usage": {"GET": "usage"},
    "/v1/avatars": {"GET": "list_avatars", "POST": "create_avatar"},
    "/v1/avatars/{avatar_id}": {"GET": "get_avatar", "DELETE": "delete_avatar"},
    "/v1/sessions": {"GET": "list_sessions", "POST": "create_session"},
    "/v1/sessions/{session_id}": {"GET": "get_session"},
    "/v1/sessions/{session_id}/end": {"POST": "end_session"},
    "/v1/pipecat/sessions": {"POST": "create_pipecat_session"},
}

ROUTES: tuple[Endpoint, ...] = tuple(
    Endpoint(method, path, handler)
    for path, handlers in _TABLE.items()
    for method, handler in handlers.items()
)


def _match(endpoint: Endpoint, segments: tuple[str, ...]) -> dict[str, str] | None:
    pattern = endpoint.segments
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def _methods(endpoint: Endpoint) -> tuple[str, ...]:
    # HEAD is GET without a body; aiohttp leaves the body out of the answer.
    return ("GET", "HEAD") if endpoint.method == "GET" else (endpoint.method,)


@dataclass(frozen=True)
class Resolved:
    """What a request's method and path resolved to.

    `endpoint` and `params` when a route matched; otherwise `allowed` lists the
    methods the path takes (empty: no such path).
    """

    endpoint: Endpoint | None
    params: dict[str, str]
    allowed: tuple[str, ...] = ()


def resolve(method: str, raw_path: str) -> Resolved:
    """Find the route for `method` on `raw_path` (percent-encoded, no query)."""
    # A path that is not absolute (`OPTIONS *`) has no segments to match: a 404.
    segments = tuple(unquote(segment) for segment in raw_path.split("/")[1:])
    allowed: set[str] = set()
    for endpoint in ROUTES:
        params = _match(endpoint, segments)
        if params is None:
            continue
        if method in _methods(endpoint):
            return Resolved(endpoint, params)
        allowed.update(_methods(endpoint))
    return Resolved(None, {}, tuple(sorted(allowed)))

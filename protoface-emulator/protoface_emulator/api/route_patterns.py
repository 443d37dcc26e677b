"""Route patterns, `METHOD PATH`, as faults and the request log match requests.

A request is matched on its path as sent, each segment percent-decoded on its
own, so an encoded `/` (`%2F`) stays inside its segment as the API's routing
keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Route", "path_segments"]


@dataclass(frozen=True)
class Route:
    """A route pattern, `METHOD PATH`, as faults and the request log match them.

    `METHOD` may be `*`; a `{name}` or `*` segment matches any one segment; a `PATH`
    (or the whole route) of `*` matches every path. Requests are matched on their
    path as sent, each segment percent-decoded on its own, so an encoded `/`
    (`%2F`) stays inside its segment as it does for the API's routing.
    """

    method: str
    path: tuple[str, ...] | None  # None matches every path

    @classmethod
    def parse(cls, route: str) -> Route:
        """Read `METHOD PATH`.

        Raises:
            ValueError: if it is not `METHOD /path`, `METHOD *` or `*`.
        """
        parts = route.strip().split()
        if parts == ["*"]:
            return cls("*", None)
        if len(parts) != 2:
            raise ValueError(f"a route is 'METHOD /path' (or '*'); got {route!r}")
        method, path = parts[0].upper(), parts[1]
        if path == "*":
            return cls(method, None)
        if not path.startswith("/"):
            raise ValueError(f"a route's path starts with '/'; got {route!r}")
        return cls(method, tuple(path.strip("/").split("/")))

    def matches(self, method: str, raw_path: str) -> bool:
        """Whether a request (`raw_path`: percent-encoded, no query) is on this route."""
        return self.matches_segments(method.upper(), path_segments(raw_path))

    def matches_segments(self, method: str, segments: tuple[str, ...]) -> bool:
        """`matches` for an upper-case method and an already decoded path."""
        if self.method != "*" and self.method != method:
            return False
        if self.path is None:
            return True
        if len(self.path) != len(segments):
            return False
        return all(
            want == "*" or (want.startswith("{") and want.endswith("}")) or want == got
            for want, got in zip(self.path, segments, strict=True)
        )


def path_segments(raw_path: str) -> tuple[str, ...]:
    """The segments of a percent-encoded path, each decoded on its own."""
    return tuple(unquote(segment) for segment in raw_path.strip("/").split("/"))

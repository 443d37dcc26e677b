"""The request log (`emu.requests`): every request the API receives, for tests to read.

Each entry keeps the request's method, path, headers and body, the fault that
answered it if any, and the answer's status; tests read the log or wait on it.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from protoface_emulator.api.route_patterns import Route

if TYPE_CHECKING:
    from protoface_emulator.api.faults import Fault

__all__ = ["NO_REQUEST", "RecordedRequest", "RequestLog"]


@dataclass(eq=False)
class RecordedRequest:
    """One request as the API received it, and what it was answered.

    Attributes:
        method: the request method.
        path: the path as sent (percent-encoded), without the query.
        query: the query parameters, decoded.
        headers: the request headers (case-insensitive).
        request_id: the id the emulator gave it (in `X-Request-Id` of real answers).
        arrived_at: `time.monotonic()` when it arrived.
        body: the body bytes as the API read them (decompressed); None when it was
            answered without reading the body (a 401, say). Multipart uploads are
            not kept (None).
        status: the status the client was sent; None while in flight and for a
            dropped connection.
        fault: the fault that answered or delayed it, if any.
        answered_at: `time.monotonic()` once answered (or dropped).
        route: the API route it is on, e.g. `/v1/sessions/{session_id}`; None if
            the path has no route (or the method does not fit it).
    """

    method: str
    path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    request_id: str
    arrived_at: float
    body: bytes | None = None
    status: int | None = None
    fault: Fault | None = None
    answered_at: float | None = None
    route: str | None = None

    def json(self) -> object:
        """The body decoded as JSON; None if there is none or it is not JSON."""
        if not self.body:
            return None
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            return None

    def on(self, route: str) -> bool:
        """Whether this request is on `route` (the `Route` syntax)."""
        return Route.parse(route).matches(self.method, self.path)


NO_REQUEST = RecordedRequest(
    "", "", MultiDictProxy(MultiDict()), CIMultiDictProxy(CIMultiDict()), "", 0.0
)
"""An empty request: what a reply's fixed body is rendered against."""


class RequestLog:
    """Every request the API received, oldest first, for tests to read and wait on.

    Kept in memory up to `max_entries` (the oldest are dropped beyond it).

        [create] = emu.requests.matching("POST /v1/sessions")
        create.headers["Idempotency-Key"], create.json()
        await emu.requests.wait_for("GET /v1/sessions/{id}", count=3)

    Args:
        max_entries: how many requests to keep.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1; got {max_entries}")
        self._entries: deque[RecordedRequest] = deque(maxlen=max_entries)
        self._changed = asyncio.Event()

    def record(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | MultiDictProxy[str],
        headers: Mapping[str, str] | CIMultiDictProxy[str],
        request_id: str,
    ) -> RecordedRequest:
        """Log a request as it arrives; the API fills in its body and answer."""
        entry = RecordedRequest(
            method=method,
            path=path,
            query=MultiDictProxy(MultiDict(query)),
            headers=CIMultiDictProxy(CIMultiDict(headers)),
            request_id=request_id,
            arrived_at=time.monotonic(),
        )
        self._entries.append(entry)
        self._notify()
        return entry

    def answered(self, entry: RecordedRequest, status: int | None) -> None:
        """Note what `entry` was answered (None: the connection was dropped)."""
        entry.status = status
        entry.answered_at = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def all(self) -> list[RecordedRequest]:
        """Every logged request, oldest first."""
        return list(self._entries)

    def matching(self, route: str) -> list[RecordedRequest]:
        """The logged requests on `route` (e.g. `"POST /v1/sessions"`), oldest first."""
        pattern = Route.parse(route)
        return [r for r in self._entries if pattern.matches(r.method, r.path)]

    def clear(self) -> None:
        """Forget every logged request."""
        self._entries.clear()

    async def wait_for(
        self, route: str, count: int = 1, *, answered: bool = False, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        """Wait until `count` requests on `route` arrived (or, with `answered`, were answered).

        Returns:
            The matching requests (at least `count`), oldest first.

        Raises:
            TimeoutError: if they did not within `timeout` seconds; the message says
                how many did.
        """
        pattern = Route.parse(route)

        def ready() -> list[RecordedRequest] | None:
            found = [r for r in self._entries if pattern.matches(r.method, r.path)]
            if answered:
                found = [r for r in found if r.answered_at is not None]
            return found if len(found) >= count else None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := ready()) is None:
            left = deadline - loop.time()
            if left <= 0:
                seen = len(self.matching(route))
                raise TimeoutError(
                    f"{count} request(s) {route!r} expected within {timeout:g} s; {seen} arrived"
                )
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                continue
        return found

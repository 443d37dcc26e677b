"""Opt-in fault injection: the failures a client of the hosted API must survive.

Off unless asked for. A fault matches requests by route and does one of:

- `error`: answer with an error envelope (default 503) and, if given, `Retry-After`.
- `html`: answer with a gateway's HTML page (default 502, nginx style): what a
  load balancer in front of the API sends when the API is down.
- `late`: answer correctly, but only after `delay` seconds. The request is
  handled first, so a create really creates the session: a client that times out
  and retries without its idempotency key makes a second one.
- `drop`: close the connection without any answer. By default the request is
  handled first (the session exists, the client cannot know); `handled=False`
  drops it before it reaches the API.
- `reply`: answer exactly what is scripted: any `status` (default 200), a `body`
  (bytes or text) or `json`, and `headers`, nothing added (no request id): what a
  test needs to play a server that misbehaves in one precise way.

`handled` (whether the API processes the request before the fault answers) and
`delay` (seconds to wait before answering) and `headers` (added to the answer)
apply to every kind; the defaults are `handled=False` for `error`/`html`/`reply`,
`True` for `late`/`drop`. Several faults on one route fire in the order they were
added, so a test scripts a sequence of answers by adding one fault per answer.

A fault fires on the next `count` matching requests, then retires. With
`probability` below 1 it fires on each matching request with that chance, drawn
from a seeded RNG so a benchmark run is reproducible; `count` then defaults to
unlimited.

In process::

    emu.faults.add("POST /v1/sessions", "error", status=503, count=2, retry_after=1)
    emu.faults.add("POST /v1/sessions", "late", delay=5)
    emu.faults.add("POST /v1/sessions", "late", probability=0.2, delay=3)
    emu.faults.add("GET /v1/sessions/{id}", "html", status=502)
    emu.faults.add("* *", "drop", handled=False)
    emu.faults.add("GET /v1/status", "reply", status=400, json={"detail": "nope"})
    emu.faults.add("POST /v1/sessions", "reply", status=307, headers={"Location": "/x"})

`RequestLog` (`emu.requests`) records every request the API receives, with its
headers, body and the answer's status, for tests to read or wait on.

From the command line, `--faults` takes `ROUTE=KIND[,key=value...]`::

    protoface-emulator --faults "POST /v1/sessions=error,status=503,count=2,retry_after=1"
    protoface-emulator --faults "POST /v1/sessions=late,delay=3,probability=0.2" --faults-seed 7
    protoface-emulator --faults "GET /v1/status=reply,status=200,body=ok,header=X-Seen:1"

Values are percent-decoded (`%2C` for a comma); `header=Name:Value` repeats.

A route is `METHOD PATH`; `METHOD` may be `*`, a `{name}` or `*` path segment
matches any one segment, and a `PATH` of `*` matches every path.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Literal, TypeAlias
from urllib.parse import unquote

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

FaultKind = Literal["error", "html", "late", "drop", "reply"]
# A runtime alias (not a string), so documentation tools can read `BodySource | None`.
BodySource: TypeAlias = bytes | str | Callable[["RecordedRequest"], bytes | str]
"""A `reply`'s body: fixed, or made from the request it answers."""
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "html", "late", "drop", "reply")

_DEFAULT_STATUS: dict[FaultKind, int] = {
    "error": 503,
    "html": 502,
    "late": 200,
    "drop": 0,
    "reply": 200,
}
_DEFAULT_HANDLED: dict[FaultKind, bool] = {
    "error": False,
    "html": False,
    "late": True,
    "drop": True,
    "reply": False,
}
_SPEC_KEYS = frozenset(
    {"status", "count", "probability", "retry_after", "delay", "code", "handled", "body", "header"}
)


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
        return self.matches_segments(method.upper(), _segments(raw_path))

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


def _segments(raw_path: str) -> tuple[str, ...]:
    return tuple(unquote(segment) for segment in raw_path.strip("/").split("/"))


@dataclass
class Fault:
    """One armed fault. `remaining` counts down; None means unlimited."""

    method: str
    path: tuple[str, ...] | None  # None matches every path
    kind: FaultKind
    status: int
    remaining: int | None
    probability: float
    retry_after: float | None
    delay: float
    code: str | None
    handled: bool
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # `reply` only
    # A `reply` whose body depends on the request: the request as logged -> the body.
    render: Callable[[RecordedRequest], bytes] | None = field(default=None, repr=False)
    fired: int = 0

    def reply_body(self, request: RecordedRequest) -> bytes:
        """The body a `reply` sends to `request`."""
        return self.body if self.render is None else self.render(request)

    def matches(self, method: str, segments: tuple[str, ...]) -> bool:
        """Whether this fault applies to a request (decoded path segments)."""
        return Route(self.method, self.path).matches_segments(method, segments)


class Faults:
    """The armed faults of one emulator (none by default).

    Args:
        seed: seed of the RNG behind `probability`; None seeds it from the OS.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)

    def add(
        self,
        route: str,
        kind: FaultKind = "error",
        *,
        status: int | None = None,
        count: int | None = None,
        probability: float = 1.0,
        retry_after: float | None = None,
        delay: float = 0.0,
        code: str | None = None,
        handled: bool | None = None,
        headers: Mapping[str, str] | None = None,
        body: BodySource | None = None,
        json: object = None,
    ) -> Fault:
        """Arm a fault.

        Args:
            route: `METHOD PATH`, e.g. `"POST /v1/sessions"`, `"GET /v1/sessions/{id}"`,
                `"* *"` (see `Route`).
            kind: `error`, `html`, `late`, `drop` or `reply` (see the module docstring).
            status: HTTP status for `error` (default 503), `html` (default 502) and
                `reply` (default 200).
            count: how many matching requests it fires on; default 1, or unlimited
                when `probability` < 1.
            probability: chance of firing on each matching request.
            retry_after: seconds for a `Retry-After` header (`error`, `html`).
            delay: seconds to wait before answering (`late` needs it > 0).
            code: the envelope's `code` for `error` (default from the status).
            handled: whether the API processes the request before the fault
                answers (default False for `error`/`html`/`reply`, True for
                `late`/`drop`).
            headers: headers added to the answer (for `reply`, its only headers
                besides a Content-Type derived from `json`/`body`).
            body: a `reply`'s body, sent as is (text as UTF-8); Content-Type
                `text/plain` unless `headers` give one. Or a function of the
                `RecordedRequest` returning it (a server that echoes the request).
            json: a `reply`'s body as JSON (not with `body`); Content-Type
                `application/json` unless `headers` give one. Or a function of the
                `RecordedRequest` returning the JSON value.

        Returns:
            The fault; pass it to `remove` to disarm it early.

        Raises:
            ValueError: on an unknown kind, a malformed route or out-of-range numbers.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
        parsed = Route.parse(route)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within 0..1; got {probability}")
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1; got {count}")
        if delay < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError("delay and retry_after must not be negative")
        resolved_status = _DEFAULT_STATUS[kind] if status is None else status
        if kind in ("error", "html") and not 400 <= resolved_status <= 599:
            raise ValueError(f"an {kind} fault's status must be 4xx or 5xx; got {resolved_status}")
        if kind == "reply" and not 200 <= resolved_status <= 599:
            raise ValueError(f"a reply's status must be within 200..599; got {resolved_status}")
        answer_headers = dict(headers or {})
        payload, render = _reply_body(kind, body, json, answer_headers)
        if count is None and probability >= 1.0:
            count = 1
        fault = Fault(
            method=parsed.method,
            path=parsed.path,
            kind=kind,
            status=resolved_status,
            remaining=count,
            probability=probability,
            retry_after=retry_after,
            delay=delay,
            code=code,
            handled=_DEFAULT_HANDLED[kind] if handled is None else handled,
            headers=answer_headers,
            body=payload,
            render=render,
        )
        self._faults.append(fault)
        return fault

    def reply(
        self,
        route: str,
        status: int = 200,
        *,
        json: object = None,
        body: BodySource | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        count: int | None = None,
        probability: float = 1.0,
        handled: bool = False,
    ) -> Fault:
        """Script the answer to the next `count` requests on `route`: `add(route, "reply", ...)`.

        With `handled=True` the API processes the request first (a create really
        creates its session) and the client gets the scripted answer instead of
        the real one.
        """
        return self.add(
            route,
            "reply",
            status=status,
            json=json,
            body=body,
            headers=headers,
            delay=delay,
            count=count,
            probability=probability,
            handled=handled,
        )

    def add_spec(self, spec: str) -> Fault:
        """Arm a fault from the `--faults` syntax `ROUTE=KIND[,key=value...]`.

        Keys: status, count, probability, retry_after, delay, code, handled, body,
        header (`Name:Value`, repeatable). Values are percent-decoded, so a comma
        in a body is `%2C`.

        Raises:
            ValueError: on a malformed spec.
        """
        route, sep, rest = spec.partition("=")
        if not sep or not rest:
            raise ValueError(f"a fault spec is 'ROUTE=KIND[,key=value...]'; got {spec!r}")
        kind, *options = (item.strip() for item in rest.split(","))
        values: dict[str, str] = {}
        headers: dict[str, str] = {}
        for option in options:
            name, eq, value = option.partition("=")
            name, value = name.strip(), unquote(value.strip())
            if not eq:
                raise ValueError(f"fault option {option!r} is not key=value (in {spec!r})")
            if name == "header":
                header, colon, header_value = value.partition(":")
                if not colon or not header.strip():
                    raise ValueError(f"header takes Name:Value; got {value!r} (in {spec!r})")
                headers[header.strip()] = header_value.strip()
            values[name] = value
        unknown = set(values) - _SPEC_KEYS
        if unknown:
            raise ValueError(
                f"unknown fault option(s) {', '.join(sorted(unknown))} in {spec!r}; "
                f"the options are {', '.join(sorted(_SPEC_KEYS))}"
            )
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")

        def number(name: str) -> float | None:
            if name not in values:
                return None
            try:
                return float(values[name])
            except ValueError:
                raise ValueError(
                    f"fault option {name} must be a number; got {values[name]!r} (in {spec!r})"
                ) from None

        handled: bool | None = None
        if "handled" in values:
            flag = values["handled"].lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"handled must be true or false; got {values['handled']!r}")
            handled = flag in ("true", "1", "yes")
        status = number("status")
        count = number("count")
        probability = number("probability")
        return self.add(
            route,
            kind,  # checked against FAULT_KINDS above
            status=None if status is None else int(status),
            count=None if count is None else int(count),
            probability=1.0 if probability is None else probability,
            retry_after=number("retry_after"),
            delay=number("delay") or 0.0,
            code=values.get("code"),
            handled=handled,
            headers=headers,
            body=values.get("body"),
        )

    def remove(self, fault: Fault) -> None:
        """Disarm one fault (no error if it already retired)."""
        if fault in self._faults:
            self._faults.remove(fault)

    def clear(self) -> None:
        """Disarm every fault."""
        self._faults.clear()

    def seed(self, seed: int) -> None:
        """Reseed the RNG behind `probability`."""
        self._rng.seed(seed)

    @property
    def armed(self) -> list[Fault]:
        """The faults still armed, in the order they were added."""
        return list(self._faults)

    def draw(self, method: str, path: str) -> Fault | None:
        """The fault to apply to this request, if any; counts it as fired.

        The first matching fault that fires decides. A probabilistic one that does
        not fire passes the request on to the next matching fault, so a counted
        fault still fails exactly its next `count` requests.

        Args:
            method: the request's method.
            path: the request's path as sent (percent-encoded, no query); each
                segment is decoded on its own (see `Route`).
        """
        if not self._faults:
            return None
        segments = _segments(path)
        for fault in self._faults:
            if not fault.matches(method.upper(), segments):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.fired += 1
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault
        return None


def _reply_body(
    kind: FaultKind, body: BodySource | None, json: object, headers: dict[str, str]
) -> tuple[bytes, Callable[[RecordedRequest], bytes] | None]:
    """A `reply`'s body: fixed bytes, or a renderer; sets Content-Type unless given."""
    if body is None and json is None:
        return b"", None
    if kind != "reply":
        raise ValueError(f"body and json script a 'reply' fault, not {kind!r}; use kind='reply'")
    if body is not None and json is not None:
        raise ValueError("a reply takes body or json, not both")
    if json is not None:
        default_type = "application/json"
        make: Callable[[RecordedRequest], object] = json if callable(json) else lambda _: json

        def render(request: RecordedRequest) -> bytes:
            return jsonlib.dumps(make(request)).encode("utf-8")

    else:
        default_type = "text/plain" if isinstance(body, bytes) else "text/plain; charset=utf-8"
        text = body

        def render(request: RecordedRequest) -> bytes:
            value = text(request) if callable(text) else text
            return value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")

    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = default_type
    if callable(json) or callable(body):
        return b"", render
    return render(_NO_REQUEST), None


def gateway_html(status: int) -> str:
    """The HTML page an nginx gateway answers with for `status`."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


# --- the request log --------------------------------------------------------------


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


_NO_REQUEST = RecordedRequest(
    "", "", MultiDictProxy(MultiDict()), CIMultiDictProxy(CIMultiDict()), "", 0.0
)


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

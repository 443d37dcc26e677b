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

import json as jsonlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from protoface_emulator.api.fault_options import (
    FAULT_KINDS,
    BodySource,
    FaultKind,
    FaultOptions,
    parse_fault_spec,
)
from protoface_emulator.api.request_log import NO_REQUEST, RecordedRequest
from protoface_emulator.api.route_patterns import Route, path_segments

__all__ = ["FAULT_KINDS", "BodySource", "Fault", "FaultKind", "Faults", "gateway_html", "new_fault"]

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
        options = FaultOptions(
            status, count, probability, retry_after, delay, code, handled, headers, body, json
        )
        return self._arm(route, kind, options)

    def _arm(self, route: str, kind: FaultKind, options: FaultOptions) -> Fault:
        fault = new_fault(route, kind, options)
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
        return self._arm(*parse_fault_spec(spec))

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
        segments = path_segments(path)
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


def new_fault(route: str, kind: FaultKind, options: FaultOptions) -> Fault:
    """A fault, its options checked and its defaults filled in (see `Faults.add`).

    Raises:
        ValueError: on an unknown kind, a malformed route or out-of-range numbers.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
    parsed = Route.parse(route)
    probability, count = options.probability, options.count
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be within 0..1; got {probability}")
    if count is not None and count < 1:
        raise ValueError(f"count must be at least 1; got {count}")
    if options.delay < 0 or (options.retry_after is not None and options.retry_after < 0):
        raise ValueError("delay and retry_after must not be negative")
    resolved_status = _DEFAULT_STATUS[kind] if options.status is None else options.status
    if kind in ("error", "html") and not 400 <= resolved_status <= 599:
        raise ValueError(f"an {kind} fault's status must be 4xx or 5xx; got {resolved_status}")
    if kind == "reply" and not 200 <= resolved_status <= 599:
        raise ValueError(f"a reply's status must be within 200..599; got {resolved_status}")
    answer_headers = dict(options.headers or {})
    payload, render = _reply_body(kind, options.body, options.json, answer_headers)
    return Fault(
        method=parsed.method,
        path=parsed.path,
        kind=kind,
        status=resolved_status,
        # A certain fault without a count fires once.
        remaining=1 if count is None and probability >= 1.0 else count,
        probability=probability,
        retry_after=options.retry_after,
        delay=options.delay,
        code=options.code,
        handled=_DEFAULT_HANDLED[kind] if options.handled is None else options.handled,
        headers=answer_headers,
        body=payload,
        render=render,
    )


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
    return render(NO_REQUEST), None


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

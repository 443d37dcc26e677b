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

`handled` (whether the API processes the request before the fault answers) and
`delay` (seconds to wait before answering) apply to every kind; the defaults are
`handled=False` for `error`/`html`, `True` for `late`/`drop`.

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

From the command line, `--faults` takes `ROUTE=KIND[,key=value...]`::

    protoface-emulator --faults "POST /v1/sessions=error,status=503,count=2,retry_after=1"
    protoface-emulator --faults "POST /v1/sessions=late,delay=3,probability=0.2" --faults-seed 7

A route is `METHOD PATH`; `METHOD` may be `*`, a `{name}` or `*` path segment
matches any one segment, and a `PATH` of `*` matches every path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal
from urllib.parse import unquote

FaultKind = Literal["error", "html", "late", "drop"]
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "html", "late", "drop")

_DEFAULT_STATUS: dict[FaultKind, int] = {"error": 503, "html": 502, "late": 200, "drop": 0}
_DEFAULT_HANDLED: dict[FaultKind, bool] = {
    "error": False,
    "html": False,
    "late": True,
    "drop": True,
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
    fired: int = 0

    def matches(self, method: str, segments: tuple[str, ...]) -> bool:
        """Whether this fault applies to a request."""
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


def _split_route(route: str) -> tuple[str, tuple[str, ...] | None]:
    parts = route.strip().split()
    if parts == ["*"]:
        return "*", None
    if len(parts) != 2:
        raise ValueError(f"a fault route is 'METHOD /path' (or '*'); got {route!r}")
    method, path = parts[0].upper(), parts[1]
    if path == "*":
        return method, None
    if not path.startswith("/"):
        raise ValueError(f"a fault route's path starts with '/'; got {route!r}")
    return method, tuple(path.strip("/").split("/"))


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
    ) -> Fault:
        """Arm a fault.

        Args:
            route: `METHOD PATH`, e.g. `"POST /v1/sessions"`, `"GET /v1/sessions/{id}"`,
                `"* *"`.
            kind: `error`, `html`, `late` or `drop` (see the module docstring).
            status: HTTP status for `error` (default 503) and `html` (default 502).
            count: how many matching requests it fires on; default 1, or unlimited
                when `probability` < 1.
            probability: chance of firing on each matching request.
            retry_after: seconds for a `Retry-After` header (`error`, `html`).
            delay: seconds to wait before answering (`late` needs it > 0).
            code: the envelope's `code` for `error` (default from the status).
            handled: whether the API processes the request before the fault
                answers (default False for `error`/`html`, True for `late`/`drop`).

        Returns:
            The fault; pass it to `remove` to disarm it early.

        Raises:
            ValueError: on an unknown kind, a malformed route or out-of-range numbers.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
        method, path = _split_route(route)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within 0..1; got {probability}")
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1; got {count}")
        if delay < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError("delay and retry_after must not be negative")
        resolved_status = _DEFAULT_STATUS[kind] if status is None else status
        if kind in ("error", "html") and not 400 <= resolved_status <= 599:
            raise ValueError(f"an {kind} fault's status must be 4xx or 5xx; got {resolved_status}")
        if count is None and probability >= 1.0:
            count = 1
        fault = Fault(
            method=method,
            path=path,
            kind=kind,
            status=resolved_status,
            remaining=count,
            probability=probability,
            retry_after=retry_after,
            delay=delay,
            code=code,
            handled=_DEFAULT_HANDLED[kind] if handled is None else handled,
        )
        self._faults.append(fault)
        return fault

    def add_spec(self, spec: str) -> Fault:
        """Arm a fault from the `--faults` syntax `ROUTE=KIND[,key=value...]`.

        Keys: status, count, probability, retry_after, delay, code, handled.

        Raises:
            ValueError: on a malformed spec.
        """
        route, sep, rest = spec.partition("=")
        if not sep or not rest:
            raise ValueError(f"a fault spec is 'ROUTE=KIND[,key=value...]'; got {spec!r}")
        kind, *options = (item.strip() for item in rest.split(","))
        values: dict[str, str] = {}
        for option in options:
            name, eq, value = option.partition("=")
            if not eq:
                raise ValueError(f"fault option {option!r} is not key=value (in {spec!r})")
            values[name.strip()] = value.strip()
        unknown = set(values) - {
            "status",
            "count",
            "probability",
            "retry_after",
            "delay",
            "code",
            "handled",
        }
        if unknown:
            raise ValueError(f"unknown fault option(s) {', '.join(sorted(unknown))} in {spec!r}")
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
            kind,
            status=None if status is None else int(status),
            count=None if count is None else int(count),
            probability=1.0 if probability is None else probability,
            retry_after=number("retry_after"),
            delay=number("delay") or 0.0,
            code=values.get("code"),
            handled=handled,
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
                segment is decoded on its own, so an encoded `/` (`%2F`) stays
                inside its segment as it does for the API's routing.
        """
        if not self._faults:
            return None
        segments = tuple(unquote(segment) for segment in path.strip("/").split("/"))
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

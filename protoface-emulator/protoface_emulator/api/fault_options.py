"""The options of one fault, and reading them from the command line's `--faults`.

`Faults.add` takes the options as keyword arguments; `--faults` takes
`ROUTE=KIND[,key=value...]`, with values percent-decoded (`%2C` for a comma)
and `header=Name:Value` repeatable. Both end in one `FaultOptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias
from urllib.parse import unquote

from protoface_emulator.api.request_log import RecordedRequest

__all__ = ["FAULT_KINDS", "BodySource", "FaultKind", "FaultOptions", "parse_fault_spec"]

FaultKind = Literal["error", "html", "late", "drop", "reply"]
# A runtime alias (not a string), so documentation tools can read `BodySource | None`.
BodySource: TypeAlias = bytes | str | Callable[[RecordedRequest], bytes | str]
"""A `reply`'s body: fixed, or made from the request it answers."""
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "html", "late", "drop", "reply")

_SPEC_KEYS = frozenset(
    {"status", "count", "probability", "retry_after", "delay", "code", "handled", "body", "header"}
)


@dataclass(frozen=True)
class FaultOptions:
    """What `Faults.add` takes besides the route and kind (see its arguments)."""

    status: int | None = None
    count: int | None = None
    probability: float = 1.0
    retry_after: float | None = None
    delay: float = 0.0
    code: str | None = None
    handled: bool | None = None
    headers: Mapping[str, str] | None = None
    body: BodySource | None = None
    json: object = None


def parse_fault_spec(spec: str) -> tuple[str, FaultKind, FaultOptions]:
    """Read `ROUTE=KIND[,key=value...]` into the route, the kind and the options.

    Raises:
        ValueError: on a malformed spec, naming the part at fault.
    """
    route, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise ValueError(f"a fault spec is 'ROUTE=KIND[,key=value...]'; got {spec!r}")
    kind, *options = (item.strip() for item in rest.split(","))
    values, headers = _read_options(spec, options)
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
    return (
        route,
        kind,  # checked against FAULT_KINDS above
        FaultOptions(
            status=None if status is None else int(status),
            count=None if count is None else int(count),
            probability=1.0 if probability is None else probability,
            retry_after=number("retry_after"),
            delay=number("delay") or 0.0,
            code=values.get("code"),
            handled=handled,
            headers=headers,
            body=values.get("body"),
        ),
    )


def _read_options(spec: str, options: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The `key=value` options by key, and the `header=Name:Value` ones by name."""
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
    return values, headers

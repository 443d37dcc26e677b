"""Checks that refuse bad input before anything goes over the network.

Each check raises `ProtofaceValueError` naming the parameter, the value (never a
secret's) and the fix. Generic shapes only (ids, URLs, secrets, ints); the
contract's own rules (qualities, ranges, metadata) are in `types.py`. Internal
to the package.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import re
import string
import urllib.parse
from collections.abc import Iterable
from typing import cast

from livekit.agents import NotGivenOr, utils

from .errors import ProtofaceValueError

API_URL_SCHEMES = ("http", "https")
LIVEKIT_URL_SCHEMES = ("ws", "wss", "http", "https")
FIELD_CHARS = 200  # server-provided strings (code, request id, ...) quoted in errors

SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_.~")


def check_nonblank(value: object, param: str) -> None:
    """A non-empty, non-blank string."""
    if not isinstance(value, str):
        raise ProtofaceValueError(f"{param} must be a non-empty string, got {value!r}", param=param)
    if not value.strip():
        raise ProtofaceValueError(f"{param} must not be empty or blank, got {value!r}", param=param)


def check_secret(value: object, param: str) -> None:
    """A credential: a string without whitespace or control characters (never echoed)."""
    # Never echo the value: it is a credential.
    if not isinstance(value, str):
        raise ProtofaceValueError(
            f"{param} must be a string, got {type(value).__name__}", param=param
        )
    if not value.strip():
        raise ProtofaceValueError(f"{param} must not be empty or blank", param=param)
    if SPACE_OR_CONTROL.search(value):
        raise ProtofaceValueError(
            f"{param} contains whitespace or control characters (a stray newline from "
            f"copy-paste?); pass the value without them",
            param=param,
        )


def check_id(value: object, param: str) -> None:
    """An id that goes into a URL path: one plain segment, so no path injection."""
    check_nonblank(value, param)
    assert isinstance(value, str)
    if value in (".", "..") or not ID_CHARS.issuperset(value):
        raise ProtofaceValueError(
            f"{param} {clip(value, FIELD_CHARS)!r} is not a Protoface id: ids use only "
            f"letters, digits, '-', '_', '.' and '~' (e.g. 'sess_01J9Z...'); pass the id "
            f"exactly as the API returned it",
            param=param,
        )


def check_url(
    value: object, param: str, schemes: Iterable[str], *, env_name: str | None = None
) -> None:
    """A URL with one of `schemes` and a host; no credentials, query or fragment."""
    allowed = tuple(schemes)
    if isinstance(value, str):
        # Every create checks the same few URLs: remember the ones that passed.
        check_url_once(value, param, allowed, env_name)
    else:
        check_url_uncached(value, param, allowed, env_name)


@functools.lru_cache(maxsize=256)
def check_url_once(value: str, param: str, allowed: tuple[str, ...], env_name: str | None) -> bool:
    """`check_url_uncached`, remembering the URLs that passed."""
    # A refused URL raises, and lru_cache keeps only values that returned.
    check_url_uncached(value, param, allowed, env_name)
    return True


def check_url_uncached(
    value: object, param: str, allowed: tuple[str, ...], env_name: str | None
) -> None:
    """The checks behind `check_url`."""
    example = f"{allowed[-1]}://host"
    # Say where the value came from, so the fix is made in the right place.
    label = f"{param} (or the {env_name} environment variable)" if env_name else param

    def refuse(problem: str) -> ProtofaceValueError:
        return ProtofaceValueError(f"{label} {problem}", param=param)

    if not isinstance(value, str) or not value.strip():
        expected = " or ".join(f"{s}://" for s in allowed)
        raise refuse(f"must be a URL starting with {expected} and a host, got {value!r}")
    # A URL with user:password@ is never echoed: it carries credentials.
    shown = "(value withheld: it contains '@')" if "@" in value else repr(value)
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise refuse(
            f"{shown} contains whitespace or control characters (a stray space or newline "
            f"from copy-paste?); remove them"
        )
    try:
        parsed = urllib.parse.urlsplit(value)
        _ = parsed.port  # raises ValueError on a malformed port
    except ValueError:
        raise refuse(f"{shown} is not a valid URL; expected e.g. {example}") from None
    if parsed.username is not None or parsed.password is not None:
        raise refuse("must not contain credentials (user:password@); remove them")
    if parsed.scheme.lower() not in allowed:
        raise refuse(f"{shown} must start with {' or '.join(f'{s}://' for s in allowed)}")
    if not parsed.hostname:
        raise refuse(f"{shown} has no host; expected e.g. {example}")
    if parsed.query or parsed.fragment:
        raise refuse(f"{shown} must not contain a query or fragment")


def check_int_range(value: object, param: str, low: int, high: int) -> None:
    """An int (not a bool) in `low..high`."""
    # bool is an int subclass; True would silently mean 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtofaceValueError(
            f"{param} must be an int in {low}..{high}, got {value!r}", param=param
        )
    if not low <= value <= high:
        raise ProtofaceValueError(f"{param} must be in {low}..{high}, got {value!r}", param=param)


def check_positive_int(value: object, param: str) -> None:
    """An int (not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProtofaceValueError(f"{param} must be an int >= 1, got {value!r}", param=param)


def instant(value: object, param: str) -> str:
    """A timezone-aware datetime or a non-blank string, as the API query takes it."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ProtofaceValueError(
                f"{param} must be timezone-aware, got naive {value!r}; "
                f"use e.g. datetime.now(timezone.utc)",
                param=param,
            )
        return value.isoformat()
    check_nonblank(value, param)
    return cast(str, value)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resolve_setting(value: NotGivenOr[str | None], env_name: str) -> str | None:
    """The argument when given (and not None), else the environment variable."""
    if utils.is_given(value) and value is not None:
        return value
    return os.environ.get(env_name) or None


def is_loopback_host(host: str) -> bool:
    """Whether `host` names this machine (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback

"""The Protoface API contract as the plugin sees it: constants, options, resources.

One copy of each rule: the ranges, enums and limits below are what
`SessionOptions` checks and what `tests/test_contract.py` compares with the
emulator and with `protoface-sdk`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypedDict

from .errors import ProtofaceValueError
from .validation import check_int_range, check_nonblank

__all__ = [
    "DEFAULT_STOCK_AVATAR_ID",
    "END_REASON_METADATA_KEY",
    "IDEMPOTENCY_KEY_MAX_CHARS",
    "IDLE_TIMEOUT_RANGE",
    "MAX_DURATION_RANGE",
    "METADATA_MAX_BYTES",
    "QUALITIES",
    "RESERVED_METADATA_PREFIX",
    "SESSION_STATUSES",
    "TERMINAL_SESSION_STATUSES",
    "AvatarResource",
    "MetadataValue",
    "PlatformStatus",
    "SessionFailure",
    "SessionOptions",
    "SessionResource",
    "SessionUsage",
    "StatusComponent",
]

DEFAULT_STOCK_AVATAR_ID = "av_stock_001"
QUALITIES = ("mock", "lite", "standard", "pro")
MAX_DURATION_RANGE = (1, 3600)
IDLE_TIMEOUT_RANGE = (1, 600)
DEFAULT_IDLE_TIMEOUT_SECONDS = 30
"""What the API applies when a create does not say (the hosted idle timeout)."""
METADATA_MAX_BYTES = 8 * 1024
RESERVED_METADATA_PREFIX = "_avatar."
END_REASON_METADATA_KEY = "_avatar.end_reason"
"""Session metadata key where Protoface records why a session ended."""
IDEMPOTENCY_KEY_MAX_CHARS = 255
SESSION_STATUSES = (
    "created",
    "queued",
    "starting",
    "running",
    "ending",
    "ended",
    "failed",
    "canceled",
)
TERMINAL_SESSION_STATUSES = frozenset({"ended", "failed", "canceled"})

MetadataValue = str | int | float | bool | None
"""A value allowed in session `metadata`."""


@dataclass(frozen=True)
class SessionOptions:
    """What a hosted session is created with, checked once when built.

    `AvatarSession` builds one from its arguments and creates every session of a
    conversation (the first, replacements, successors) with it;
    `ProtofaceAPI.create_session` takes it as is.

    Attributes:
        avatar_id: Protoface avatar id to render.
        max_duration_seconds: Hard ceiling, 1..3600 (the API clamps it to the
            plan); `None` for the plan limit.
        quality: `mock`, `lite`, `standard` or `pro`; `None` for the API default.
        idle_timeout_seconds: End after this long without received audio,
            1..600; `None` for the API default (30).
        metadata: Your own data (str keys; str, int, float, bool or None
            values; at most 8 KB as JSON; no `_avatar.` keys).

    Raises:
        ProtofaceValueError: If a value is refused; it names the field, the
            value and the fix.
    """

    avatar_id: str = DEFAULT_STOCK_AVATAR_ID
    max_duration_seconds: int | None = None
    quality: str | None = None
    idle_timeout_seconds: int | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        check_nonblank(self.avatar_id, "avatar_id")
        if self.max_duration_seconds is not None:
            check_int_range(self.max_duration_seconds, "max_duration_seconds", *MAX_DURATION_RANGE)
        if self.idle_timeout_seconds is not None:
            check_int_range(self.idle_timeout_seconds, "idle_timeout_seconds", *IDLE_TIMEOUT_RANGE)
        if self.quality is not None and self.quality not in QUALITIES:
            raise ProtofaceValueError(
                f"quality must be one of {', '.join(QUALITIES)}, got {self.quality!r}",
                param="quality",
            )
        # A private read-only copy: a caller mutating their dict later changes nothing.
        object.__setattr__(
            self, "metadata", MappingProxyType(checked_metadata(self.metadata, "metadata"))
        )

    def body(self, transport: Mapping[str, Any]) -> dict[str, Any]:
        """The `POST /v1/sessions` body for these options and `transport`."""
        body: dict[str, Any] = {"avatar_id": self.avatar_id, "transport": dict(transport)}
        if self.max_duration_seconds is not None:
            body["max_duration_seconds"] = self.max_duration_seconds
        if self.quality is not None:
            body["quality"] = self.quality
        if self.idle_timeout_seconds is not None:
            body["idle_timeout_seconds"] = self.idle_timeout_seconds
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return body


def check_idempotency_key(value: object) -> None:
    """At most 255 printable ASCII characters."""
    check_nonblank(value, "idempotency_key")
    assert isinstance(value, str)
    if len(value) > IDEMPOTENCY_KEY_MAX_CHARS or not value.isascii() or not value.isprintable():
        raise ProtofaceValueError(
            f"idempotency_key must be at most {IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII "
            f"characters, got {value!r}",
            param="idempotency_key",
        )


def checked_metadata(value: object, param: str) -> dict[str, MetadataValue]:
    """Session metadata as the API takes it: a copy, or a refusal naming the key."""
    if not isinstance(value, Mapping):
        raise ProtofaceValueError(
            f"{param} must be a dict of str to str/int/float/bool/None, got {type(value).__name__}",
            param=param,
        )
    checked: dict[str, MetadataValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ProtofaceValueError(f"{param} keys must be strings, got {key!r}", param=param)
        if key.startswith(RESERVED_METADATA_PREFIX):
            raise ProtofaceValueError(
                f"{param} key {key!r} starts with {RESERVED_METADATA_PREFIX!r}, which "
                f"Protoface reserves; rename the key",
                param=f"{param}.{key}",
            )
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise ProtofaceValueError(
                f"{param}[{key!r}] must be a str, int, float, bool or None, "
                f"got {type(item).__name__}",
                param=f"{param}.{key}",
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise ProtofaceValueError(
                f"{param}[{key!r}] must be a finite number, got {item!r}",
                param=f"{param}.{key}",
            )
        checked[key] = item
    # Counted as the API counts it: compact JSON, UTF-8, non-ASCII not escaped.
    size = len(json.dumps(checked, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > METADATA_MAX_BYTES:
        raise ProtofaceValueError(
            f"{param} is {size} bytes as JSON; the limit is {METADATA_MAX_BYTES} bytes",
            param=param,
        )
    return checked


class SessionFailure(TypedDict):
    """`failure` of a failed session."""

    code: str
    message: str


class SessionUsage(TypedDict):
    """`usage` of a session (eventually consistent)."""

    billable_seconds: int
    frames: int


class SessionResource(TypedDict, total=False):
    """A Protoface session as the API returns it (decoded JSON, not validated)."""

    object: Literal["session"]
    id: str
    avatar_id: str
    status: str
    created_at: str
    started_at: str | None
    first_frame_at: str | None
    ended_at: str | None
    failed_at: str | None
    failure: SessionFailure | None
    idle_timeout_seconds: int
    max_duration_seconds: int
    metadata: dict[str, MetadataValue]
    quality: str
    transport: dict[str, Any]
    usage: SessionUsage | None


class AvatarResource(TypedDict, total=False):
    """A Protoface avatar as the API returns it (decoded JSON, not validated)."""

    object: Literal["avatar"]
    id: str
    name: str
    status: str
    is_demo: bool
    runtime_type: str
    created_at: str
    default_voice: str | None
    default_custom_instructions: str | None
    failure_reason: str | None


class StatusComponent(TypedDict):
    """One component of the platform status."""

    name: str
    status: str


class PlatformStatus(TypedDict, total=False):
    """`GET /v1/status`: `operational`, `degraded` or `outage`, per component."""

    status: str
    components: list[StatusComponent]
    updated_at: str


def session_str(session: Mapping[str, Any], name: str) -> str | None:
    """A non-empty string field of a decoded session, else None."""
    value = session.get(name)
    return value if isinstance(value, str) and value else None


def session_int(session: Mapping[str, Any], name: str) -> int | None:
    """A positive int field of a decoded session, else None."""
    value = session.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def failure_of(session: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """`(failure.code, failure.message)` of a decoded session, each None when absent."""
    failure = session.get("failure")
    if not isinstance(failure, dict):
        return None, None
    return session_str(failure, "code"), session_str(failure, "message")


def end_reason_of(session: Mapping[str, Any]) -> str | None:
    """Why Protoface ended the session (`metadata["_avatar.end_reason"]`), else None."""
    metadata = session.get("metadata")
    if not isinstance(metadata, dict):
        return None
    return session_str(metadata, END_REASON_METADATA_KEY)

"""The resources the API returns: the JSON shapes of sessions, avatars, status and usage."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Literal, TypedDict

from protoface_emulator.api.decoding import MetadataValue
from protoface_emulator.contract import (
    AvatarStatus,
    Quality,
    SessionStatus,
)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. `2025-01-31T12:00:00.000Z`."""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ceil_seconds(seconds: float) -> int:
    """Billable whole seconds: any started second counts."""
    return max(0, math.ceil(seconds - 1e-9))


TransportView = dict[str, str | bool | None]
"""`Session.transport`: `type`, then the fields of `lifecycle.LiveKitTransport` but the token."""


class FailureView(TypedDict):
    """`Session.failure`."""

    code: str
    message: str


class SessionUsageView(TypedDict):
    """`Session.usage`."""

    billable_seconds: int
    frames: int


class SessionView(TypedDict):
    """The session resource."""

    object: Literal["session"]
    id: str
    avatar_id: str
    status: SessionStatus
    created_at: str
    started_at: str | None
    first_frame_at: str | None
    ended_at: str | None
    failed_at: str | None
    failure: FailureView | None
    idle_timeout_seconds: int
    max_duration_seconds: int
    metadata: dict[str, MetadataValue]
    quality: Quality
    transport: TransportView
    usage: SessionUsageView


class SessionListView(TypedDict):
    """A cursor page of sessions."""

    object: Literal["list"]
    data: list[SessionView]
    has_more: bool
    next_cursor: str | None


class AvatarView(TypedDict):
    """The avatar resource."""

    object: Literal["avatar"]
    id: str
    name: str
    status: AvatarStatus
    is_demo: bool
    runtime_type: str
    created_at: str
    default_voice: str | None
    default_custom_instructions: str | None
    failure_reason: str | None


class AvatarListView(TypedDict):
    """A cursor page of avatars."""

    object: Literal["list"]
    data: list[AvatarView]
    has_more: bool
    next_cursor: str | None


class PlanView(TypedDict):
    """A billing plan."""

    key: str
    name: str
    max_concurrency: int
    session_time_limit_seconds: int
    included_credits: int
    monthly_price_cents: int
    custom_avatar_slots: int
    extra_avatar_slot_cents: int | None
    extra_credit_unit_micros: int | None


ComponentStatus = Literal["operational", "degraded", "outage"]


class StatusComponentView(TypedDict):
    """One component of `GET /v1/status`."""

    name: str
    status: ComponentStatus


class StatusView(TypedDict):
    """`GET /v1/status`."""

    status: ComponentStatus
    components: list[StatusComponentView]
    updated_at: str


class UsageSummaryView(TypedDict):
    """`GET /v1/usage`."""

    billable_seconds: int
    sessions: int
    period_start: str
    period_end: str
    by_quality: dict[Quality, int]

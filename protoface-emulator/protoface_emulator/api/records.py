"""What the store keeps: one avatar, one session, and how each reads over the API.

The store changes these records; everything else reads them (`view()` gives the
resource the API returns).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone

from protoface_emulator.api.decoding import MetadataValue
from protoface_emulator.api.views import (
    AvatarView,
    FailureView,
    SessionView,
    ceil_seconds,
    format_time,
)
from protoface_emulator.contract import (
    TERMINAL_SESSION_STATUSES,
    AvatarStatus,
    Quality,
    SessionStatus,
)
from protoface_emulator.lifecycle import LiveKitTransport, WorkerHandle

__all__ = ["AvatarRecord", "SessionRecord", "stock_avatars", "utc_now"]


def utc_now() -> datetime:
    """The time now, in milliseconds as the API shows them (so filters agree with reads)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# --- avatars --------------------------------------------------------------------


@dataclass
class AvatarRecord:
    """An avatar, stock or uploaded."""

    id: str
    name: str
    status: AvatarStatus
    is_demo: bool
    runtime_type: str
    created_at: datetime
    default_voice: str | None = None
    default_custom_instructions: str | None = None
    failure_reason: str | None = None
    ready_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    # The uploaded image file (None for stock avatars); its workers show it.
    image: bytes | None = field(default=None, repr=False)

    def view(self) -> AvatarView:
        """The avatar resource."""
        return {
            "object": "avatar",
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "is_demo": self.is_demo,
            "runtime_type": self.runtime_type,
            "created_at": format_time(self.created_at),
            "default_voice": self.default_voice,
            "default_custom_instructions": self.default_custom_instructions,
            "failure_reason": self.failure_reason,
        }


_STOCK_CREATED_AT = datetime(2025, 1, 1, tzinfo=timezone.utc)


def stock_avatars() -> list[AvatarRecord]:
    """The avatars every emulator offers, ready from the start."""

    def stock(number: int, name: str, runtime: str, voice: str | None) -> AvatarRecord:
        return AvatarRecord(
            id=f"av_stock_{number:03d}",
            name=name,
            status="ready",
            is_demo=True,
            runtime_type=runtime,
            created_at=_STOCK_CREATED_AT,
            default_voice=voice,
        )

    return [
        stock(1, "Ada", "avtr1", "alloy"),
        stock(2, "Bram", "avtr1", "echo"),
        stock(3, "Test Pattern", "mock", None),
    ]


# --- sessions -------------------------------------------------------------------


@dataclass(eq=False)
class SessionRecord:
    """One session and its lifecycle bookkeeping. Read it; change it via the store."""

    id: str
    avatar_id: str
    quality: Quality
    idle_timeout_seconds: int
    max_duration_seconds: int
    metadata: dict[str, MetadataValue]
    transport: LiveKitTransport
    created_at: datetime
    status: SessionStatus = "queued"
    started_at: datetime | None = None
    first_frame_at: datetime | None = None
    ended_at: datetime | None = None
    failed_at: datetime | None = None
    failure: FailureView | None = None
    frames: int = 0
    # Billable time runs from the first frame until the session stops running.
    running_until: datetime | None = None
    handle: WorkerHandle | None = field(default=None, repr=False)
    close_task: asyncio.Task[None] | None = field(default=None, repr=False)
    join_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    duration_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    idle_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    last_audio: float = 0.0  # loop time of the last `on_audio`

    @property
    def terminal(self) -> bool:
        """True once `ended`, `failed` or `canceled`."""
        return self.status in TERMINAL_SESSION_STATUSES

    def running_seconds(self, start: datetime | None = None, end: datetime | None = None) -> float:
        """Seconds spent running, optionally only those inside [start, end)."""
        if self.first_frame_at is None:
            return 0.0
        since = self.first_frame_at
        until = self.running_until or utc_now()
        if start is not None and start > since:
            since = start
        if end is not None and end < until:
            until = end
        return max(0.0, (until - since).total_seconds())

    def view(self) -> SessionView:
        """The session resource (the transport without its token)."""

        def time_or_none(value: datetime | None) -> str | None:
            return None if value is None else format_time(value)

        return {
            "object": "session",
            "id": self.id,
            "avatar_id": self.avatar_id,
            "status": self.status,
            "created_at": format_time(self.created_at),
            "started_at": time_or_none(self.started_at),
            "first_frame_at": time_or_none(self.first_frame_at),
            "ended_at": time_or_none(self.ended_at),
            "failed_at": time_or_none(self.failed_at),
            "failure": None if self.failure is None else self.failure.copy(),
            "idle_timeout_seconds": self.idle_timeout_seconds,
            "max_duration_seconds": self.max_duration_seconds,
            "metadata": dict(self.metadata),
            "quality": self.quality,
            "transport": self.transport.view(),
            "usage": {
                "billable_seconds": ceil_seconds(self.running_seconds()),
                "frames": self.frames,
            },
        }

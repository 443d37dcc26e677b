"""Reading many sessions at once: a page of the listing, and the usage summary.

The only calls that walk every session; the store hands them its sessions in
creation order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from protoface_emulator.api.errors import CODE_INVALID_CURSOR, invalid, shown
from protoface_emulator.api.queries import SessionFilter
from protoface_emulator.api.records import SessionRecord
from protoface_emulator.api.views import (
    SessionListView,
    UsageSummaryView,
    ceil_seconds,
    format_time,
)
from protoface_emulator.contract import QUALITIES, Quality

__all__ = ["session_page", "usage_summary"]


def session_page(
    sessions: dict[str, SessionRecord],
    *,
    limit: int,
    starting_after: str | None = None,
    filters: SessionFilter | None = None,
) -> SessionListView:
    """A page of `sessions` (by id, oldest first), newest first."""
    filters = filters or SessionFilter()
    if starting_after is not None and starting_after not in sessions:
        raise invalid(
            CODE_INVALID_CURSOR,
            f"starting_after {shown(starting_after)} is not a session id; pass the "
            "next_cursor of the previous page.",
            "starting_after",
        )
    page: list[SessionRecord] = []
    has_more = False
    skipping = starting_after is not None
    for record in reversed(sessions.values()):
        if skipping:
            skipping = record.id != starting_after
            continue
        if not _matches(record, filters):
            continue
        if len(page) == limit:
            has_more = True
            break
        page.append(record)
    return {
        "object": "list",
        "data": [r.view() for r in page],
        "has_more": has_more,
        "next_cursor": page[-1].id if has_more else None,
    }


def usage_summary(
    sessions: Iterable[SessionRecord], period_start: datetime, period_end: datetime
) -> UsageSummaryView:
    """Billable running seconds in [period_start, period_end), rounded up per session."""
    total = 0
    counted = 0
    by_quality: dict[Quality, int] = dict.fromkeys(QUALITIES, 0)
    for record in sessions:
        seconds = ceil_seconds(record.running_seconds(period_start, period_end))
        if seconds <= 0:
            continue
        counted += 1
        total += seconds
        by_quality[record.quality] += seconds
    return {
        "billable_seconds": total,
        "sessions": counted,
        "period_start": format_time(period_start),
        "period_end": format_time(period_end),
        "by_quality": by_quality,
    }


def _matches(record: SessionRecord, filters: SessionFilter) -> bool:
    if filters.statuses is not None and record.status not in filters.statuses:
        return False
    if filters.avatar_id is not None and record.avatar_id != filters.avatar_id:
        return False
    if filters.created_after is not None and record.created_at < filters.created_after:
        return False
    return not (filters.created_before is not None and record.created_at >= filters.created_before)

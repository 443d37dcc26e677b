"""The query strings: list filters, pages and usage periods, validated.

An unknown parameter is refused (`unknown_parameter`), as the hosted API does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from multidict import MultiMapping

from protoface_emulator.api.errors import (
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_MISSING_FIELD,
    CODE_OUT_OF_RANGE,
    CODE_UNKNOWN_PARAMETER,
    invalid,
    shown,
)
from protoface_emulator.contract import (
    AVATAR_SCOPES,
    DEFAULT_PAGE_LIMIT,
    PAGE_LIMIT_RANGE,
    SESSION_STATUSES,
    SessionStatus,
)


def reject_unknown_parameters(query: MultiMapping[str], allowed: Iterable[str]) -> None:
    """Raise `unknown_parameter` for the first query parameter not in `allowed`."""
    allowed_set = set(allowed)
    for key in query:
        if key not in allowed_set:
            known = ", ".join(sorted(allowed_set)) or "none"
            raise invalid(
                CODE_UNKNOWN_PARAMETER,
                f"Unknown query parameter {key!r}; accepted here: {known}.",
                key,
            )


def query_single(query: MultiMapping[str], name: str) -> str | None:
    """The one value of a non-repeatable query parameter, or None."""
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise invalid(CODE_INVALID_VALUE, f"Query parameter {name!r} may appear once.", name)
    return values[0]


def query_limit(query: MultiMapping[str]) -> int:
    """The `limit` of a list call (1..100, default 10)."""
    raw = query_single(query, "limit")
    if raw is None:
        return DEFAULT_PAGE_LIMIT
    low, high = PAGE_LIMIT_RANGE
    if not raw.isascii() or not raw.isdigit():
        raise invalid(
            CODE_INVALID_TYPE,
            f"limit must be an integer from {low} to {high}; got {shown(raw)}.",
            "limit",
        )
    # int() refuses strings over 4300 digits; anything past a few is out of range anyway.
    digits = raw.lstrip("0")
    if len(digits) > len(str(high)) or not low <= int(digits or "0") <= high:
        raise invalid(
            CODE_OUT_OF_RANGE,
            f"limit must be between {low} and {high}; got {shown(raw, 20)}.",
            "limit",
        )
    return int(digits)


def parse_timestamp(raw: str, name: str) -> datetime:
    """An ISO 8601 date or date-time, or Unix seconds; naive values are UTC."""
    text = raw.strip()
    try:
        if text.isascii() and text.isdigit():
            return datetime.fromtimestamp(int(text), tz=timezone.utc)
        # An unencoded `+00:00` in a query string arrives as ` 00:00`; read it as meant.
        text = re.sub(r"([T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\2", text)
        if text[-1:] in ("Z", "z"):
            # Python 3.10's fromisoformat does not take the Z suffix.
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        # In UTC now, so that nothing later (comparisons, the answer) can overflow:
        # 0001-01-01T00:00:00+14:00 has no UTC equivalent.
        value = value.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise invalid(
            CODE_INVALID_VALUE,
            f"{name} must be an ISO 8601 timestamp such as 2025-01-31T12:00:00Z; got {shown(raw)}.",
            name,
        ) from None
    return value


def query_timestamp(query: MultiMapping[str], name: str) -> datetime | None:
    """An optional timestamp query parameter."""
    raw = query_single(query, name)
    return None if raw is None else parse_timestamp(raw, name)


def query_statuses(query: MultiMapping[str]) -> frozenset[SessionStatus] | None:
    """`status`, repeatable (`?status=running&status=queued`) or comma separated."""
    values = query.getall("status", [])
    if not values:
        return None
    result: set[SessionStatus] = set()
    for value in values:
        for item in value.split(","):
            name = item.strip()
            if name not in SESSION_STATUSES:
                raise invalid(
                    CODE_INVALID_VALUE,
                    f"status must be one of {', '.join(SESSION_STATUSES)}; got {shown(name)}.",
                    "status",
                )
            result.add(name)
    return frozenset(result)


@dataclass(frozen=True)
class SessionFilter:
    """The filters of `GET /v1/sessions`; `created_after` inclusive, `created_before` not."""

    statuses: frozenset[SessionStatus] | None = None
    avatar_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class ListQuery:
    """A cursor page request: `limit` and `starting_after`."""

    limit: int = DEFAULT_PAGE_LIMIT
    starting_after: str | None = None


@dataclass(frozen=True)
class SessionListQuery(ListQuery):
    """`GET /v1/sessions`'s query."""

    filters: SessionFilter = field(default_factory=SessionFilter)


@dataclass(frozen=True)
class AvatarListQuery(ListQuery):
    """`GET /v1/avatars`'s query; `scope` None means all."""

    scope: str | None = None
    q: str | None = None


def parse_no_query(query: MultiMapping[str]) -> None:
    """A route that takes no query parameters."""
    reject_unknown_parameters(query, ())


def parse_session_list_query(query: MultiMapping[str]) -> SessionListQuery:
    """Validate `GET /v1/sessions`'s query."""
    reject_unknown_parameters(
        query, ("status", "avatar_id", "created_after", "created_before", "limit", "starting_after")
    )
    return SessionListQuery(
        limit=query_limit(query),
        starting_after=query_single(query, "starting_after"),
        filters=SessionFilter(
            statuses=query_statuses(query),
            avatar_id=query_single(query, "avatar_id"),
            created_after=query_timestamp(query, "created_after"),
            created_before=query_timestamp(query, "created_before"),
        ),
    )


def parse_avatar_list_query(query: MultiMapping[str]) -> AvatarListQuery:
    """Validate `GET /v1/avatars`'s query."""
    reject_unknown_parameters(query, ("limit", "starting_after", "scope", "q"))
    scope = query_single(query, "scope")
    if scope is not None and scope not in AVATAR_SCOPES:
        raise invalid(
            CODE_INVALID_VALUE,
            f"scope must be {', '.join(AVATAR_SCOPES[:-1])} or {AVATAR_SCOPES[-1]}; "
            f"got {shown(scope)}.",
            "scope",
        )
    return AvatarListQuery(
        limit=query_limit(query),
        starting_after=query_single(query, "starting_after"),
        scope=scope,
        q=query_single(query, "q"),
    )


def current_month(now: datetime) -> tuple[datetime, datetime]:
    """[first of `now`'s month, first of the next month), in `now`'s time zone."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def parse_usage_query(query: MultiMapping[str], now: datetime) -> tuple[datetime, datetime]:
    """`GET /v1/usage`'s window: `period=current_month` (default) or `period_start`[/`period_end`].

    Returns:
        [start, end); `period_end` defaults to `now`.
    """
    reject_unknown_parameters(query, ("period", "period_start", "period_end"))
    period = query_single(query, "period")
    start = query_timestamp(query, "period_start")
    end = query_timestamp(query, "period_end")
    if period is not None:
        if period != "current_month":
            raise invalid(
                CODE_INVALID_VALUE,
                f"period must be 'current_month'; got {shown(period)}. For another window "
                "pass period_start and period_end.",
                "period",
            )
        if start is not None or end is not None:
            raise invalid(
                CODE_INVALID_VALUE,
                "Pass either period or period_start/period_end, not both.",
                "period",
            )
    if start is None and end is None:
        return current_month(now)
    if start is None:
        raise invalid(CODE_MISSING_FIELD, "period_end needs a period_start.", "period_start")
    if end is None:
        if start >= now:
            raise invalid(
                CODE_INVALID_VALUE,
                "period_start is in the future; without period_end the window ends now.",
                "period_start",
            )
        end = now
    if start >= end:
        raise invalid(CODE_INVALID_VALUE, "period_start must be before period_end.", "period_end")
    return start, end

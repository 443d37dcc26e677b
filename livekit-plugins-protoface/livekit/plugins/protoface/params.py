"""Call arguments turned into request parameters, refusing bad ones before the network.

Query strings for the list endpoints and the checked LiveKit transport of a
create; each refusal is a `ProtofaceValueError` naming the parameter.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from livekit.agents import NOT_GIVEN, NotGivenOr, utils

from .errors import ProtofaceValueError
from .types import SESSION_STATUSES
from .validation import (
    LIVEKIT_URL_SCHEMES,
    check_nonblank,
    check_positive_int,
    check_secret,
    check_url,
    instant,
)

__all__ = ["avatar_query", "checked_transport", "session_query"]


def session_query(
    *,
    status: NotGivenOr[str | Sequence[str]] = NOT_GIVEN,
    avatar_id: NotGivenOr[str] = NOT_GIVEN,
    created_after: NotGivenOr[str | datetime.datetime] = NOT_GIVEN,
    created_before: NotGivenOr[str | datetime.datetime] = NOT_GIVEN,
    limit: NotGivenOr[int] = NOT_GIVEN,
) -> list[tuple[str, str]]:
    """The `GET /v1/sessions` query for `ProtofaceAPI.list_sessions`' filters."""
    params: list[tuple[str, str]] = []
    if utils.is_given(status):
        if isinstance(status, str):
            statuses = [status]
        elif isinstance(status, Iterable):
            statuses = list(status)
        else:
            raise ProtofaceValueError(
                f"status must be a session status or a list of them, got {status!r}",
                param="status",
            )
        if not statuses:
            raise ProtofaceValueError(
                "status must name at least one session status; omit it to list all",
                param="status",
            )
        for value in statuses:
            if value not in SESSION_STATUSES:
                raise ProtofaceValueError(
                    f"status {value!r} is not a session status; use one of "
                    f"{', '.join(SESSION_STATUSES)}",
                    param="status",
                )
            params.append(("status", value))
    if utils.is_given(avatar_id):
        check_nonblank(avatar_id, "avatar_id")
        params.append(("avatar_id", avatar_id))
    if utils.is_given(created_after):
        params.append(("created_after", instant(created_after, "created_after")))
    if utils.is_given(created_before):
        params.append(("created_before", instant(created_before, "created_before")))
    if utils.is_given(limit):
        check_positive_int(limit, "limit")
        params.append(("limit", str(limit)))
    return params


def avatar_query(
    *,
    scope: NotGivenOr[str] = NOT_GIVEN,
    q: NotGivenOr[str] = NOT_GIVEN,
    limit: NotGivenOr[int] = NOT_GIVEN,
) -> list[tuple[str, str]]:
    """The `GET /v1/avatars` query for `ProtofaceAPI.list_avatars`' filters."""
    params: list[tuple[str, str]] = []
    if utils.is_given(scope):
        check_nonblank(scope, "scope")
        params.append(("scope", scope))
    if utils.is_given(q):
        if not isinstance(q, str):
            raise ProtofaceValueError(f"q must be a string, got {q!r}", param="q")
        params.append(("q", q))
    if utils.is_given(limit):
        check_positive_int(limit, "limit")
        params.append(("limit", str(limit)))
    return params


def checked_transport(transport: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a create's `transport`, checked as far as the client can."""
    if not isinstance(transport, Mapping):
        raise ProtofaceValueError(
            f"transport must be a dict such as {{'type': 'livekit', 'url': ..., "
            f"'room_name': ..., 'worker_token': ...}}, got {type(transport).__name__}",
            param="transport",
        )
    checked = dict(transport)
    if checked.get("type") != "livekit":
        raise ProtofaceValueError(
            f"transport.type must be 'livekit' (the only transport Protoface accepts), "
            f"got {checked.get('type')!r}",
            param="transport.type",
        )
    check_url(checked.get("url"), "transport.url", LIVEKIT_URL_SCHEMES)
    check_nonblank(checked.get("room_name"), "transport.room_name")
    check_secret(checked.get("worker_token"), "transport.worker_token")
    if checked.get("worker_identity") is not None:
        check_nonblank(checked["worker_identity"], "transport.worker_identity")
    # Values JSON cannot carry are refused when the body is encoded (`encode_body`).
    return checked

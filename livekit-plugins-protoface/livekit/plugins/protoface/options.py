"""`AvatarSession`'s options: their defaults, their bounds, and the checks at the edge.

Everything a caller can get wrong in a way the type checker does not catch
is refused here, before anything goes over the network, with an error that
names the option, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from livekit.agents import NotGivenOr, utils

from .errors import ProtofaceValueError
from .recovery import RecoveryPolicy
from .seconds import is_seconds
from .types import MetadataValue, SessionOptions
from .validation import check_nonblank

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_WAIT_FOR_AVATAR",
    "DEFAULT_WORKER_TOKEN_TTL",
    "MAX_WAIT_FOR_AVATAR",
    "MAX_WORKER_TOKEN_TTL",
    "changed_options",
    "check_flag",
    "check_options",
    "check_wait_for_avatar",
    "given",
    "identity_or_default",
]

DEFAULT_WORKER_TOKEN_TTL = datetime.timedelta(minutes=10)
"""Lifetime of the worker's LiveKit token: long enough to join, short if it leaks."""
MAX_WORKER_TOKEN_TTL = datetime.timedelta(hours=6)
DEFAULT_WAIT_FOR_AVATAR = 1.0
"""Seconds an utterance waits for an avatar that is not ready before the agent's track speaks it.

With the agent's own track published as the wait begins, the first words are
heard within about 2 s of the line's start, whatever the avatar's cold start."""
MAX_WAIT_FOR_AVATAR = 600.0
DEFAULT_POLL_INTERVAL = 15.0
"""Seconds between reads of a joined session: the room reports departures itself."""


def changed_options(
    current: SessionOptions,
    *,
    avatar_id: NotGivenOr[str],
    quality: NotGivenOr[str | None],
    max_duration_seconds: NotGivenOr[int | None],
    idle_timeout_seconds: NotGivenOr[int | None],
    metadata: NotGivenOr[Mapping[str, MetadataValue] | None],
) -> SessionOptions:
    """`current` with the options given to `switch()` changed (and checked)."""
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("avatar_id", avatar_id),
            ("quality", quality),
            ("max_duration_seconds", max_duration_seconds),
            ("idle_timeout_seconds", idle_timeout_seconds),
            ("metadata", metadata),
        )
        if utils.is_given(value)
    }
    if "metadata" in changes and changes["metadata"] is None:
        changes["metadata"] = {}
    return dataclasses.replace(current, **changes)  # validates


def given(value: NotGivenOr[Any]) -> Any:
    """`value`, or None when it was not given."""
    return value if utils.is_given(value) else None


def identity_or_default(
    value: NotGivenOr[str | None], param: str, default: str | None
) -> str | None:
    """A participant identity or name the user gave (checked), else `default`."""
    if not utils.is_given(value) or value is None:
        return default
    check_nonblank(value, param)
    return value


def check_flag(value: object, param: str) -> None:
    """Refuse anything but True or False (a truthy string, say)."""
    if not isinstance(value, bool):
        raise ProtofaceValueError(f"{param} must be True or False, got {value!r}", param=param)


def check_wait_for_avatar(value: object) -> float | None:
    """`wait_for_avatar` checked: seconds as a float, or None (always wait)."""
    if value is None:
        return None
    if not is_seconds(value) or not 0 <= value <= MAX_WAIT_FOR_AVATAR:
        raise ProtofaceValueError(
            f"wait_for_avatar must be a number of seconds from 0 to {MAX_WAIT_FOR_AVATAR:g}, "
            f"or None to always wait for the avatar; got {value!r}",
            param="wait_for_avatar",
        )
    return float(value)


def check_options(
    worker_token_ttl: object, poll_interval: object, audio_fallback: object, recovery: object
) -> None:
    """The options a caller gets wrong in ways the type checker does not catch."""
    if not isinstance(worker_token_ttl, datetime.timedelta) or not (
        datetime.timedelta(0) < worker_token_ttl <= MAX_WORKER_TOKEN_TTL
    ):
        raise ProtofaceValueError(
            f"worker_token_ttl must be a timedelta above 0 and at most 6 hours, got "
            f"{worker_token_ttl!r}; e.g. datetime.timedelta(minutes=10)",
            param="worker_token_ttl",
        )
    if not is_seconds(poll_interval) or poll_interval <= 0:
        raise ProtofaceValueError(
            f"poll_interval must be a number of seconds above 0, got {poll_interval!r}",
            param="poll_interval",
        )
    check_flag(audio_fallback, "audio_fallback")
    if not isinstance(recovery, (bool, RecoveryPolicy)):
        raise ProtofaceValueError(
            f"recovery must be True, False or a RecoveryPolicy, got {recovery!r}",
            param="recovery",
        )

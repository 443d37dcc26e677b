"""Bringing a replacement avatar: which losses are worth it, how often, and when to hand over.

`RecoveryPolicy` is the pure part (tested without a server); `replace()` runs
the attempts, given a way to launch one hosted session. `AvatarSession`
decides when to call it: after a recoverable loss, and before the session cap
runs out (the successor of a handover).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import ProtofaceAPIError, ProtofaceValueError
from .log import logger
from .retry import should_retry
from .seconds import is_seconds

__all__ = [
    "RECOVERABLE_REASONS",
    "LaunchFailed",
    "RecoveryPolicy",
    "is_recoverable",
    "replace",
]

RECOVERABLE_REASONS = frozenset(
    {
        "idle_timeout",
        "max_duration_reached",
        "worker_lost",
        "worker_crashed",
        "worker_join_timeout",
        "livekit_unreachable",
        "avatar_left_room",
        "avatar_unresponsive",
        "protoface_unreachable",
        "session_not_found",
        "emulator_shutdown",
    }
)
"""Losses that are nobody's decision: the service or the network let the avatar go.

Not here, so never retried: `end_requested` (someone ended the session),
`canceled`, `livekit_auth_failed` (the worker token was refused: retrying
repeats it), and any create the API refuses (a plan out of quota, a bad
avatar id).
"""

T = TypeVar("T")


class LaunchFailed(Exception):
    """A replacement session ended before its avatar joined.

    Attributes:
        reason: Why, as in `AvatarLostEvent.reason`; a reason that is not
            recoverable (a refused token) stops the recovery.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail} before its avatar joined ({reason})")
        self.reason = reason


@dataclass(frozen=True)
class RecoveryPolicy:
    """How an `AvatarSession` brings its avatar back.

    Attributes:
        max_attempts: Creates tried after one loss before giving up (the
            conversation then goes on audio-only).
        max_sessions: Hosted sessions one conversation may start in all
            (the first, replacements and successors).
        backoff: Seconds before the second attempt; doubled for each later
            one, up to `max_backoff`. The first attempt is immediate.
        max_backoff: Longest wait between attempts.
        handover_lead: Seconds before the session cap at which the successor
            is started; None picks a quarter of the cap, at most 10 s.
        join_timeout: Seconds a replacement may take to publish video before
            the attempt counts as failed.
    """

    max_attempts: int = 8
    max_sessions: int = 50
    backoff: float = 1.0
    max_backoff: float = 15.0
    handover_lead: float | None = None
    join_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_attempts", "max_sessions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProtofaceValueError(
                    f"RecoveryPolicy.{name} must be an int >= 1, got {value!r}", param=name
                )
        for name in ("backoff", "max_backoff", "join_timeout", "handover_lead"):
            value = getattr(self, name)
            if value is None and name == "handover_lead":
                continue
            if not is_seconds(value) or value <= 0:
                raise ProtofaceValueError(
                    f"RecoveryPolicy.{name} must be a number of seconds above 0, got {value!r}",
                    param=name,
                )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (0-based) of one recovery."""
        if attempt <= 0:
            return 0.0
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))

    def lead(self, cap_seconds: float) -> float:
        """Seconds before a session's cap at which its successor is started."""
        if self.handover_lead is not None:
            return min(self.handover_lead, cap_seconds / 2)
        return min(10.0, cap_seconds / 4)


def _gives_up(exc: Exception) -> bool:
    """Whether a failed attempt means no attempt can succeed (a refusal, a bad token)."""
    if isinstance(exc, LaunchFailed) and not is_recoverable(exc.reason):
        logger.error("not replacing the protoface avatar: %s", exc)
        return True
    if isinstance(exc, ProtofaceAPIError) and not should_retry(exc.status_code):
        logger.error("not replacing the protoface avatar: the API refused the session (%s)", exc)
        return True
    return False


def is_recoverable(reason: str) -> bool:
    """Whether a loss for `reason` is worth a replacement session."""
    return reason in RECOVERABLE_REASONS


async def replace(
    launch: Callable[[int], Awaitable[T]],
    *,
    policy: RecoveryPolicy,
    sessions_left: Callable[[], int],
    why: str,
) -> T | None:
    """Launch a replacement, with backoff, until one joins or the bounds are hit.

    Args:
        launch: Starts one hosted session and returns once its avatar
            publishes video; raises if it failed or timed out (having ended
            what it created). Given the attempt number.
        policy: Bounds and backoff.
        sessions_left: How many more sessions the conversation may start.
        why: The loss being recovered from, for the log.

    Returns:
        What `launch` returned, or None when recovery gave up.
    """
    for attempt in range(policy.max_attempts):
        if sessions_left() <= 0:
            logger.warning(
                "not replacing the protoface avatar (lost: %s): this conversation already "
                "started %d sessions (RecoveryPolicy.max_sessions)",
                why,
                policy.max_sessions,
            )
            return None
        await asyncio.sleep(policy.delay(attempt))
        try:
            return await launch(attempt)
        except Exception as exc:
            if _gives_up(exc):
                return None
            error = exc
        logger.warning(
            "could not replace the protoface avatar (attempt %d of %d): %s",
            attempt + 1,
            policy.max_attempts,
            error,
        )
    logger.error(
        "gave up replacing the protoface avatar after %d attempts; the conversation goes "
        "on audio-only",
        policy.max_attempts,
    )
    return None

"""The emulator's plan limits and lifecycle bounds (`StoreConfig`), their defaults, the plan.

The command line and `server.py` read the defaults; the store applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from protoface_emulator.api.views import PlanView

__all__ = [
    "DEFAULT_AVATAR_PROCESSING_SECONDS",
    "DEFAULT_END_WAIT_SECONDS",
    "DEFAULT_JOIN_TIMEOUT_SECONDS",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_SESSION_TIME_LIMIT_SECONDS",
    "DEFAULT_WORKER_CLOSE_TIMEOUT_SECONDS",
    "IDEMPOTENCY_TTL_SECONDS",
    "PLAN_KEY",
    "StoreConfig",
    "plan_view",
]

PLAN_KEY = "developer"
DEFAULT_MAX_CONCURRENCY = 2000
DEFAULT_SESSION_TIME_LIMIT_SECONDS = 1800
# A burst of 16 creates on a saturated 2-core machine took over 15 s to get some
# avatars' first frames (1 to 4 of 16 failed at 15 s, none at 30 s): a slow
# machine is not a broken worker. Auth and network failures are reported by the
# worker itself, at once.
DEFAULT_JOIN_TIMEOUT_SECONDS = 30.0
DEFAULT_AVATAR_PROCESSING_SECONDS = 1.0
DEFAULT_END_WAIT_SECONDS = 5.0
DEFAULT_WORKER_CLOSE_TIMEOUT_SECONDS = 10.0
IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class StoreConfig:
    """Plan limits and lifecycle bounds.

    Attributes:
        max_concurrency: sessions that may be non-terminal at once; one more is a 429.
            The default leaves room for a 1,000-session benchmark plus stragglers.
        session_time_limit_seconds: the plan's ceiling; `max_duration_seconds` is
            clamped to it and defaults to it.
        join_timeout_seconds: a session with no first frame this long after create
            fails with `worker_join_timeout`.
        avatar_processing_seconds: how long an uploaded avatar stays `processing`.
        end_wait_seconds: how long `end` waits for the worker to leave before it
            answers with the session still `ending`.
        worker_close_timeout_seconds: a worker whose `aclose()` takes longer is
            abandoned (logged) and the session counted `ended` anyway.
        retry_after_seconds: the `Retry-After` of a concurrency 429.
        idempotency_ttl_seconds: how long an idempotency key is remembered.
    """

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    session_time_limit_seconds: int = DEFAULT_SESSION_TIME_LIMIT_SECONDS
    join_timeout_seconds: float = DEFAULT_JOIN_TIMEOUT_SECONDS
    avatar_processing_seconds: float = DEFAULT_AVATAR_PROCESSING_SECONDS
    end_wait_seconds: float = DEFAULT_END_WAIT_SECONDS
    worker_close_timeout_seconds: float = DEFAULT_WORKER_CLOSE_TIMEOUT_SECONDS
    retry_after_seconds: int = 1
    idempotency_ttl_seconds: float = IDEMPOTENCY_TTL_SECONDS


def plan_view(config: StoreConfig) -> PlanView:
    """The one plan in effect, as the API shows it."""
    return {
        "key": PLAN_KEY,
        "name": "Developer",
        "max_concurrency": config.max_concurrency,
        "session_time_limit_seconds": config.session_time_limit_seconds,
        "included_credits": 0,
        "monthly_price_cents": 0,
        "custom_avatar_slots": 3,
        "extra_avatar_slot_cents": None,
        "extra_credit_unit_micros": None,
    }

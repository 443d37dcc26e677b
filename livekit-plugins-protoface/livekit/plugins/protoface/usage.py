"""What one conversation's avatar cost and how it did: `AvatarUsage`, kept by `UsageRecorder`.

The recorder is fed by the `AvatarSession`'s own events (joined, lost,
restored, handover, switched), the agent session's public
`agent_state_changed` (to count the seconds the agent spoke while its speech
went to the room or nowhere), and, when the conversation ends, one
`GET /v1/sessions/{id}` per hosted session for its `usage.billable_seconds`.

Protoface's usage is eventually consistent: a session read while it is still
`ending` may bill a little more later. `AvatarUsage.billable_seconds_final`
says whether every session was terminal (`ended`, `failed`, `canceled`) when
read; `sessions_billed` counts those. Each step is handed to
`telemetry.AvatarTelemetry` as it happens, so traces and metrics match this.

livekit-agents 1.8 has no public place for a plugin's usage: its
`AgentSession.usage` holds a closed set of model usages (LLM, TTS, STT,
interruption, end of turn) filled from its private collector. So the avatar's
usage is its own value (`AvatarSession.usage`, the `"avatar_usage"` event).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from livekit.agents import APIConnectOptions

from .api import ProtofaceAPI
from .errors import ProtofaceAPIError
from .events import AvatarHandoverEvent, AvatarLostEvent, AvatarRestoredEvent, AvatarSwitchedEvent
from .log import logger
from .seconds import is_seconds
from .telemetry import AvatarTelemetry, SessionOutcome
from .types import TERMINAL_SESSION_STATUSES, SessionResource

__all__ = ["AvatarUsage", "UsageRecorder"]

# Reading usage after the end: a session still `ending` is read again, for at
# most this long in all, so a conversation's close is never held up for long.
_READ_BOUND = 5.0
_READ_AGAIN_AFTER = 0.5
_READ_OPTIONS = APIConnectOptions(max_retry=1, timeout=3.0, retry_interval=0.5)


@dataclass(frozen=True)
class AvatarUsage:
    """What one conversation's avatars cost and how they did (a snapshot).

    Attributes:
        sessions_started: Hosted sessions created (the first, replacements,
            successors, switches).
        billable_seconds: Sum of `usage.billable_seconds` of the sessions read
            so far (all of them once the conversation ended).
        billable_seconds_final: Whether every session had a terminal status
            when its usage was read; False while the conversation runs or if
            a session was still `ending` (or could not be read) at the end.
        sessions_billed: How many sessions were read with a terminal status.
        losses: Avatars lost, by reason (as in `AvatarLostEvent.reason`).
        replacements: Lost avatars replaced (`"avatar_restored"`).
        handovers: Successors that took over before the session cap.
        switches: Avatars changed by `AvatarSession.switch()`.
        speech_seconds_without_avatar: Seconds the agent spoke while its
            speech went to the room (audio fallback) or nowhere, because no
            avatar was there.
        join_latency: Seconds from `start()` until the first avatar published
            video; None if it never did.
    """

    sessions_started: int = 0
    billable_seconds: float = 0.0
    billable_seconds_final: bool = False
    sessions_billed: int = 0
    losses: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    replacements: int = 0
    handovers: int = 0
    switches: int = 0
    speech_seconds_without_avatar: float = 0.0
    join_latency: float | None = None

    @property
    def losses_total(self) -> int:
        """Avatars lost, all reasons together."""
        return sum(self.losses.values())

    def describe(self) -> str:
        """One line for a log: the figures, no ids or secrets."""
        losses = ", ".join(f"{reason}={n}" for reason, n in sorted(self.losses.items()))
        join = "never" if self.join_latency is None else f"{self.join_latency:.2f} s"
        return (
            f"{self.sessions_started} hosted sessions, {self.billable_seconds:.1f} billable s "
            f"({'final' if self.billable_seconds_final else 'not final'}: "
            f"{self.sessions_billed} of {self.sessions_started} read after their end), "
            f"losses {self.losses_total} ({losses or 'none'}), "
            f"{self.replacements} replacements, {self.handovers} handovers, "
            f"{self.switches} switches, {self.speech_seconds_without_avatar:.1f} s spoken "
            f"without the avatar, join {join}"
        )


class UsageRecorder:
    """Counts what happens to one conversation's avatars; `usage()` is the snapshot.

    Args:
        telemetry: Where each step is also traced and measured.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self, telemetry: AvatarTelemetry, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._telemetry = telemetry
        self._clock = clock
        self._started_at = clock()
        self._sessions_started = 0
        self._losses: dict[str, int] = {}
        self._counts: Counter[str] = Counter()  # replacements, handovers, switches
        self._join_latency: float | None = None
        self._bills: dict[str, SessionResource] = {}
        self._final = False
        # Speech without the avatar: both must hold for time to count.
        self._speaking = False
        self._away = False
        self._since = clock()
        self._speech_away = 0.0
        self._ended = False

    @property
    def telemetry(self) -> AvatarTelemetry:
        """Where the steps are traced and measured (a switch's span starts there)."""
        return self._telemetry

    # -- what happened -------------------------------------------------------

    def joined(self, session_id: str) -> None:
        """The first avatar published video."""
        if self._join_latency is None:
            self._join_latency = self._clock() - self._started_at
            self._telemetry.joined(session_id, self._join_latency)

    def join_failed(self, session_id: str, reason: str) -> None:
        """The first avatar never joined: the agent speaks without it from now on."""
        self._set_away(True)
        self._telemetry.join_failed(session_id, reason)

    def lost(self, ev: AvatarLostEvent) -> None:
        """An avatar that had joined is gone (its speech already went elsewhere)."""
        self._losses[ev.reason] = self._losses.get(ev.reason, 0) + 1
        self._set_away(True)
        self._telemetry.lost(ev)

    def restored(self, ev: AvatarRestoredEvent) -> None:
        """A replacement speaks for the agent."""
        self._took_over("replacements")
        self._telemetry.restored(ev)

    def handed_over(self, ev: AvatarHandoverEvent) -> None:
        """A successor took over before the session cap."""
        self._counts["handovers"] += 1
        self._telemetry.handed_over(ev)

    def switched(self, ev: AvatarSwitchedEvent) -> None:
        """`switch()` put a new avatar in place (after a loss too: it speaks now)."""
        self._took_over("switches")
        self._telemetry.switched(ev)

    def speaking(self, speaking: bool) -> None:
        """The agent started or stopped speaking (`agent_state_changed`)."""
        self._advance()
        self._speaking = speaking

    def playback_latency(self, seconds: float) -> None:
        """Seconds from the first audio forwarded to the avatar until it played."""
        self._telemetry.playback_latency(seconds)

    def sessions_started(self, count: int) -> None:
        """How many hosted sessions the conversation has created so far."""
        self._sessions_started = max(self._sessions_started, count)

    # -- the snapshot --------------------------------------------------------

    def usage(self) -> AvatarUsage:
        """What the conversation's avatars did and cost, so far."""
        self._advance()
        billed = [b for b in self._bills.values() if b.get("status") in TERMINAL_SESSION_STATUSES]
        return AvatarUsage(
            sessions_started=self._sessions_started,
            billable_seconds=round(sum(_billable(b) for b in self._bills.values()), 3),
            billable_seconds_final=self._final,
            sessions_billed=len(billed),
            losses=MappingProxyType(dict(self._losses)),
            replacements=self._counts["replacements"],
            handovers=self._counts["handovers"],
            switches=self._counts["switches"],
            speech_seconds_without_avatar=round(self._speech_away, 3),
            join_latency=self._join_latency,
        )

    async def finish(
        self, api: ProtofaceAPI, session_ids: Iterable[str], *, read_bound: float = _READ_BOUND
    ) -> AvatarUsage:
        """Read every (ended) session's usage, close the books and report them once.

        Call after the sessions were ended. A session still `ending` is read
        again until `read_bound` seconds have passed. Never raises: a session
        that cannot be read leaves the total not final. Returns the final
        snapshot (the same value on a second call).
        """
        if self._ended:
            return self.usage()
        self._advance()
        self._ended = True
        ids = list(dict.fromkeys(session_ids))
        self.sessions_started(len(ids))
        deadline = self._clock() + read_bound
        try:
            # Bounded as a whole too: one slow read must not hold up the close.
            reads = await asyncio.wait_for(
                asyncio.gather(*(self._read_after_end(api, i, deadline) for i in ids)),
                timeout=read_bound + _READ_OPTIONS.timeout,
            )
        except asyncio.TimeoutError:
            reads = [self._bills.get(i) for i in ids]
        self._final = bool(ids) and all(
            r is not None and r.get("status") in TERMINAL_SESSION_STATUSES for r in reads
        )
        outcomes = [_outcome(i, r) for i, r in zip(ids, reads, strict=True)]
        usage = self.usage()
        self._telemetry.ended(_figures(usage), outcomes)
        return usage

    async def _read_after_end(
        self, api: ProtofaceAPI, session_id: str, deadline: float
    ) -> SessionResource | None:
        last: SessionResource | None = None
        while True:
            try:
                last = await api.get_session(session_id, conn_options=_READ_OPTIONS)
            except ProtofaceAPIError as exc:
                # Refused (e.g. not found): asking again will not change the answer.
                logger.debug("could not read the usage of %s: %s", session_id, exc)
                return last
            except Exception as exc:
                logger.debug("could not read the usage of %s: %s", session_id, exc)
            if last is not None:
                self._bills[session_id] = last
                if last.get("status") in TERMINAL_SESSION_STATUSES:
                    return last
            if self._clock() + _READ_AGAIN_AFTER > deadline:
                return last
            await asyncio.sleep(_READ_AGAIN_AFTER)

    def _took_over(self, kind: str) -> None:
        """An avatar of `kind` (a replacement, a switch's) speaks for the agent now."""
        self._counts[kind] += 1
        self._set_away(False)

    def _set_away(self, away: bool) -> None:
        self._advance()
        if away != self._away:
            self._away = away
            self._telemetry.avatar_available(not away)

    def _advance(self) -> None:
        now = self._clock()
        if self._ended:
            self._since = now
            return
        if self._speaking and self._away:
            self._speech_away += now - self._since
            self._telemetry.spoke_without_avatar(now - self._since)
        self._since = now


def _figures(usage: AvatarUsage) -> dict[str, int | float | bool]:
    """The figures the conversation's span ends with (no ids)."""
    return {
        "sessions_started": usage.sessions_started,
        "billable_seconds": usage.billable_seconds,
        "billable_seconds_final": usage.billable_seconds_final,
        "losses": usage.losses_total,
        "replacements": usage.replacements,
        "handovers": usage.handovers,
        "switches": usage.switches,
        "speech_seconds_without_avatar": usage.speech_seconds_without_avatar,
    }


def _billable(session: SessionResource) -> float:
    usage = session.get("usage")
    value = usage.get("billable_seconds") if isinstance(usage, dict) else None
    if not is_seconds(value):
        return 0.0
    return max(0.0, float(value))


def _outcome(session_id: str, session: SessionResource | None) -> SessionOutcome:
    if session is None:
        return SessionOutcome(session_id, status="unknown")
    failure = session.get("failure")
    return SessionOutcome(
        session_id,
        status=str(session.get("status") or "unknown"),
        avatar_id=str(session.get("avatar_id") or ""),
        quality=str(session.get("quality") or ""),
        billable_seconds=_billable(session),
        first_frame_latency=_seconds_between(
            session.get("created_at"), session.get("first_frame_at")
        ),
        failure_code=str(failure.get("code")) if isinstance(failure, dict) else None,
    )


def _seconds_between(start: object, end: object) -> float | None:
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        delta = _parse_time(end) - _parse_time(start)
    except ValueError:
        return None
    return max(0.0, delta.total_seconds())


def _parse_time(value: str) -> datetime:
    # Python 3.10's fromisoformat does not read a trailing "Z".
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)

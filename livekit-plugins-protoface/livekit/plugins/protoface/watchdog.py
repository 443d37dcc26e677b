"""Whether the avatar answers: the acknowledgement and finish rule for one route.

This module states the rule; the others link here. An avatar that plays what
it is sent says so: `lk.playback_started` when a segment starts playing, and
`lk.playback_finished` when it ends or is cleared. So, on an avatar route:

- every segment must be acknowledged within `ACK_TIMEOUT` of its first frame
  (after `SUSPECT_AFTER`, the fallback is made ready, just in case);
- every segment must finish within `FINISH_GRACE` of when its audio ends;
- every interruption (`lk.clear_buffer`, a pause's or the agent's) must be
  answered with a finish within `FINISH_GRACE`.

An avatar that never acknowledges but does finish (its side does not send
acknowledgements) is then held to finishes only. What goes unanswered is
reported once per route through `on_unanswered`; `lifetime.Lifetime` then
checks the avatar's media, and whether LiveKit itself stalls (`stall.py`),
before it counts as a loss (`Lifetime._confirm_unanswered`). Keep-alives are
segments too, so a silent avatar is noticed while the agent listens.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .ledger import Segment
from .log import logger

__all__ = ["ACK_TIMEOUT", "FINISH_GRACE", "SUSPECT_AFTER", "Watchdog"]

ACK_TIMEOUT = 1.5
"""Seconds an avatar has to acknowledge a segment (`lk.playback_started`).

An alive avatar answers in tens of milliseconds, and within a second or so on
a saturated machine. What goes unanswered is then checked against the avatar's
media for half a second (`lifetime.CONFIRM_WINDOW`) before it counts, so an
avatar that is late but still sending video is never declared lost, and the
agent's speech still reaches the room within 3 s of the line's start."""
SUSPECT_AFTER = 1.0
"""Seconds without an acknowledgement after which the fallback is made ready."""
FINISH_GRACE = 2.0
"""Seconds past a segment's expected end (or an interruption) before it counts as unanswered."""


class Watchdog:
    """Arms and disarms the timers of the rule above, for the current route.

    Args:
        ack_timeout: See `ACK_TIMEOUT`.
        finish_grace: See `FINISH_GRACE`.
        on_unanswered: Called once per route with what went unanswered.
        on_suspect: Called when an acknowledgement is late.
    """

    def __init__(
        self,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        finish_grace: float = FINISH_GRACE,
        on_unanswered: Callable[[str], None],
        on_suspect: Callable[[], None],
    ) -> None:
        self.ack_timeout = ack_timeout
        self.finish_grace = finish_grace
        self._on_unanswered = on_unanswered
        self._on_suspect = on_suspect
        self.active = False  # the route is an avatar's: it is held to the rule
        self.suspecting = False  # someone listens for late acknowledgements
        self.acks_expected = True
        self.silent_since: float | None = None  # when the avatar fell silent, if known
        self._reported = False
        self._route = 0  # bumped per route: a timer of an old route does nothing

    def new_route(self, *, avatar: bool) -> None:
        """Watch a new route afresh (held to the rule if it is an avatar's)."""
        self._route += 1
        self.active = avatar
        self._reported = False
        self.acks_expected = True
        self.silent_since = None

    def forgive(self) -> None:
        """What went unanswered was late, not lost: watch afresh."""
        self._reported = False
        self.silent_since = None

    def sent(self, segment: Segment) -> None:
        """The first frame of `segment` reached the route: it must be acknowledged."""
        segment.sent_at = time.monotonic()
        if not self.active or segment.started_at is not None or segment.pausing:
            return
        if self.suspecting:
            delay = min(SUSPECT_AFTER, self.ack_timeout)
            self._arm(segment, delay, lambda: self._suspect(segment))
        if self.acks_expected:
            what = f"no lk.playback_started within {self.ack_timeout:g} s of a segment"
            self._arm(segment, self.ack_timeout, lambda: self.report(what))

    def closed(self, segment: Segment) -> None:
        """`segment` was flushed to the route."""
        segment.closed_at = time.monotonic()
        self._arm_finish(segment)

    def acknowledged(self, segment: Segment) -> None:
        """The route said `segment` started playing."""
        segment.cancel_timers()
        segment.started_at = time.monotonic()
        self._arm_finish(segment)

    def finished(self, segment: Segment) -> None:
        """The route said `segment` finished; one never acknowledged says it sends none."""
        segment.cancel_timers()
        if segment.started_at is None and not (segment.pausing or segment.clearing):
            self._no_acknowledgements()

    def clearing(self, segment: Segment, on_expired: Callable[[Segment], bool]) -> None:
        """`segment` was cleared: its finish is due within `finish_grace`.

        Else `on_expired(segment)` settles what it can and says whether the
        segment was still owed (then it went unanswered).
        """
        segment.cancel_timers()
        if not self.active:
            return
        what = f"no lk.playback_finished within {self.finish_grace:g} s of lk.clear_buffer"

        def expired() -> None:
            if on_expired(segment):
                self.report(what)

        self._arm(segment, self.finish_grace, expired)

    def report(self, what: str) -> None:
        """`what` went unanswered: tell `on_unanswered`, once per route."""
        if self._reported:
            return
        self._reported = True
        logger.warning("the protoface avatar stopped answering: %s", what)
        self._on_unanswered(what)

    def heard(self, segment: Segment) -> float:
        """How far a listener got in `segment`, had it played on since it started."""
        if segment.started_at is None:
            return segment.base  # never acknowledged: nobody heard it
        until = min(
            time.monotonic(),
            segment.paused_at if segment.paused_at is not None else math.inf,
            self.silent_since if self.silent_since is not None else math.inf,
        )
        played = min(segment.sent, max(0.0, until - segment.started_at))
        return segment.base + played

    def _arm_finish(self, segment: Segment) -> None:
        # Without acknowledgements from this avatar, it started when it was sent.
        started_at = segment.started_at if self.acks_expected else segment.sent_at
        if not self.active or started_at is None or segment.closed_at is None:
            return
        if segment.pausing or segment.clearing:
            return
        ends_at = max(started_at + segment.sent, segment.closed_at)
        delay = max(0.0, ends_at - time.monotonic()) + self.finish_grace
        what = f"no lk.playback_finished within {self.finish_grace:g} s of a segment's end"
        self._arm(segment, delay, lambda: self.report(what))

    def _arm(self, segment: Segment, delay: float, then: Callable[[], None]) -> None:
        route = self._route

        def fire() -> None:
            if route == self._route:
                then()

        segment.timers.append(asyncio.get_running_loop().call_later(delay, fire))

    def _suspect(self, segment: Segment) -> None:
        if segment.started_at is None:
            self._on_suspect()

    def _no_acknowledgements(self) -> None:
        """The avatar played a segment without saying it started: it does not send them.

        Then a missing `lk.playback_started` says nothing; its finishes and its
        media still tell whether it is there.
        """
        if self.acks_expected:
            self.acks_expected = False
            logger.warning(
                "the protoface avatar does not send lk.playback_started; a worker that dies "
                "is noticed from its unfinished segments and its media only"
            )

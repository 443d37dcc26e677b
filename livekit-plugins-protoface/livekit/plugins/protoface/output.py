"""`AvatarAudioOutput`: the agent's audio sink for the whole conversation.

The agent session gets this one sink at `start()` and keeps it; underneath, it
routes each utterance to the current avatar (a `DataStreamAudioOutput`) or to
the room (`fallback.RoomAudio`). It keeps every frame of the utterance in
flight until the utterance is over (`ledger.py`), which is what lets it:

- **pause and resume** over the standard avatar protocol alone (`pausing.py`);
- **move an utterance to another route** without losing it:
  `switch(route, at_boundary=False)` (the avatar is gone) replays it from
  where it was last heard; `switch(route, at_boundary=True)` (a replacement,
  a successor, a new face) waits for it to end;
- **notice an avatar that stopped answering** (`watchdog.py` states the rule);
- **hold the first words for a face** no longer than `wait_for_avatar`, then
  let the caller move them to the room (`on_not_ready`);
- **pace** an avatar a few seconds ahead of its playback (`pace`), so a long
  answer keeps its hosted idle timeout away.

It also keeps the hosted session from idling out while the agent listens:
`keep_alive()` sends a few milliseconds of silence to the avatar when nothing
was said for a while, and `keep_spare_alive()` to an avatar waiting to take
over (`routes.py`). Those segments never reach the agent session's playback
accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from livekit.agents.voice.io import (
    AudioOutput,
    PlaybackFinishedEvent,
    PlaybackStartedEvent,
)

from .fallback import DiscardAudio
from .ledger import Segment, Utterance
from .log import logger
from .pausing import PauseState
from .routes import SpareKeepAlives
from .sending import LedgerSender
from .watchdog import ACK_TIMEOUT, FINISH_GRACE, Watchdog

__all__ = ["ACK_TIMEOUT", "FINISH_GRACE", "AvatarAudioOutput", "DiscardAudio"]

FALLBACK_READY_LEAD = 0.6
"""Seconds before an utterance's wait for a face ends that the agent's own track is published.

Publishing, and a listener subscribing, take a few hundred milliseconds: so
the track is ready when the wait ends, and is not published at all when the
avatar shows its face within the first moments of the wait."""


class AvatarAudioOutput(LedgerSender):
    """Routes the agent's utterances to the avatar, or to the room when there is none.

    Args:
        route: The first route.
        sample_rate: The rate the agent session sends.
        avatar_route: `route` is an avatar's (acknowledgements are awaited,
            keep-alives go to it).
        ack_timeout: See `watchdog.ACK_TIMEOUT`.
        finish_grace: See `watchdog.FINISH_GRACE`.
        wait_for_avatar: Seconds an utterance waits for an avatar route that
            is not ready (its avatar has not shown its face yet) before
            `on_not_ready` is called to move it elsewhere; None waits without
            limit, sending into the route, which waits for its participant.
    """

    def __init__(
        self,
        route: AudioOutput,
        *,
        sample_rate: int,
        avatar_route: bool,
        ack_timeout: float = ACK_TIMEOUT,
        finish_grace: float = FINISH_GRACE,
        wait_for_avatar: float | None = None,
    ) -> None:
        """Start with `route`; the arguments are described on the class."""
        watchdog = Watchdog(
            ack_timeout=ack_timeout,
            finish_grace=finish_grace,
            on_unanswered=self._report,
            on_suspect=self._suspect,
        )
        watchdog.new_route(avatar=avatar_route)
        super().__init__(
            route, sample_rate=sample_rate, avatar_route=avatar_route, watchdog=watchdog
        )
        self._pending_switch: tuple[AudioOutput, bool, bool] | None = None
        self._attached = False
        # Set by `watch_avatar()`; until then nobody hears of an avatar that stops answering.
        self._report_start = True
        self._on_unanswered: Callable[[AudioOutput, str], None] | None = None
        self._on_suspect: Callable[[], None] | None = None
        self._on_not_ready: Callable[[], None] | None = None
        self._wait_for_avatar = wait_for_avatar
        self._face_timers: list[asyncio.TimerHandle] = []
        self._spares = SpareKeepAlives()
        self._pausing = PauseState()
        self._listen(route)

    # -- what the orchestrator sees ------------------------------------------

    @property
    def route(self) -> AudioOutput:
        """Where the agent's speech goes now."""
        return self._route

    @property
    def paused(self) -> bool:
        """Whether the agent session paused playback (a possible false interruption)."""
        return self._pausing.paused

    @property
    def avatar_playing(self) -> bool:
        """Whether the avatar acknowledged a segment of speech it has not finished yet."""
        return self._avatar_route and any(
            s.utterance is not None and s.started_at is not None and not s.pausing
            for s in self._ledger.segments
        )

    @property
    def waiting_for_avatar(self) -> bool:
        """Whether the route is an avatar that is not ready, holding the agent's speech."""
        return self._avatar_route and not self._route_ready and self._wait_for_avatar is not None

    def forgive(self, route: AudioOutput) -> None:
        """What went unanswered by `route`'s avatar was late, not lost: watch it afresh."""
        if route is self._route:
            self._watchdog.forgive()

    def report_unanswered(self, route: AudioOutput, what: str, *, since: float) -> None:
        """Something other than a segment went unanswered by the avatar of `route`.

        Args:
            route: The avatar's route.
            what: What went unanswered, for the log.
            since: When (`time.monotonic()`) the avatar fell silent: what it
                played after that nobody heard, so it is replayed.
        """
        if route is not self._route:
            return
        if self._watchdog.silent_since is None:
            self._watchdog.silent_since = since
        self._watchdog.report(what)

    def watch_avatar(
        self,
        *,
        report_start: bool,
        on_unanswered: Callable[[AudioOutput, str], None],
        on_suspect: Callable[[], None],
        on_not_ready: Callable[[], None] | None = None,
    ) -> None:
        """Set who hears of an avatar that stops answering, or is not there yet.

        Args:
            report_start: Report an utterance started when the avatar says it
                started playing (True), or when its first frame is captured.
            on_unanswered: Called once per avatar route, with what went
                unanswered, when that avatar stops answering.
            on_suspect: Called when an avatar's acknowledgement is late, or an
                utterance waits for an avatar not ready yet (the fallback may
                be made ready).
            on_not_ready: Called when an utterance waited `wait_for_avatar`
                seconds for an avatar route that is still not ready: the
                caller may move the speech to another route.
        """
        self._report_start = report_start
        self._on_unanswered = on_unanswered
        self._on_suspect = on_suspect
        self._on_not_ready = on_not_ready
        self._watchdog.suspecting = True

    def mark_route_ready(self, route: AudioOutput) -> None:
        """`route` can take audio without waiting (its avatar publishes video)."""
        if route is not self._route or self._route_ready:
            return
        self._route_ready = True
        self._cancel_face_timer()
        if self._ledger.utterances and not self._held():
            self._replay()

    def switch(self, route: AudioOutput, *, at_boundary: bool, avatar: bool, ready: bool) -> None:
        """Send the agent's speech to `route`: now, or once no utterance is in flight.

        Args:
            route: The new sink.
            at_boundary: Wait for the utterance in flight to finish first.
            avatar: `route` is an avatar's (keep-alives go to it).
            ready: `route` takes audio without waiting for its participant.
        """
        if at_boundary and self.speaking:
            self._pending_switch = (route, avatar, ready)
            return
        self._pending_switch = None
        self._apply(route, avatar, ready)

    async def wait_for_boundary(self) -> None:
        """Return once no utterance is in flight (a pending switch has been applied)."""
        while self.speaking or self._pending_switch is not None:
            self._boundary.clear()
            await self._boundary.wait()

    async def keep_spare_alive(self, route: AudioOutput) -> bool:
        """Send a moment of silence to an avatar that does not speak for the agent yet.

        See `routes.SpareKeepAlives`; False when `route` is the current one or
        the send failed.
        """
        if route is self._route:
            return False
        return await self._spares.send(route, self.sample_rate or 16000)

    def forget_spare(self, route: AudioOutput) -> None:
        """`route` will never speak for the agent: stop counting its keep-alives."""
        self._spares.forget(route)

    # -- AudioOutput ---------------------------------------------------------

    def clear_buffer(self) -> None:
        """Stop the current utterance now (the agent was interrupted)."""
        self._pausing.end()
        ledger = self._ledger
        if ledger.capturing is not None:
            ledger.capturing.input_done = True
            ledger.capturing = None
        for utterance in ledger.utterances:
            utterance.cleared = True
        playing = False
        for segment in ledger.segments:
            if segment.speech and not segment.pausing:
                playing = True
                segment.clearing = True
                self._watchdog.clearing(segment, self._clear_unanswered)
        self._close_open()
        if playing:
            self._route.clear_buffer()
        # Utterances with nothing at the route (paused, or never sent) are over now.
        for utterance in list(ledger.utterances):
            if not ledger.at_route(utterance):
                self._settle(utterance, utterance.heard, interrupted=True)

    def pause(self) -> None:
        """Pause playback: the avatar stops at once; the utterance waits to be resumed."""
        if self._pausing.pause():
            self._by_route(own_track=self._route.pause, avatar=self._stop_for_pause)

    def resume(self) -> None:
        """Resume: the rest of the utterance, from where it was heard, on the same route."""
        if self._pausing.resume():
            self._by_route(
                own_track=self._route.resume,
                avatar=lambda: self._pausing.start_resume(self._resume()),
            )

    def _by_route(self, *, own_track: Callable[[], None], avatar: Callable[[], None]) -> None:
        """The room's own track pauses and resumes itself; an avatar's ledger does it here."""
        if self._avatar_route:
            avatar()
        else:
            own_track()

    def on_attached(self) -> None:
        """Forwarded to the route."""
        self._attached = True
        self._route.on_attached()

    def on_detached(self) -> None:
        """Forwarded to the route."""
        self._attached = False
        self._route.on_detached()

    # -- pausing (see pausing.py) ---------------------------------------------

    def _stop_for_pause(self) -> None:
        """End and clear the avatar's segments of speech; their finish says where they stopped."""
        stopping = [s for s in self._ledger.segments if s.speech and not s.pausing]
        if not stopping:
            return
        now = time.monotonic()
        for segment in stopping:
            segment.pausing = True
            segment.paused_at = now
            self._watchdog.clearing(segment, self._clear_unanswered)
        # The clear goes out before the segment's end: sent after it, it waited up
        # to 0.15 s behind the end on its way to the avatar, audible all that time.
        self._route.clear_buffer()
        self._close_open()

    async def _resume(self) -> None:
        # The avatar's answer to the pause gives the position to go on from.
        while any(s.pausing for s in self._ledger.segments):
            await self._pausing.answered()
        for utterance in self._ledger.utterances:
            utterance.cursor = utterance.heard
        await self._drain()

    # -- hooks of the sending half (sending.py) ---------------------------------

    async def _wait_to_capture(self) -> None:
        await self._pausing.until_playing()

    def _held(self) -> bool:
        # Paused on an avatar: nothing goes out until resume() knows where to go on from.
        # Not ready (no face yet): nothing goes out until it is, or the speech moves.
        return self._avatar_route and (
            self._pausing.paused
            or any(s.pausing for s in self._ledger.segments)
            or self.waiting_for_avatar
        )

    def _captured(self, utterance: Utterance) -> None:
        if not self._report_start and not utterance.started:
            utterance.started = True
            self.on_playback_started(created_at=time.time())
        if self.waiting_for_avatar and not self._face_timers:
            self._wait_for_face()

    def _frame_sent(self, segment: Segment) -> None:
        if self._pausing.paused and self._avatar_route and not segment.pausing:
            # Paused while this frame was on its way: stopped like the rest.
            self._stop_for_pause()

    def _at_boundary(self) -> bool:
        pending, self._pending_switch = self._pending_switch, None
        if pending is None:
            return False
        self._apply(*pending)
        return True

    # -- waiting for a face ------------------------------------------------------

    def _wait_for_face(self) -> None:
        """An utterance began while the avatar is not ready: it waits `wait_for_avatar` at most."""
        assert self._wait_for_avatar is not None
        loop = asyncio.get_running_loop()
        # The agent's own track gets ready in time to speak when the wait ends,
        # but not at once: an avatar about to show its face should not share
        # the start with a track being published for nothing.
        ready_at = max(0.0, self._wait_for_avatar - FALLBACK_READY_LEAD)
        self._face_timers = [
            loop.call_later(ready_at, self._suspect_while_waiting),
            loop.call_later(self._wait_for_avatar, self._face_late),
        ]

    def _suspect_while_waiting(self) -> None:
        if self.waiting_for_avatar and self._on_suspect is not None:
            self._on_suspect()

    def _face_late(self) -> None:
        self._face_timers = []
        if self.waiting_for_avatar and self._ledger.utterances and self._on_not_ready is not None:
            logger.info(
                "the protoface avatar is not ready after %g s; the agent speaks on its own track "
                "until it is",
                self._wait_for_avatar,
            )
            self._on_not_ready()

    def _cancel_face_timer(self) -> None:
        for timer in self._face_timers:
            timer.cancel()
        self._face_timers = []

    # -- the watchdog's callbacks ---------------------------------------------

    def _report(self, what: str) -> None:
        if self._on_unanswered is not None:
            self._on_unanswered(self._route, what)

    def _suspect(self) -> None:
        if self._on_suspect is not None:
            self._on_suspect()

    def _clear_unanswered(self, segment: Segment) -> bool:
        """A clear went unanswered: settle what it cleared; True if it was still owed."""
        if segment not in self._ledger.segments:
            return False
        utterance = segment.utterance
        if segment.pausing and utterance is not None:
            # The avatar never said where it stopped: go on from where it would have.
            utterance.heard = max(utterance.heard, self._watchdog.heard(segment))
            segment.pausing = False
            self._ledger.segments.remove(segment)
            self._pausing.wake()
            if utterance.cleared:
                self._settle(utterance, utterance.heard, interrupted=True)
        elif utterance is not None and not utterance.settled:
            self._settle(utterance, self._watchdog.heard(segment), interrupted=True)
        return True

    # -- switching routes ------------------------------------------------------

    def _apply(self, route: AudioOutput, avatar_route: bool, ready: bool) -> None:
        old, ledger = self._route, self._ledger
        if route is old:
            return
        self._unlisten(old)
        if ledger.open is not None:
            # Close the old route's stream; it is not asked to clear: every switch
            # made now is away from an avatar that is gone or stopped answering
            # (its RPC would only time out), and its session is being ended.
            with contextlib.suppress(Exception):
                old.flush()
        # What a listener last heard of each utterance in flight: it goes on
        # from there in the new route (all of it, if the old one never played it).
        for segment in ledger.segments:
            segment.cancel_timers()
            if segment.speech:
                assert segment.utterance is not None
                segment.utterance.heard = max(
                    segment.utterance.heard, self._watchdog.heard(segment)
                )
        # Keep-alives still in flight to the new route: its answers to them come first.
        ledger.new_route(self._spares.take(route))
        self._cancel_face_timer()
        self._pausing.wake()
        pending = [u for u in ledger.utterances if not u.cleared]
        for utterance in pending[:-1]:
            # Only the newest utterance is worth finishing; older ones are over.
            self._settle(utterance, utterance.heard, interrupted=True)
        for utterance in ledger.utterances:
            utterance.cursor = utterance.heard
        if self._attached:
            old.on_detached()
            route.on_attached()
        self._route, self._avatar_route, self._route_ready = route, avatar_route, ready
        self._watchdog.new_route(avatar=avatar_route)
        self._listen(route)
        self._route_changed.set()
        self._route_changed = asyncio.Event()
        self._after_switch()

    def _after_switch(self) -> None:
        """The new route takes over what is in flight."""
        if self._pausing.paused and not self._avatar_route:
            self._route.pause()
        for utterance in [u for u in self._ledger.utterances if u.cleared]:
            self._settle(utterance, utterance.heard, interrupted=True)
        if self._ledger.utterances and not self._held():
            self._replay()
        elif self._ledger.utterances and self.waiting_for_avatar:
            self._wait_for_face()
        self._boundary_reached()

    def _listen(self, route: AudioOutput) -> None:
        route.on("playback_started", self._on_route_started)
        route.on("playback_finished", self._on_route_finished)

    def _unlisten(self, route: AudioOutput) -> None:
        route.off("playback_started", self._on_route_started)
        route.off("playback_finished", self._on_route_finished)

    def _on_route_started(self, ev: PlaybackStartedEvent) -> None:
        segment = self._ledger.next_to_start()
        utterance = _unsettled(segment, self._watchdog.acknowledged)
        if utterance is not None and not utterance.started:
            utterance.started = True
            self.on_playback_started(created_at=ev.created_at)

    def _on_route_finished(self, ev: PlaybackFinishedEvent) -> None:
        segment = self._ledger.next_to_finish()
        utterance = _unsettled(segment, self._watchdog.finished)
        if segment is None or utterance is None:
            return
        position = segment.base + ev.playback_position
        if segment.pausing:
            utterance.heard = min(position, utterance.captured)
            self._pausing.wake()
            if utterance.cleared:
                self._settle(utterance, utterance.heard, interrupted=True)
            return
        self._settle(utterance, position, interrupted=ev.interrupted or utterance.cleared)


def _unsettled(segment: Segment | None, answered: Callable[[Segment], None]) -> Utterance | None:
    """Tell the watchdog the avatar `answered` for `segment`; the utterance still owed, if any."""
    if segment is None:
        return None
    answered(segment)
    utterance = segment.utterance
    return None if utterance is None or utterance.settled else utterance

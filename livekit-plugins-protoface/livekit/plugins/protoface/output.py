"""`AvatarAudioOutput`: the agent's audio sink for the whole conversation.

The agent session gets this one sink at `start()` and keeps it; underneath, it
routes each utterance to the current avatar (a `DataStreamAudioOutput`) or to
the room (`fallback.RoomAudio`). It keeps every frame of the utterance in
flight until the utterance is over, which is what lets it do three things an
avatar output could not:

- **Pause and resume** (livekit-agents' `resume_false_interruption`) over the
  standard avatar protocol alone: `pause()` ends the avatar's segment and
  clears its buffer (`lk.clear_buffer`); the avatar's `lk.playback_finished`
  says where the listener heard it stop; `resume()` sends the rest of the same
  utterance, from that position, as a new segment. The agent session sees one
  utterance, settled once, at its true position.
- **Move an utterance to another route** without losing it:
  `switch(route, at_boundary=False)` (the avatar is gone) replays the utterance
  from where it was last heard; `switch(route, at_boundary=True)` (a
  replacement, a successor, a new face) waits for the utterance to end.
- **Notice an avatar that stopped answering** (its worker killed, its machine
  gone: its participant stays in the room until LiveKit times it out). Every
  segment sent to an avatar must be acknowledged with `lk.playback_started`
  within `ack_timeout`, and must finish (`lk.playback_finished`) within
  `finish_grace` of when its audio ends; an interruption must be answered
  within `finish_grace` too. When one is not, `on_unanswered` is called once
  per route: the lifetime then declares the avatar lost. Keep-alives are
  segments too, so a silent avatar is noticed while the agent listens.

It also keeps the hosted session from idling out while the agent listens:
`keep_alive()` sends a few milliseconds of silence to the avatar when nothing
was said for a while (the hosted idle timeout counts received audio). Those
segments never reach the agent session's playback accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit import rtc
from livekit.agents.voice.io import (
    AudioOutput,
    AudioOutputCapabilities,
    PlaybackFinishedEvent,
    PlaybackStartedEvent,
)

from .log import logger

__all__ = ["ACK_TIMEOUT", "FINISH_GRACE", "AvatarAudioOutput", "DiscardAudio"]

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

_KEEPALIVE_MS = 20
_PACE_STEP = 0.1  # how often a paced send looks again
_KEEPALIVE_SEND_TIMEOUT = 5.0


@dataclass(eq=False)
class _Utterance:
    """One utterance of the agent: every frame of it, until it is settled."""

    frames: list[rtc.AudioFrame] = field(default_factory=list)
    captured: float = 0.0  # seconds captured so far
    input_done: bool = False  # the agent session flushed it
    heard: float = 0.0  # position a listener is known (or estimated) to have heard
    cursor: float = 0.0  # position up to which it was sent to the current route
    cleared: bool = False  # the agent session interrupted it
    started: bool = False  # playback_started reported to the agent session
    settled: bool = False

    def frame_at(self, position: float) -> tuple[rtc.AudioFrame, float] | None:
        """The audio from `position` to the end of the frame holding it, and where that ends.

        None past the end of what was captured.
        """
        offset = 0.0
        for frame in self.frames:
            end = offset + frame.duration
            if position < end - 1e-6:
                skip = round((position - offset) * frame.sample_rate)
                if skip <= 0:
                    return frame, end
                skip = min(skip, frame.samples_per_channel - 1)
                width = frame.num_channels
                data = frame.data[skip * width :]
                part = rtc.AudioFrame(
                    data.tobytes(),
                    frame.sample_rate,
                    frame.num_channels,
                    frame.samples_per_channel - skip,
                )
                return part, end
            offset = end
        return None


@dataclass(eq=False)
class _Segment:
    """One stream sent to the current route: a part of an utterance, or a keep-alive."""

    utterance: _Utterance | None  # None for a keep-alive
    base: float  # the utterance position its first frame is at
    sent: float = 0.0
    sent_at: float | None = None  # monotonic, when its first frame reached the route
    closed_at: float | None = None  # monotonic, when flushed to the route
    started_at: float | None = None  # monotonic, when the avatar acknowledged it
    pausing: bool = False  # ended by pause(): its finish is not the utterance's
    paused_at: float | None = None  # monotonic, when pause() stopped it
    clearing: bool = False  # cleared by the agent session; the answer is awaited
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class _Spare:
    """The keep-alives in flight to an avatar that does not speak for the agent yet."""

    def __init__(self, route: AudioOutput) -> None:
        self.route = route
        self.pending: list[_Segment] = []
        route.on("playback_started", self._started)
        route.on("playback_finished", self._finished)

    def _started(self, _: PlaybackStartedEvent) -> None:
        for segment in self.pending:
            if segment.started_at is None:
                segment.started_at = time.monotonic()
                return

    def _finished(self, _: PlaybackFinishedEvent) -> None:
        if self.pending:
            self.pending.pop(0)

    def close(self) -> list[_Segment]:
        """Stop listening; the keep-alives still in flight, oldest first."""
        self.route.off("playback_started", self._started)
        self.route.off("playback_finished", self._finished)
        pending, self.pending = self.pending, []
        return pending


class AvatarAudioOutput(AudioOutput):
    """Routes the agent's utterances to the avatar, or to the room when there is none.

    Args:
        route: The first route.
        sample_rate: The rate the agent session sends.
        avatar_route: `route` is an avatar's (acknowledgements are awaited,
            keep-alives go to it).
        ack_timeout: See `ACK_TIMEOUT`.
        finish_grace: See `FINISH_GRACE`.
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
        super().__init__(
            label="ProtofaceAvatar",
            capabilities=AudioOutputCapabilities(pause=True),
            next_in_chain=None,
            sample_rate=sample_rate,
        )
        self._route = route
        self._avatar_route = avatar_route
        self._route_ready = False
        self._route_changed = asyncio.Event()
        self._pending_switch: tuple[AudioOutput, bool, bool] | None = None
        self._attached = False
        # Set by `watch_avatar()`; until then nobody hears of an avatar that stops answering.
        self._report_start = True
        self._on_unanswered: Callable[[AudioOutput, str], None] | None = None
        self._on_suspect: Callable[[], None] | None = None
        self._ack_timeout = ack_timeout
        self._finish_grace = finish_grace
        self._unanswered_reported = False
        self._acks_expected = True  # the avatar acknowledges each segment it plays
        self._silent_since: float | None = None  # when the current avatar fell silent, if known
        self._wait_for_avatar = wait_for_avatar
        self._on_not_ready: Callable[[], None] | None = None
        self._face_timer: asyncio.TimerHandle | None = None
        # How far (seconds) the avatar may be sent ahead of what it has played; see `pace`.
        self._lead = math.inf
        # Keep-alives sent to avatars that do not speak yet (spares), per route, in order.
        self._spare_keepalives: dict[int, _Spare] = {}

        # Utterances not settled yet, oldest first; only the last may be capturing.
        self._utterances: list[_Utterance] = []
        self._capturing: _Utterance | None = None
        # Segments sent to the current route, in order; it reports them in order.
        self._segments: list[_Segment] = []
        self._started = 0  # how many of them reported started
        self._open: _Segment | None = None  # the one being written
        self._paused = False
        self._send_lock = asyncio.Lock()  # one writer to the route at a time
        self._resume_task: asyncio.Task[None] | None = None
        self._pause_waiters: list[asyncio.Future[None]] = []
        self._last_activity = time.monotonic()
        self._boundary = asyncio.Event()
        self._boundary.set()
        self._listen(route)

    # -- what the orchestrator sees ------------------------------------------

    @property
    def route(self) -> AudioOutput:
        """Where the agent's speech goes now."""
        return self._route

    @property
    def speaking(self) -> bool:
        """Whether an utterance is being captured or still playing."""
        return bool(self._utterances)

    @property
    def paused(self) -> bool:
        """Whether the agent session paused playback (a possible false interruption)."""
        return self._paused

    @property
    def avatar_playing(self) -> bool:
        """Whether the avatar acknowledged a segment of speech it has not finished yet."""
        return self._avatar_route and any(
            s.utterance is not None and s.started_at is not None and not s.pausing
            for s in self._segments
        )

    def forgive(self, route: AudioOutput) -> None:
        """What went unanswered by `route`'s avatar was late, not lost: watch it afresh."""
        if route is self._route:
            self._unanswered_reported = False
            self._silent_since = None

    def report_unanswered(self, route: AudioOutput, what: str, *, since: float) -> None:
        """Something other than a segment went unanswered by the avatar of `route`.

        Args:
            route: The avatar's route.
            what: What went unanswered, for the log.
            since: When (`time.monotonic()`) the avatar fell silent: what it
                played after that nobody heard, so it is replayed.
        """
        if route is self._route and self._silent_since is None:
            self._silent_since = since
        self._unanswered(route, what)

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

    def mark_route_ready(self, route: AudioOutput) -> None:
        """`route` can take audio without waiting (its avatar publishes video)."""
        if route is not self._route or self._route_ready:
            return
        self._route_ready = True
        self._cancel_face_timer()
        if self._utterances and not self._held():
            task = asyncio.ensure_future(self._drain())
            task.add_done_callback(_log_replay_failure)

    @property
    def waiting_for_avatar(self) -> bool:
        """Whether the route is an avatar that is not ready, holding the agent's speech."""
        return self._avatar_route and not self._route_ready and self._wait_for_avatar is not None

    def pace(self, lead: float) -> None:
        """Send an avatar at most `lead` seconds of speech ahead of what it has played.

        The hosted idle timeout counts received audio: an answer handed over
        all at once, longer than the timeout, would end the session while the
        avatar still plays it. Paced, the avatar keeps receiving until the end.
        """
        self._lead = lead

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

    def idle_for(self) -> float:
        """Seconds since the agent last said anything (0 while it speaks)."""
        return 0.0 if self.speaking else time.monotonic() - self._last_activity

    async def keep_alive(self) -> bool:
        """Send a moment of silence to the avatar so its session does not idle out.

        Returns:
            True if it was sent; False when the agent speaks, the route is the
            room, or the avatar is not ready.
        """
        if self.speaking or not self._avatar_route or not self._route_ready:
            return False
        async with self._send_lock:
            if self.speaking:
                return False
            route = self._route
            frame = _silence(self.sample_rate or 16000)
            segment = _Segment(None, 0.0, sent=frame.duration)
            self._segments.append(segment)
            try:
                await asyncio.wait_for(route.capture_frame(frame), _KEEPALIVE_SEND_TIMEOUT)
                if route is not self._route:
                    return False
                route.flush()
            except Exception as exc:
                self._forget(segment)
                logger.debug("could not send a keep-alive to the avatar: %s", exc)
                return False
            self._sent(segment, route)
            self._closed(segment, route)
        self._last_activity = time.monotonic()
        return True

    async def keep_spare_alive(self, route: AudioOutput) -> bool:
        """Send a moment of silence to an avatar that does not speak for the agent yet.

        A replacement, a successor or a switch target may wait for the end of
        a long utterance; its own idle timeout must not end it meanwhile. Its
        answers are counted here until it becomes the route (see `_apply`), so
        they never reach the agent session.
        """
        if route is self._route:
            return False
        spare = self._spare_keepalives.get(id(route))
        if spare is None:
            spare = self._spare_keepalives[id(route)] = _Spare(route)
        segment = _Segment(None, 0.0)
        spare.pending.append(segment)
        frame = _silence(self.sample_rate or 16000)
        try:
            await asyncio.wait_for(route.capture_frame(frame), _KEEPALIVE_SEND_TIMEOUT)
            route.flush()
        except Exception as exc:
            if segment in spare.pending:
                spare.pending.remove(segment)
            logger.debug("could not send a keep-alive to a waiting avatar: %s", exc)
            return False
        segment.sent = frame.duration
        return True

    def forget_spare(self, route: AudioOutput) -> None:
        """`route` will never speak for the agent: stop counting its keep-alives."""
        spare = self._spare_keepalives.pop(id(route), None)
        if spare is not None:
            spare.close()

    # -- AudioOutput ---------------------------------------------------------

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Capture a frame of the current utterance and forward it to the route."""
        utterance = self._capturing
        if utterance is None:
            async with self._send_lock:  # a keep-alive in flight completes first
                utterance = self._capturing = _Utterance()
                self._utterances.append(utterance)
                self._boundary.clear()
        await super().capture_frame(frame)
        utterance.frames.append(frame)
        utterance.captured += frame.duration
        self._last_activity = time.monotonic()
        if not self._report_start and not utterance.started:
            utterance.started = True
            self.on_playback_started(created_at=time.time())
        if self.waiting_for_avatar and self._face_timer is None:
            self._wait_for_face()
        try:
            await self._drain()
        except asyncio.CancelledError:
            if utterance.cursor == 0.0 and not any(
                seg.utterance is utterance for seg in self._segments
            ):
                self._drop_unsent(utterance)
            raise

    def flush(self) -> None:
        """End the current utterance."""
        super().flush()
        utterance, self._capturing = self._capturing, None
        if utterance is None:
            return
        utterance.input_done = True
        self._close_if_sent(utterance)

    def clear_buffer(self) -> None:
        """Stop the current utterance now (the agent was interrupted)."""
        if self._resume_task is not None:
            self._resume_task.cancel()
            self._resume_task = None
        self._paused = False
        if self._capturing is not None:
            self._capturing.input_done = True
            self._capturing = None
        playing = False
        for utterance in self._utterances:
            utterance.cleared = True
        for segment in self._segments:
            if segment.utterance is not None and segment.utterance.cleared and not segment.pausing:
                if segment.utterance.settled:
                    continue
                playing = True
                segment.clearing = True
                self._arm_clear_timer(segment)
        if self._open is not None:
            self._close_open()
        if playing:
            self._route.clear_buffer()
        # Utterances with nothing at the route (paused, or never sent) are over now.
        for utterance in list(self._utterances):
            at_route = any(s.utterance is utterance for s in self._segments)
            if not at_route:
                self._settle(utterance, utterance.heard, interrupted=True)

    def pause(self) -> None:
        """Pause playback: the avatar stops at once; the utterance waits to be resumed."""
        if self._paused:
            return
        self._paused = True
        if self._resume_task is not None:
            self._resume_task.cancel()
            self._resume_task = None
        if not self._avatar_route:
            self._route.pause()
            return
        self._stop_for_pause()

    def _stop_for_pause(self) -> None:
        """End and clear the avatar's segments of speech; their finish says where they stopped.

        The avatar has no pause of its own: this is the standard protocol's
        `lk.clear_buffer`, and `resume()` sends the rest as a new segment.
        """
        stopping = [
            s
            for s in self._segments
            if s.utterance is not None and not s.utterance.settled and not s.pausing
        ]
        if not stopping:
            return
        now = time.monotonic()
        for segment in stopping:
            segment.pausing = True
            segment.paused_at = now
            self._arm_clear_timer(segment)
        if self._open is not None:
            self._close_open()
        self._route.clear_buffer()

    def resume(self) -> None:
        """Resume: the rest of the utterance, from where it was heard, on the same route."""
        if not self._paused:
            return
        self._paused = False
        if not self._avatar_route:
            self._route.resume()
            return
        if self._resume_task is None or self._resume_task.done():
            self._resume_task = asyncio.create_task(self._resume(), name="protoface-resume")

    def on_attached(self) -> None:
        """Forwarded to the route."""
        self._attached = True
        self._route.on_attached()

    def on_detached(self) -> None:
        """Forwarded to the route."""
        self._attached = False
        self._route.on_detached()

    # -- sending ---------------------------------------------------------------

    async def _resume(self) -> None:
        # The avatar's answer to the pause gives the position to go on from.
        while any(s.pausing for s in self._segments):
            await self._pause_answered()
        for utterance in self._utterances:
            utterance.cursor = utterance.heard
        await self._drain()

    async def _pause_answered(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._pause_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._pause_waiters:
                self._pause_waiters.remove(waiter)

    async def _drain(self) -> None:
        """Send what the route has not had of the utterance being played."""
        async with self._send_lock:
            while True:
                if self._open is not None and self._open.utterance is not None:
                    # A replay or a resume sent the rest of an utterance already
                    # flushed: its segment ends here.
                    self._close_if_sent(self._open.utterance)
                utterance = self._sending()
                if utterance is None or self._held():
                    return
                found = utterance.frame_at(utterance.cursor)
                if found is None:
                    self._close_if_sent(utterance)
                    return
                frame, frame_end = found
                ahead = self._ahead(self._open)
                if ahead > 0:
                    # Paced (see `pace`); woken early by nothing: every change is re-read.
                    await asyncio.sleep(min(ahead, _PACE_STEP))
                    continue
                route = self._route
                first = self._open is None
                if first:
                    # Listed before the send: a route may report it started at once.
                    self._open = _Segment(utterance, utterance.cursor)
                    self._segments.append(self._open)
                segment = self._open
                assert segment is not None
                try:
                    sent = await self._send(route, frame)
                except BaseException:
                    if first and segment.sent == 0.0:
                        self._forget(segment)
                    raise
                if not sent:
                    continue  # the route changed under the send: start over on the new one
                segment.sent += frame.duration
                utterance.cursor = frame_end
                if self._paused and self._avatar_route and not segment.pausing:
                    # Paused while this frame was on its way: stopped like the rest.
                    self._stop_for_pause()
                if first:
                    self._sent(segment, route)

    def _ahead(self, segment: _Segment | None) -> float:
        """Seconds `segment` was sent beyond `pace`'s lead over what its avatar played."""
        if not self._avatar_route or segment is None or segment.sent_at is None:
            return 0.0
        began = segment.started_at if segment.started_at is not None else segment.sent_at
        played = time.monotonic() - began
        return segment.sent - played - self._lead

    def _sending(self) -> _Utterance | None:
        """The utterance whose audio goes to the route now (the oldest not fully sent)."""
        for utterance in self._utterances:
            if utterance.cleared:
                continue
            if utterance.cursor < utterance.captured - 1e-6 or not utterance.input_done:
                return utterance
        return None

    def _held(self) -> bool:
        # Paused on an avatar: nothing goes out until resume() knows where to go on from.
        # Not ready (no face yet): nothing goes out until it is, or the speech moves.
        return self._avatar_route and (
            self._paused or any(s.pausing for s in self._segments) or self.waiting_for_avatar
        )

    def _wait_for_face(self) -> None:
        """An utterance began while the avatar is not ready: it waits `wait_for_avatar` at most."""
        assert self._wait_for_avatar is not None
        if self._on_suspect is not None:
            self._on_suspect()  # the fallback gets ready while the utterance waits
        self._face_timer = asyncio.get_running_loop().call_later(
            self._wait_for_avatar, self._face_late
        )

    def _face_late(self) -> None:
        self._face_timer = None
        if self.waiting_for_avatar and self._utterances and self._on_not_ready is not None:
            logger.info(
                "the protoface avatar is not ready after %g s; the agent speaks on its own track "
                "until it is",
                self._wait_for_avatar,
            )
            self._on_not_ready()

    def _cancel_face_timer(self) -> None:
        if self._face_timer is not None:
            self._face_timer.cancel()
            self._face_timer = None

    async def _send(self, route: AudioOutput, frame: rtc.AudioFrame) -> bool:
        """Send `frame` to `route`; False if the route changed first (nothing was sent)."""
        # A route may wait (for its participant, or for an interruption's answer
        # from an avatar that is gone); a switch must not leave the utterance
        # stuck behind it.
        changed = self._route_changed
        capture = asyncio.ensure_future(route.capture_frame(frame))
        switched = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({capture, switched}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            capture.cancel()
            raise
        finally:
            switched.cancel()
        if capture.done() and route is self._route:
            capture.result()
            return True
        capture.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await capture
        return False

    def _close_if_sent(self, utterance: _Utterance) -> None:
        segment = self._open
        if (
            segment is not None
            and segment.utterance is utterance
            and utterance.input_done
            and utterance.cursor >= utterance.captured - 1e-6
        ):
            self._close_open()
        elif (
            segment is None
            and utterance.input_done
            and not self._held()
            and utterance.cursor >= utterance.captured - 1e-6
            and not any(s.utterance is utterance for s in self._segments)
        ):
            # Nothing of it ever reached a route (empty, or all of it was heard).
            self._settle(utterance, utterance.heard, interrupted=utterance.cleared)

    def _close_open(self) -> None:
        segment, self._open = self._open, None
        if segment is None:
            return
        with contextlib.suppress(Exception):
            self._route.flush()
        self._closed(segment, self._route)

    def _forget(self, segment: _Segment) -> None:
        """`segment` never reached the route: it will never be reported."""
        if segment in self._segments:
            self._segments.remove(segment)
        if self._open is segment:
            self._open = None

    def _drop_unsent(self, utterance: _Utterance) -> None:
        # Cancelled before the route saw any of it: settled here.
        self._capturing = None
        utterance.input_done = True
        self._settle(utterance, 0.0, interrupted=True)

    # -- watching the avatar answer ------------------------------------------

    def _sent(self, segment: _Segment, route: AudioOutput) -> None:
        """The first frame of `segment` reached the route: the avatar must acknowledge it."""
        segment.sent_at = time.monotonic()
        if not self._avatar_route or segment.started_at is not None or segment.pausing:
            return
        loop = asyncio.get_running_loop()
        if self._on_suspect is not None:
            suspect_after = min(SUSPECT_AFTER, self._ack_timeout)
            segment.timers.append(loop.call_later(suspect_after, self._suspect, segment))
        if not self._acks_expected:
            return
        segment.timers.append(
            loop.call_later(
                self._ack_timeout,
                self._unanswered,
                route,
                f"no lk.playback_started within {self._ack_timeout:g} s of a segment",
            )
        )

    def _closed(self, segment: _Segment, route: AudioOutput) -> None:
        segment.closed_at = time.monotonic()
        self._arm_finish_timer(segment, route)

    def _arm_finish_timer(self, segment: _Segment, route: AudioOutput) -> None:
        # Without acknowledgements from this avatar, it started when it was sent.
        started_at = segment.started_at if self._acks_expected else segment.sent_at
        if not self._avatar_route or started_at is None or segment.closed_at is None:
            return
        if segment.pausing or segment.clearing:
            return
        ends_at = max(started_at + segment.sent, segment.closed_at)
        delay = max(0.0, ends_at - time.monotonic()) + self._finish_grace
        segment.timers.append(
            asyncio.get_running_loop().call_later(
                delay,
                self._unanswered,
                route,
                f"no lk.playback_finished within {self._finish_grace:g} s of a segment's end",
            )
        )

    def _arm_clear_timer(self, segment: _Segment) -> None:
        segment.cancel_timers()
        if not self._avatar_route:
            return
        segment.timers.append(
            asyncio.get_running_loop().call_later(
                self._finish_grace, self._clear_unanswered, self._route, segment
            )
        )

    def _suspect(self, segment: _Segment) -> None:
        if segment.started_at is None and self._on_suspect is not None:
            self._on_suspect()

    def _clear_unanswered(self, route: AudioOutput, segment: _Segment) -> None:
        if route is not self._route or segment not in self._segments:
            return
        utterance = segment.utterance
        if segment.pausing and utterance is not None:
            # The avatar never said where it stopped: go on from where it would have.
            utterance.heard = max(utterance.heard, self._estimate_heard(segment))
            segment.pausing = False
            self._segments.remove(segment)
            self._wake_pause_waiters()
            if utterance.cleared:
                self._settle(utterance, utterance.heard, interrupted=True)
        elif utterance is not None and not utterance.settled:
            self._settle(utterance, self._estimate_heard(segment), interrupted=True)
        self._unanswered(
            route, f"no lk.playback_finished within {self._finish_grace:g} s of lk.clear_buffer"
        )

    def _unanswered(self, route: AudioOutput, what: str) -> None:
        if route is not self._route or self._unanswered_reported:
            return
        self._unanswered_reported = True
        logger.warning("the protoface avatar stopped answering: %s", what)
        if self._on_unanswered is not None:
            self._on_unanswered(route, what)

    def _estimate_heard(self, segment: _Segment) -> float:
        """How far a listener got in `segment`, had it played on since it started."""
        if segment.started_at is None:
            return segment.base  # never acknowledged: nobody heard it
        until = min(
            time.monotonic(),
            segment.paused_at if segment.paused_at is not None else math.inf,
            self._silent_since if self._silent_since is not None else math.inf,
        )
        played = min(segment.sent, max(0.0, until - segment.started_at))
        return segment.base + played

    # -- switching routes ------------------------------------------------------

    def _apply(self, route: AudioOutput, avatar_route: bool, ready: bool) -> None:
        old = self._route
        if route is old:
            return
        self._unlisten(old)
        if self._open is not None:
            # Close the old route's stream; it is not asked to clear: every switch
            # made now is away from an avatar that is gone or stopped answering
            # (its RPC would only time out), and its session is being ended.
            with contextlib.suppress(Exception):
                old.flush()
        # What a listener last heard of each utterance in flight: it goes on
        # from there in the new route (all of it, if the old one never played it).
        for segment in self._segments:
            segment.cancel_timers()
            utterance = segment.utterance
            if utterance is not None and not utterance.settled:
                utterance.heard = max(utterance.heard, self._estimate_heard(segment))
        spare = self._spare_keepalives.pop(id(route), None)
        # Keep-alives still in flight to the new route: its answers to them come first.
        self._segments = spare.close() if spare is not None else []
        self._started = sum(1 for s in self._segments if s.started_at is not None)
        self._open = None
        self._cancel_face_timer()
        self._wake_pause_waiters()
        pending = [u for u in self._utterances if not u.cleared]
        for utterance in pending[:-1]:
            # Only the newest utterance is worth finishing; older ones are over.
            self._settle(utterance, utterance.heard, interrupted=True)
        for utterance in self._utterances:
            utterance.cursor = utterance.heard
        if self._attached:
            old.on_detached()
            route.on_attached()
        self._route, self._avatar_route, self._route_ready = route, avatar_route, ready
        self._unanswered_reported = False
        self._acks_expected = True
        self._silent_since = None
        self._listen(route)
        self._route_changed.set()
        self._route_changed = asyncio.Event()
        if self._paused and not avatar_route:
            route.pause()
        for utterance in [u for u in self._utterances if u.cleared]:
            self._settle(utterance, utterance.heard, interrupted=True)
        if self._utterances and not self._held():
            replay = asyncio.ensure_future(self._drain())
            replay.add_done_callback(_log_replay_failure)
        elif self._utterances and self.waiting_for_avatar:
            self._wait_for_face()
        self._boundary_reached()

    def _listen(self, route: AudioOutput) -> None:
        route.on("playback_started", self._on_route_started)
        route.on("playback_finished", self._on_route_finished)

    def _unlisten(self, route: AudioOutput) -> None:
        route.off("playback_started", self._on_route_started)
        route.off("playback_finished", self._on_route_finished)

    def _on_route_started(self, ev: PlaybackStartedEvent) -> None:
        if self._started >= len(self._segments):
            return
        segment = self._segments[self._started]
        self._started += 1
        segment.cancel_timers()
        segment.started_at = time.monotonic()
        self._arm_finish_timer(segment, self._route)
        utterance = segment.utterance
        if utterance is not None and not utterance.started and not utterance.settled:
            utterance.started = True
            self.on_playback_started(created_at=ev.created_at)

    def _on_route_finished(self, ev: PlaybackFinishedEvent) -> None:
        if not self._segments:
            return
        segment = self._segments.pop(0)
        self._started = max(0, self._started - 1)
        segment.cancel_timers()
        if segment.started_at is None and not (segment.pausing or segment.clearing):
            self._no_acknowledgements()
        utterance = segment.utterance
        if utterance is None or utterance.settled:
            return
        position = segment.base + ev.playback_position
        if segment.pausing:
            utterance.heard = min(position, utterance.captured)
            self._wake_pause_waiters()
            if utterance.cleared:
                self._settle(utterance, utterance.heard, interrupted=True)
            return
        if self._open is segment:
            self._open = None  # the avatar ended it (it stopped waiting for more)
        self._settle(utterance, position, interrupted=ev.interrupted or utterance.cleared)

    def _no_acknowledgements(self) -> None:
        """The avatar played a segment without saying it started: it does not send them.

        Then a missing `lk.playback_started` says nothing; its finishes and its
        media still tell whether it is there.
        """
        if self._acks_expected:
            self._acks_expected = False
            logger.warning(
                "the protoface avatar does not send lk.playback_started; a worker that dies "
                "is noticed from its unfinished segments and its media only"
            )

    def _wake_pause_waiters(self) -> None:
        for waiter in self._pause_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _settle(self, utterance: _Utterance, position: float, *, interrupted: bool) -> None:
        if utterance.settled:
            return
        utterance.settled = True
        utterance.frames = []
        if utterance in self._utterances:
            self._utterances.remove(utterance)
        if self._capturing is utterance:
            self._capturing = None
        self._last_activity = time.monotonic()
        self.on_playback_finished(playback_position=position, interrupted=interrupted)
        self._boundary_reached()

    def _boundary_reached(self) -> None:
        if self.speaking:
            return
        pending, self._pending_switch = self._pending_switch, None
        if pending is not None:
            self._apply(*pending)
            return
        self._boundary.set()


def _silence(rate: int) -> rtc.AudioFrame:
    samples = rate * _KEEPALIVE_MS // 1000
    return rtc.AudioFrame(bytes(samples * 2), rate, 1, samples)


def _log_replay_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "could not replay the agent's speech to its new route", exc_info=task.exception()
        )


class DiscardAudio(AudioOutput):
    """A sink that plays nothing: each utterance is over (interrupted) as soon as it is flushed.

    Where speech goes when the avatar is lost and `audio_fallback=False`: the
    agent session's `wait_for_playout()` must not wait for an avatar that is gone.
    """

    def __init__(self) -> None:
        """A sink that drops every frame."""
        super().__init__(
            label="ProtofaceDiscard", capabilities=AudioOutputCapabilities(pause=False)
        )
        self._open = False
        self._pending = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Drop `frame`."""
        if not self._open:
            self._open = True
            self._pending += 1
        await super().capture_frame(frame)

    def flush(self) -> None:
        """End the utterance: it is reported finished, interrupted, at once."""
        super().flush()
        if self._open:
            self._open = False
            self._finish()

    def clear_buffer(self) -> None:
        """Nothing plays: an utterance still open is over now."""
        if self._open:
            self._open = False
            self._finish()

    def _finish(self) -> None:
        while self._pending > 0:
            self._pending -= 1
            self.on_playback_finished(playback_position=0.0, interrupted=True)

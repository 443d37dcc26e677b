"""Sending the ledger of the agent's speech to the current route, paced.

`LedgerSender` is the lower half of `output.AvatarAudioOutput`: it captures
the agent session's frames into the ledger (`ledger.py`), forwards them to the
route one segment per utterance (again from where it was heard, after a pause
or a switch), keeps an avatar no more than `pace`'s lead ahead of its
playback, and settles each utterance once. Whether something may go out now,
and what happens at a boundary, are the upper half's (`_held`, `_at_boundary`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from livekit import rtc
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities

from .ledger import Ledger, Segment, Utterance
from .log import logger
from .routes import SEND_TIMEOUT, silence
from .watchdog import Watchdog

__all__ = ["LedgerSender"]

_PACE_STEP = 0.1  # how often a paced send looks again


class LedgerSender(AudioOutput):
    """Forwards the ledger's utterances to one route at a time.

    Args:
        route: The first route.
        sample_rate: The rate the agent session sends.
        avatar_route: `route` is an avatar's.
        watchdog: Watches the route answer (`watchdog.py`).
    """

    def __init__(
        self, route: AudioOutput, *, sample_rate: int, avatar_route: bool, watchdog: Watchdog
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
        self._route_changed = asyncio.Event()  # set (and replaced) when the route changes
        self._watchdog = watchdog
        self._ledger = Ledger()
        self._lead = math.inf  # see `pace`
        self._send_lock = asyncio.Lock()  # one writer to the route at a time
        self._last_activity = time.monotonic()
        self._boundary = asyncio.Event()
        self._boundary.set()

    @property
    def speaking(self) -> bool:
        """Whether an utterance is being captured or still playing."""
        return bool(self._ledger.utterances)

    def pace(self, lead: float) -> None:
        """Send an avatar at most `lead` seconds of speech ahead of what it has played.

        The hosted idle timeout counts received audio: an answer handed over
        all at once, longer than the timeout, would end the session while the
        avatar still plays it. Paced, the avatar keeps receiving until the end.
        """
        self._lead = lead

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
            frame = silence(self.sample_rate or 16000)
            segment = Segment(None, 0.0, sent=frame.duration)
            self._ledger.segments.append(segment)
            try:
                await asyncio.wait_for(route.capture_frame(frame), SEND_TIMEOUT)
                if route is not self._route:
                    return False
                route.flush()
            except Exception as exc:
                self._ledger.forget(segment)
                logger.debug("could not send a keep-alive to the avatar: %s", exc)
                return False
            self._watchdog.sent(segment)
            self._watchdog.closed(segment)
        self._last_activity = time.monotonic()
        return True

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Capture a frame of the current utterance and forward it to the route."""
        utterance = self._ledger.capturing
        if utterance is None:
            async with self._send_lock:  # a keep-alive in flight completes first
                utterance = self._ledger.begin()
                self._boundary.clear()
        await super().capture_frame(frame)
        utterance.frames.append(frame)
        utterance.captured += frame.duration
        self._last_activity = time.monotonic()
        self._captured(utterance)
        try:
            await self._drain()
            await self._wait_to_capture()
        except asyncio.CancelledError:
            if utterance.cursor == 0.0 and not self._ledger.at_route(utterance):
                # Cancelled before the route saw any of it: settled here.
                self._ledger.capturing = None
                utterance.input_done = True
                self._settle(utterance, 0.0, interrupted=True)
            raise

    def flush(self) -> None:
        """End the current utterance."""
        super().flush()
        utterance, self._ledger.capturing = self._ledger.capturing, None
        if utterance is None:
            return
        utterance.input_done = True
        self._close_if_sent(utterance)

    async def _drain(self) -> None:
        """Send what the route has not had of the utterance being played."""
        ledger = self._ledger
        async with self._send_lock:
            while True:
                if ledger.open is not None and ledger.open.utterance is not None:
                    # A replay or a resume sent the rest of an utterance already
                    # flushed: its segment ends here.
                    self._close_if_sent(ledger.open.utterance)
                utterance = ledger.sending()
                if utterance is None or self._held():
                    return
                found = utterance.frame_at(utterance.cursor)
                if found is None:
                    self._close_if_sent(utterance)
                    return
                ahead = self._ahead(ledger.open)
                if ahead > 0:
                    # Paced (see `pace`); every change is read again after the wait.
                    await asyncio.sleep(min(ahead, _PACE_STEP))
                    continue
                await self._send_next(utterance, *found)

    async def _send_next(self, utterance: Utterance, frame: rtc.AudioFrame, end: float) -> None:
        """Send `frame` of `utterance` (ending at `end`) in the open segment, or a new one."""
        route = self._route
        first = self._ledger.open is None
        segment = self._ledger.open or self._ledger.open_segment(utterance)
        try:
            sent = await self._send(route, frame)
        except BaseException:
            if first and segment.sent == 0.0:
                self._ledger.forget(segment)
            raise
        if not sent:
            return  # the route changed under the send: the caller starts over on the new one
        segment.sent += frame.duration
        utterance.cursor = end
        self._frame_sent(segment)
        if first:
            self._watchdog.sent(segment)

    def _ahead(self, segment: Segment | None) -> float:
        """Seconds `segment` was sent beyond `pace`'s lead over what its avatar played."""
        if not self._avatar_route or segment is None or segment.sent_at is None:
            return 0.0
        began = segment.started_at if segment.started_at is not None else segment.sent_at
        return segment.sent - (time.monotonic() - began) - self._lead

    async def _wait_to_capture(self) -> None:
        """Wait before the session's next frame is taken, if it must (see the subclass)."""

    def _held(self) -> bool:
        """Whether nothing may go to the route now (see the subclass)."""
        return False

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

    def _close_if_sent(self, utterance: Utterance) -> None:
        segment = self._ledger.open
        if segment is not None and segment.utterance is utterance and utterance.fully_sent:
            self._close_open()
        elif (
            segment is None
            and utterance.fully_sent
            and not self._held()
            and not self._ledger.at_route(utterance)
        ):
            # Nothing of it ever reached a route (empty, or all of it was heard).
            self._settle(utterance, utterance.heard, interrupted=utterance.cleared)

    def _close_open(self) -> None:
        segment, self._ledger.open = self._ledger.open, None
        if segment is None:
            return
        with contextlib.suppress(Exception):
            self._route.flush()
        self._watchdog.closed(segment)

    def _replay(self) -> None:
        task = asyncio.ensure_future(self._drain())
        task.add_done_callback(_log_replay_failure)

    def _settle(self, utterance: Utterance, position: float, *, interrupted: bool) -> None:
        if utterance.settled:
            return
        utterance.settled = True
        self._ledger.remove(utterance)
        self._last_activity = time.monotonic()
        self.on_playback_finished(playback_position=position, interrupted=interrupted)
        self._boundary_reached()

    def _boundary_reached(self) -> None:
        if self.speaking:
            return
        if not self._at_boundary():
            self._boundary.set()

    # -- the upper half's hooks ---------------------------------------------------

    def _captured(self, utterance: Utterance) -> None:
        """A frame of `utterance` was captured (before it is sent)."""

    def _frame_sent(self, segment: Segment) -> None:
        """A frame of `segment` reached the route."""

    def _at_boundary(self) -> bool:
        """No utterance is in flight: True if a switch was applied (the boundary moves on)."""
        return False


def _log_replay_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "could not replay the agent's speech to its new route", exc_info=task.exception()
        )

"""`AvatarAudioOutput`: the agent's audio sink for the whole conversation.

The agent session gets this one sink at `start()` and keeps it; underneath, it
routes each utterance to the current avatar (a `DataStreamAudioOutput`) or to
the room (`fallback.RoomAudio`). Routes change in two ways:

- `switch(route, at_boundary=True)`: between utterances, never mid-sentence
  (an avatar restored, a successor taking over at the session cap);
- `switch(route, at_boundary=False)`: now (the avatar is gone). An utterance
  in flight goes on in the new route; one the old route held but never
  finished is settled as interrupted, so `wait_for_playout()` cannot hang on
  an avatar that is not coming back.

It also keeps the hosted session from idling out while the agent listens:
`keep_alive()` sends a few milliseconds of silence to the avatar when nothing
was said for a while (the hosted idle timeout counts received audio). Those
segments never reach the agent session's playback accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from livekit import rtc
from livekit.agents.voice.io import (
    AudioOutput,
    AudioOutputCapabilities,
    PlaybackFinishedEvent,
    PlaybackStartedEvent,
)

from .log import logger

__all__ = ["AvatarAudioOutput"]

_SPEECH = "speech"
_KEEPALIVE = "keepalive"
_KEEPALIVE_MS = 20
_KEEPALIVE_SEND_TIMEOUT = 5.0
_KINDS_KEPT = 256


class AvatarAudioOutput(AudioOutput):
    """Routes the agent's utterances to the avatar, or to the room when there is none."""

    def __init__(self, route: AudioOutput, *, sample_rate: int, avatar_route: bool) -> None:
        """Start with `route`; `avatar_route` says whether keep-alives may go to it."""
        super().__init__(
            label="ProtofaceAvatar",
            capabilities=AudioOutputCapabilities(pause=False),
            next_in_chain=None,
            sample_rate=sample_rate,
        )
        self._route = route
        self._avatar_route = avatar_route
        self._route_ready = False
        self._route_changed = asyncio.Event()
        self._pending_switch: tuple[AudioOutput, bool, bool] | None = None
        self._attached = False
        # Segments sent to the current route, in order: what each one is, and
        # how many have started / finished there. The route reports them in order.
        self._kinds: list[str] = []
        self._started = 0
        self._finished = 0
        self._capturing = False
        self._own_pending = 0  # our segments (speech) the agent session waits for
        self._pushed = 0.0  # duration captured in the current utterance
        self._forwarded = 0  # frames of it the current route accepted
        self._offset = 0.0  # part of it sent to an earlier route
        self._last_activity = time.monotonic()
        self._segment_lock = asyncio.Lock()  # a keep-alive and an utterance never interleave
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
        return self._capturing or self._own_pending > 0

    def mark_route_ready(self, route: AudioOutput) -> None:
        """`route` can take audio without waiting (its avatar publishes video)."""
        if route is self._route:
            self._route_ready = True

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
        async with self._segment_lock:
            if self.speaking:
                return False
            route = self._route
            rate = self.sample_rate or 16000
            samples = rate * _KEEPALIVE_MS // 1000
            frame = rtc.AudioFrame(bytes(samples * 2), rate, 1, samples)
            self._kinds.append(_KEEPALIVE)
            try:
                await asyncio.wait_for(route.capture_frame(frame), _KEEPALIVE_SEND_TIMEOUT)
                route.flush()
            except Exception as exc:
                logger.debug("could not send a keep-alive to the avatar: %s", exc)
                return False
        self._last_activity = time.monotonic()
        return True

    # -- AudioOutput ---------------------------------------------------------

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Capture a frame of the current utterance and forward it to the route."""
        if not self._capturing:
            async with self._segment_lock:  # a keep-alive in flight completes first
                self._capturing = True
                self._own_pending += 1
                self._pushed = self._offset = 0.0
                self._forwarded = 0
                self._kinds.append(_SPEECH)
        await super().capture_frame(frame)
        self._pushed += frame.duration
        self._last_activity = time.monotonic()
        await self._forward(frame)

    def flush(self) -> None:
        """End the current utterance."""
        super().flush()
        if not self._capturing:
            return
        self._capturing = False
        self._route.flush()

    def clear_buffer(self) -> None:
        """Stop the current utterance now (the agent was interrupted)."""
        self._route.clear_buffer()

    def on_attached(self) -> None:
        """Forwarded to the route."""
        self._attached = True
        self._route.on_attached()

    def on_detached(self) -> None:
        """Forwarded to the route."""
        self._attached = False
        self._route.on_detached()

    # -- internals ---------------------------------------------------------

    async def _forward(self, frame: rtc.AudioFrame) -> None:
        if self._route_ready:
            await self._route.capture_frame(frame)
            self._forwarded += 1
            return
        # The route may wait for its participant; a switch must not leave the
        # utterance stuck behind an avatar that is gone.
        while True:
            changed = self._route_changed
            capture = asyncio.ensure_future(self._route.capture_frame(frame))
            switched = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({capture, switched}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                capture.cancel()
                if self._forwarded == 0:
                    self._drop_unsent_segment()
                raise
            finally:
                switched.cancel()
            if capture.done():
                capture.result()
                self._forwarded += 1
                return
            capture.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await capture

    def _drop_unsent_segment(self) -> None:
        # Cancelled before the route saw any of it: the route will never report
        # it, so it is settled here and forgotten in the route's order.
        if self._kinds and self._kinds[-1] == _SPEECH and len(self._kinds) > self._finished:
            self._kinds.pop()
        self._capturing = False
        if self._own_pending > 0:
            self._settle(0.0, interrupted=True)

    def _apply(self, route: AudioOutput, avatar_route: bool, ready: bool) -> None:
        old = self._route
        if route is old:
            return
        self._unlisten(old)
        if self._capturing:
            # Whatever the old route holds of this utterance is lost with it; the
            # rest of the utterance plays through the new one.
            with contextlib.suppress(Exception):
                old.flush()
                old.clear_buffer()
            self._offset = self._pushed
        self._kinds = [_SPEECH] if self._capturing else []
        self._started = self._finished = 0
        if not self._capturing:
            # Flushed to the old route but never finished there: it never will be.
            while self._own_pending > 0:
                self._settle(self._pushed, interrupted=True)
        if self._attached:
            old.on_detached()
            route.on_attached()
        self._route, self._avatar_route, self._route_ready = route, avatar_route, ready
        self._forwarded = 0
        self._listen(route)
        self._route_changed.set()
        self._route_changed = asyncio.Event()
        self._boundary_reached()

    def _listen(self, route: AudioOutput) -> None:
        route.on("playback_started", self._on_route_started)
        route.on("playback_finished", self._on_route_finished)

    def _unlisten(self, route: AudioOutput) -> None:
        route.off("playback_started", self._on_route_started)
        route.off("playback_finished", self._on_route_finished)

    def _on_route_started(self, ev: PlaybackStartedEvent) -> None:
        index = max(self._started, self._finished)
        if index >= len(self._kinds):
            return
        self._started = index + 1
        if self._kinds[index] == _SPEECH:
            self.on_playback_started(created_at=ev.created_at)

    def _on_route_finished(self, ev: PlaybackFinishedEvent) -> None:
        index = self._finished
        if index >= len(self._kinds):
            return
        kind = self._kinds[index]
        self._finished = index + 1
        self._started = max(self._started, self._finished)
        if self._finished > _KINDS_KEPT:
            # An hour-long call sends thousands of segments; keep only what is open.
            del self._kinds[: self._finished]
            self._started -= self._finished
            self._finished = 0
        if kind == _SPEECH and self._own_pending > 0:
            self._settle(self._offset + ev.playback_position, interrupted=ev.interrupted)

    def _settle(self, position: float, *, interrupted: bool) -> None:
        self._own_pending -= 1
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
        """Nothing plays, so nothing to clear; a flushed utterance is already over."""

    def _finish(self) -> None:
        while self._pending > 0:
            self._pending -= 1
            self.on_playback_finished(playback_position=0.0, interrupted=True)

"""The routes the agent's speech may take, besides the current one.

A replacement, a successor or a switch target joins while the current avatar
still speaks, and may wait long for an utterance boundary: its own idle
timeout must not end it meanwhile. `SpareKeepAlives` sends each such avatar a
moment of silence now and then and counts its answers itself until it becomes
the route; then the answers still owed are handed over (`take`), so they are
matched to the right segments and never reach the agent session.
"""

from __future__ import annotations

import asyncio
import time

from livekit import rtc
from livekit.agents.voice.io import AudioOutput, PlaybackFinishedEvent, PlaybackStartedEvent

from .ledger import Segment
from .log import logger

__all__ = ["KEEPALIVE_MS", "SpareKeepAlives", "silence"]

KEEPALIVE_MS = 20
"""Length of a keep-alive: a moment of silence the avatar plays unseen."""
SEND_TIMEOUT = 5.0


def silence(rate: int) -> rtc.AudioFrame:
    """A keep-alive's frame at `rate`."""
    samples = rate * KEEPALIVE_MS // 1000
    return rtc.AudioFrame(bytes(samples * 2), rate, 1, samples)


class _Spare:
    """The keep-alives in flight to one avatar that does not speak for the agent yet."""

    def __init__(self, route: AudioOutput) -> None:
        self.route = route
        self.pending: list[Segment] = []
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

    def close(self) -> list[Segment]:
        self.route.off("playback_started", self._started)
        self.route.off("playback_finished", self._finished)
        pending, self.pending = self.pending, []
        return pending


class SpareKeepAlives:
    """Keep-alives for the avatars that wait to speak, and their answers still owed."""

    def __init__(self) -> None:
        self._spares: dict[int, _Spare] = {}

    async def send(self, route: AudioOutput, rate: int) -> bool:
        """Send a keep-alive to `route`; False if it could not be sent."""
        spare = self._spares.get(id(route))
        if spare is None:
            spare = self._spares[id(route)] = _Spare(route)
        segment = Segment(None, 0.0)
        spare.pending.append(segment)
        frame = silence(rate)
        try:
            await asyncio.wait_for(route.capture_frame(frame), SEND_TIMEOUT)
            route.flush()
        except Exception as exc:
            if segment in spare.pending:
                spare.pending.remove(segment)
            logger.debug("could not send a keep-alive to a waiting avatar: %s", exc)
            return False
        segment.sent = frame.duration
        return True

    def take(self, route: AudioOutput) -> list[Segment]:
        """`route` becomes the current one: the keep-alives it still owes answers for."""
        spare = self._spares.pop(id(route), None)
        return spare.close() if spare is not None else []

    def forget(self, route: AudioOutput) -> None:
        """`route` will never speak for the agent."""
        self.take(route)

"""The ledger of the agent's speech: its utterances, and the segments sent of them.

An utterance is what the agent session says between two `flush()`es (or an
interruption); every frame of it is kept until it is settled, so any part can
be sent again: after a pause, or to another route. A segment is one stream
sent to the current route: a part of an utterance, or a keep-alive (no
utterance). The route reports segments in order (`lk.playback_started`, then
`lk.playback_finished`), which is how each report is matched to its segment.

Plain data and bookkeeping only: no timers, no I/O. `output.AvatarAudioOutput`
moves the data; `watchdog.Watchdog` watches the route answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from livekit import rtc

__all__ = ["EPSILON", "Ledger", "Segment", "Utterance"]

EPSILON = 1e-6
"""Seconds below which two positions are the same (float sums of frame durations)."""


@dataclass(eq=False)
class Utterance:
    """One utterance of the agent: every frame of it, until it is settled."""

    frames: list[rtc.AudioFrame] = field(default_factory=list)
    captured: float = 0.0  # seconds captured so far
    input_done: bool = False  # the agent session flushed it
    heard: float = 0.0  # position a listener is known (or estimated) to have heard
    cursor: float = 0.0  # position up to which it was sent to the current route
    cleared: bool = False  # the agent session interrupted it
    started: bool = False  # playback_started reported to the agent session
    settled: bool = False

    @property
    def fully_sent(self) -> bool:
        """Whether all of it is captured and sent to the current route."""
        return self.input_done and self.cursor >= self.captured - EPSILON

    def frame_at(self, position: float) -> tuple[rtc.AudioFrame, float] | None:
        """The audio from `position` to the end of the frame holding it, and where that ends.

        None past the end of what was captured.
        """
        offset = 0.0
        for frame in self.frames:
            end = offset + frame.duration
            if position < end - EPSILON:
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
class Segment:
    """One stream sent to the current route: a part of an utterance, or a keep-alive."""

    utterance: Utterance | None  # None for a keep-alive
    base: float  # the utterance position its first frame is at
    sent: float = 0.0
    sent_at: float | None = None  # monotonic, when its first frame reached the route
    closed_at: float | None = None  # monotonic, when flushed to the route
    started_at: float | None = None  # monotonic, when the avatar acknowledged it
    pausing: bool = False  # ended by pause(): its finish is not the utterance's
    paused_at: float | None = None  # monotonic, when pause() stopped it
    clearing: bool = False  # cleared by the agent session; the answer is awaited
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def speech(self) -> bool:
        """Whether it carries the agent's speech (not a keep-alive) still in play."""
        return self.utterance is not None and not self.utterance.settled

    def cancel_timers(self) -> None:
        """Cancel what was armed to watch this segment."""
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class Ledger:
    """The utterances not settled yet, and the segments the current route has not finished."""

    def __init__(self) -> None:
        # Oldest first; only the last may be capturing.
        self.utterances: list[Utterance] = []
        self.capturing: Utterance | None = None
        # Sent to the current route, in order; it reports them in order.
        self.segments: list[Segment] = []
        self.started = 0  # how many of `segments` reported started
        self.open: Segment | None = None  # the one being written

    def begin(self) -> Utterance:
        """A new utterance, capturing from now on."""
        utterance = self.capturing = Utterance()
        self.utterances.append(utterance)
        return utterance

    def sending(self) -> Utterance | None:
        """The utterance whose audio goes to the route now (the oldest not fully sent)."""
        for utterance in self.utterances:
            if not utterance.cleared and not utterance.fully_sent:
                return utterance
        return None

    def at_route(self, utterance: Utterance) -> bool:
        """Whether a segment of `utterance` is at the route, unfinished."""
        return any(s.utterance is utterance for s in self.segments)

    def open_segment(self, utterance: Utterance) -> Segment:
        """Start a segment of `utterance` at its cursor (listed first: it may start at once)."""
        segment = self.open = Segment(utterance, utterance.cursor)
        self.segments.append(segment)
        return segment

    def forget(self, segment: Segment) -> None:
        """`segment` never reached the route: it will never be reported."""
        if segment in self.segments:
            self.segments.remove(segment)
        if self.open is segment:
            self.open = None

    def next_to_start(self) -> Segment | None:
        """The segment the route's next `playback_started` is about, counted as started."""
        if self.started >= len(self.segments):
            return None
        segment = self.segments[self.started]
        self.started += 1
        return segment

    def next_to_finish(self) -> Segment | None:
        """The segment the route's next `playback_finished` is about, taken off the list."""
        if not self.segments:
            return None
        self.started = max(0, self.started - 1)
        segment = self.segments.pop(0)
        if self.open is segment:
            self.open = None  # the route ended it (it stopped waiting for more)
        return segment

    def new_route(self, in_flight: list[Segment]) -> None:
        """The route changed: it owes answers for `in_flight` (its keep-alives) only."""
        self.segments = in_flight
        self.started = sum(1 for s in in_flight if s.started_at is not None)
        self.open = None

    def remove(self, utterance: Utterance) -> None:
        """`utterance` is settled: it leaves the ledger."""
        utterance.frames = []
        if utterance in self.utterances:
            self.utterances.remove(utterance)
        if self.capturing is utterance:
            self.capturing = None

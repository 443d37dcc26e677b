"""`audio_source="track"`: a participant's microphone track as the avatar's speech.

Supported minimally: the worker listens to the microphone track of
`subscribe_to_identity`, re-publishes it lip-synced, and splits it into segments
at 0.3 s of silence; there is no playback protocol since nobody sends one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc
from livekit.agents.utils import wait_for_participant
from livekit.agents.voice.avatar import (
    AudioReceiver,
    AudioSegmentEnd,
)

from .levels import audio_level

__all__ = ["TrackAudioReceiver"]

_TRACK_SEGMENT_SILENCE = 0.3


class TrackAudioReceiver(AudioReceiver):
    """`audio_source="track"`: a participant's microphone track as speech segments.

    Frames are forwarded while there is sound and for `_TRACK_SEGMENT_SILENCE`
    after it; then the segment ends and silence is dropped until sound returns,
    so the avatar's audio and mouth rest like they do with data streams. There is
    no sender to tell about playback, so the notifications go nowhere.
    """

    def __init__(
        self, room: rtc.Room, identity: str | None, *, sample_rate: int, num_channels: int
    ) -> None:
        super().__init__()
        self._room = room
        self._identity = identity
        self._sample_rate = sample_rate
        self._num_channels = num_channels
        self._stream: rtc.AudioStream | None = None

    async def start(self) -> None:
        """Wait for the participant (None: the first to join), then listen to its microphone."""
        participant = await wait_for_participant(room=self._room, identity=self._identity)
        self._stream = rtc.AudioStream.from_participant(
            participant=participant,
            track_source=rtc.TrackSource.SOURCE_MICROPHONE,
            sample_rate=self._sample_rate,
            num_channels=self._num_channels,
            frame_size_ms=50,
        )

    def notify_playback_started(self) -> None:
        """Nobody to notify for a track."""

    def notify_playback_finished(self, playback_position: float, interrupted: bool) -> None:
        """Nobody to notify for a track."""

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        """Speech frames, with `AudioSegmentEnd` after each pause."""
        return self._segments()

    async def _segments(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        if self._stream is None:
            raise RuntimeError("start() first")
        silent_for: float | None = None  # None: not in a segment
        async for event in self._stream:
            frame = event.frame
            if audio_level(np.frombuffer(frame.data, dtype=np.int16)) > 0.0:
                silent_for = 0.0
            elif silent_for is None:
                continue
            else:
                silent_for += frame.duration
                if silent_for >= _TRACK_SEGMENT_SILENCE:
                    silent_for = None
                    yield AudioSegmentEnd()
                    continue
            yield frame

    async def aclose(self) -> None:
        """Stop listening."""
        if self._stream is not None:
            await self._stream.aclose()

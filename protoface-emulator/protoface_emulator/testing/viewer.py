"""A viewer: a real LiveKit participant that watches an avatar and measures its mouth.

The end-to-end tests, the offline demo and the benchmarks all look at the avatar
the way a person in the room would: through the video and audio tracks that the
avatar publishes. This module subscribes to them and keeps, per received video
frame, how much the mouth region moved and whether the mouth is open, and per
received audio frame, how loud it was. It knows where the mouth is from
`face.mouth_box`, and what a closed mouth looks like from `face.FaceRenderer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from livekit import rtc

from .face import FaceRenderer, audio_level, mouth_box

__all__ = ["AudioSample", "AvatarViewer", "VideoSample"]

# Mean absolute difference (0..255) from the closed-mouth picture above which the
# mouth counts as open. Video coding noise on a still closed mouth stays well
# under it; the smallest opening the face draws is well over it.
MOUTH_OPEN_THRESHOLD = 6.0
MIN_FACE_SIZE = 32


@dataclass(frozen=True)
class VideoSample:
    """One received avatar video frame."""

    received_at: float  # time.monotonic()
    mouth_motion: float  # mean |change| of the mouth region since the previous frame
    mouth_openness: float  # mean |difference| of the mouth region from a closed mouth

    @property
    def mouth_open(self) -> bool:
        """Whether the mouth is visibly open in this frame."""
        return self.mouth_openness > MOUTH_OPEN_THRESHOLD


@dataclass(frozen=True)
class AudioSample:
    """One received avatar audio frame."""

    received_at: float  # time.monotonic()
    duration: float  # seconds of audio in the frame
    level: float  # 0..1, as `face.audio_level` reads it


@dataclass
class AvatarViewer:
    """Subscribes to one participant's video and audio and measures what arrives.

    Args:
        avatar_identity: The participant whose tracks to watch (the avatar worker).
        keep_every: Keep a full RGB copy of every Nth video frame in `snapshots`
            (0 keeps none), for contact sheets.
    """

    avatar_identity: str
    keep_every: int = 0
    room: rtc.Room = field(default_factory=rtc.Room)
    video: list[VideoSample] = field(default_factory=list)
    audio: list[AudioSample] = field(default_factory=list)
    snapshots: list[tuple[float, npt.NDArray[np.uint8]]] = field(default_factory=list)
    video_size: tuple[int, int] | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _first_video: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, url: str, token: str) -> None:
        """Join the room and start recording the avatar's tracks once they appear."""
        self.room.on("track_subscribed", self._on_track_subscribed)
        await self.room.connect(url, token)

    @property
    def first_video_at(self) -> float | None:
        """`time.monotonic()` when the first avatar video frame arrived, if one has."""
        return self.video[0].received_at if self.video else None

    async def wait_first_video(self, timeout: float) -> float:
        """Wait for the first avatar video frame; returns its arrival time."""
        await asyncio.wait_for(self._first_video.wait(), timeout)
        assert self.video
        return self.video[0].received_at

    def video_between(self, start: float, end: float) -> list[VideoSample]:
        """The video frames that arrived within [start, end)."""
        return [s for s in self.video if start <= s.received_at < end]

    def audio_seconds(self, *, min_level: float = 0.0) -> float:
        """Seconds of avatar audio received (louder than `min_level` when given)."""
        return sum(s.duration for s in self.audio if s.level > min_level)

    async def aclose(self) -> None:
        """Stop recording and leave the room."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.room.disconnect()

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if participant.identity != self.avatar_identity:
            return
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self._spawn(self._record_video(track))
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(self._record_audio(track))

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record_video(self, track: rtc.Track) -> None:
        stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA)
        previous: npt.NDArray[np.int16] | None = None
        closed: npt.NDArray[np.int16] | None = None
        box = (0, 0, 0, 0)
        index = 0
        try:
            async for event in stream:
                now = time.monotonic()
                frame = event.frame
                if frame.width < MIN_FACE_SIZE or frame.height < MIN_FACE_SIZE:
                    continue  # a placeholder layer while the track starts or stops
                if self.video_size != (frame.width, frame.height):
                    self.video_size = (frame.width, frame.height)
                    box = mouth_box(frame.width, frame.height)
                    closed = _mouth_region(
                        FaceRenderer(frame.width, frame.height, 25, blink=False).render(0.0), box
                    )
                    previous = None
                rgba = np.frombuffer(frame.data, dtype=np.uint8).reshape(
                    frame.height, frame.width, 4
                )
                mouth = _mouth_region(rgba, box)
                assert closed is not None
                motion = 0.0 if previous is None else float(np.mean(np.abs(mouth - previous)))
                openness = float(np.mean(np.abs(mouth - closed)))
                self.video.append(VideoSample(now, motion, openness))
                previous = mouth
                if self.keep_every and index % self.keep_every == 0:
                    self.snapshots.append((now, rgba[:, :, :3].copy()))
                index += 1
                self._first_video.set()
        finally:
            await stream.aclose()

    async def _record_audio(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track)
        try:
            async for event in stream:
                frame = event.frame
                samples = np.frombuffer(frame.data, dtype=np.int16)
                self.audio.append(
                    AudioSample(
                        received_at=time.monotonic(),
                        duration=frame.samples_per_channel / frame.sample_rate,
                        level=audio_level(samples),
                    )
                )
        finally:
            await stream.aclose()


def _mouth_region(
    rgba: npt.NDArray[np.uint8], box: tuple[int, int, int, int]
) -> npt.NDArray[np.int16]:
    x0, y0, x1, y1 = box
    return rgba[y0:y1, x0:x1, :3].astype(np.int16)

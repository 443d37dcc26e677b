"""What a viewer keeps per received frame, and how it reads a track into those samples.

`VideoSample` and `AudioSample` are the records `viewer.AvatarViewer` appends
for every frame it receives; `read_video` and `read_audio` read one subscribed
track into them, tagged with the identity it came from. `MouthMeter` turns one
video track's successive frames into a sample's numbers: how much the mouth region moved since the
previous frame, and how far it is from a closed mouth. It knows where the mouth
is from `face.mouth_box`, and what a closed mouth looks like from
`face.FaceRenderer`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from livekit import rtc

from protoface_emulator.avatar.face import STOCK_STYLES, FaceRenderer, audio_level, mouth_box

__all__ = [
    "HEARD_LEVEL",
    "MIN_FACE_SIZE",
    "MOUTH_OPEN_THRESHOLD",
    "AudioSample",
    "MouthMeter",
    "VideoSample",
    "describe_video",
    "read_audio",
    "read_video",
    "rgba_frames",
    "samples_since",
]

HEARD_LEVEL = 0.05
"""Audio louder than this (0..1, `face.audio_level`) counts as speech heard."""

# Mean absolute difference (0..255) from the closed-mouth picture above which the
# mouth counts as open. Video coding noise on a still closed mouth stays well
# under it; the smallest opening the face draws is well over it.
MOUTH_OPEN_THRESHOLD = 6.0
MIN_FACE_SIZE = 32
"""The smallest face frame (as `FaceRenderer` draws them): smaller frames are a
placeholder layer, too few pixels to tell looks apart."""


@dataclass(frozen=True)
class VideoSample:
    """One received avatar video frame."""

    received_at: float  # time.monotonic()
    mouth_motion: float  # mean |change| of the mouth region since the previous frame
    mouth_openness: float  # mean |difference| of the mouth region from a closed mouth
    identity: str = ""  # the participant that published it

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
    identity: str = ""  # the participant that published it


_Sample = TypeVar("_Sample", VideoSample, AudioSample)


def samples_since(
    samples: Iterable[_Sample], since: float, identity: str | None = None
) -> list[_Sample]:
    """The samples received from `since` (`time.monotonic()`) on, from `identity` if given."""
    return [
        s
        for s in samples
        if s.received_at >= since and (identity is None or s.identity == identity)
    ]


def describe_video(
    video: Collection[VideoSample], avatars: Iterable[str], *, left: Collection[str], watching: str
) -> str:
    """What video arrived, per avatar in `avatars` (those in `left` marked so), in words.

    Args:
        video: The samples received.
        avatars: The identities to count, in order.
        left: The identities that left the room.
        watching: Who the viewer watches, for when no video came.
    """
    if not video:
        return f"no video from {watching} received"
    per = ", ".join(
        f"{sum(1 for s in video if s.identity == who)} from {who!r}"
        + (" (left)" if who in left else "")
        for who in avatars
    )
    opened = sum(1 for s in video if s.mouth_open)
    return f"{len(video)} video frames received ({per}), {opened} with the mouth open"


class MouthMeter:
    """Measures the mouth in the successive frames of one video track."""

    def __init__(self) -> None:
        """Start with no frame seen (the first frame's motion is 0)."""
        self._size: tuple[int, int] | None = None
        self._box = (0, 0, 0, 0)
        self._closed: list[npt.NDArray[np.int16]] = []
        self._previous: npt.NDArray[np.int16] | None = None

    def measure(self, rgba: npt.NDArray[np.uint8]) -> tuple[float, float]:
        """The mouth's motion since the previous frame and its openness, in this frame.

        Args:
            rgba: The frame, height x width x 4.

        Returns:
            `(mouth_motion, mouth_openness)`, as `VideoSample` keeps them.
        """
        height, width = rgba.shape[0], rgba.shape[1]
        if self._size != (width, height):
            self._size = (width, height)
            self._box = mouth_box(width, height)
            # Each stock face has its own closed mouth: the nearest one is
            # this avatar's (Ada, Bram and Test Pattern all read right).
            self._closed = [
                _mouth_region(
                    FaceRenderer(width, height, 25, blink=False, style=style).render(0.0),
                    self._box,
                )
                for style in STOCK_STYLES.values()
            ]
            self._previous = None
        mouth = _mouth_region(rgba, self._box)
        previous = self._previous
        motion = 0.0 if previous is None else float(np.mean(np.abs(mouth - previous)))
        openness = min(float(np.mean(np.abs(mouth - shut))) for shut in self._closed)
        self._previous = mouth
        return motion, openness


def _mouth_region(
    rgba: npt.NDArray[np.uint8], box: tuple[int, int, int, int]
) -> npt.NDArray[np.int16]:
    x0, y0, x1, y1 = box
    return rgba[y0:y1, x0:x1, :3].astype(np.int16)


async def read_video(
    track: rtc.Track, identity: str
) -> AsyncIterator[tuple[VideoSample, npt.NDArray[np.uint8]]]:
    """Each full-size frame of a video track: its sample and its RGBA pixels.

    Args:
        track: A subscribed video track.
        identity: The participant that publishes it (kept in each sample).
    """
    meter = MouthMeter()
    async for received_at, rgba in rgba_frames(track):
        motion, openness = meter.measure(rgba)
        yield VideoSample(received_at, motion, openness, identity), rgba


async def rgba_frames(track: rtc.Track) -> AsyncIterator[tuple[float, npt.NDArray[np.uint8]]]:
    """Each full-size frame of a video track: when it arrived (`time.monotonic()`) and
    its RGBA pixels, height x width x 4. Frames under `MIN_FACE_SIZE` are skipped."""
    stream = rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA)
    try:
        async for event in stream:
            received_at = time.monotonic()
            frame = event.frame
            if frame.width < MIN_FACE_SIZE or frame.height < MIN_FACE_SIZE:
                continue  # a placeholder layer while the track starts or stops
            rgba = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)
            yield received_at, rgba
    finally:
        await stream.aclose()


async def read_audio(track: rtc.Track, identity: str) -> AsyncIterator[AudioSample]:
    """Each frame of an audio track, as a sample.

    Args:
        track: A subscribed audio track.
        identity: The participant that publishes it (kept in each sample).
    """
    stream = rtc.AudioStream(track)
    try:
        async for event in stream:
            frame = event.frame
            samples = np.frombuffer(frame.data, dtype=np.int16)
            yield AudioSample(
                received_at=time.monotonic(),
                duration=frame.samples_per_channel / frame.sample_rate,
                level=audio_level(samples),
                identity=identity,
            )
    finally:
        await stream.aclose()

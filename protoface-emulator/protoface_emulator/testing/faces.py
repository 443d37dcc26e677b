"""Which avatar is this? Telling the emulator's faces apart from received pixels.

Each avatar id renders a look of its own (`protoface_emulator.avatar.face.style_for`),
so a test that watches the room can say whose face a viewer sees:

```python
from protoface_emulator.testing.faces import which_face

assert which_face(rgb_frame) == "av_stock_002"   # Bram
```

A received frame went through VP8, maybe a lower simulcast layer, and the
mouth and eyes move; so a frame is compared with each candidate's still face
drawn at the frame's size, outside the mouth and the eyes, and the nearest
one wins when it is near enough.

`FaceWatch` does it for every video frame of a room, whoever publishes it, so a
test can see which face is on screen when, and how long the screen had none
(a switch from one avatar to another, e.g.).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from livekit import rtc

from protoface_emulator.avatar.face import STOCK_STYLES, FaceRenderer, FaceStyle, mouth_box

from .samples import MIN_FACE_SIZE, rgba_frames
from .waiting import eventually

__all__ = ["MAX_FACE_DISTANCE", "FaceSeen", "FaceWatch", "face_distances", "which_face"]

MAX_FACE_DISTANCE = 24.0
"""Mean absolute difference (0..255, per channel) above which a frame is no candidate.

The stock faces are 40 and more apart from each other; video coding leaves a
frame within a few levels of its own face.
"""


def face_distances(
    frame: npt.NDArray[np.uint8], candidates: Mapping[str, FaceStyle] | None = None
) -> dict[str, float]:
    """How far `frame` is from each candidate's face (mean |difference|, 0..255).

    Args:
        frame: An (height, width, 3 or 4) uint8 RGB(A) frame as a viewer
            receives it.
        candidates: Looks by avatar id; the stock avatars by default. Add an
            uploaded avatar with `face.style_for(avatar_id, image_bytes)`.

    Raises:
        ValueError: The frame is not an RGB(A) image of at least 32x32 pixels.
    """
    if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3 or 4) uint8 frame, got {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    if width < MIN_FACE_SIZE or height < MIN_FACE_SIZE:
        raise ValueError(f"a frame of {width}x{height} is too small to tell faces apart")
    looks = STOCK_STYLES if candidates is None else candidates
    mask = _still_mask(width, height)
    rgb = frame[..., :3].astype(np.int16)
    return {
        avatar_id: float(np.abs(rgb - _reference(style, width, height))[mask].mean())
        for avatar_id, style in looks.items()
    }


def which_face(
    frame: npt.NDArray[np.uint8],
    candidates: Mapping[str, FaceStyle] | None = None,
    *,
    max_distance: float = MAX_FACE_DISTANCE,
) -> str | None:
    """The avatar id whose face `frame` shows, or None when it shows none of them.

    Args:
        frame: An (height, width, 3 or 4) uint8 RGB(A) frame (e.g. from
            `AvatarViewer.snapshots`).
        candidates: Looks by avatar id; the stock avatars by default.
        max_distance: The nearest face must be within this (see
            `MAX_FACE_DISTANCE`).
    """
    distances = face_distances(frame, candidates)
    if not distances:
        return None
    best = min(distances, key=distances.__getitem__)
    return best if distances[best] <= max_distance else None


@functools.lru_cache(maxsize=32)
def _reference(style: FaceStyle, width: int, height: int) -> npt.NDArray[np.int16]:
    still = FaceRenderer(width, height, 20.0, blink=False, style=style).render(0.0)
    return still[..., :3].astype(np.int16)


@functools.lru_cache(maxsize=16)
def _still_mask(width: int, height: int) -> npt.NDArray[np.bool_]:
    """The pixels that do not move: everything but the mouth box and the eye row."""
    mask = np.ones((height, width), dtype=bool)
    x0, y0, x1, y1 = mouth_box(width, height)
    mask[y0:y1, x0:x1] = False
    # The eyes blink and the eye band is where a blink draws: leave out a band
    # a little wider than it (its exact box is the face module's own business).
    mask[int(height * 0.37) : int(height * 0.52) + 1, :] = False
    return mask


@dataclass(frozen=True)
class FaceSeen:
    """One video frame a `FaceWatch` received.

    Attributes:
        received_at: `time.monotonic()` on arrival.
        identity: The participant that published the track.
        face: `which_face` of the frame (None: none of the candidates).
        mouth_openness: Mean |difference| of the mouth box from that face's
            closed mouth (0 for a frame of no known face).
    """

    received_at: float
    identity: str
    face: str | None
    mouth_openness: float


class FaceWatch:
    """Watches every video track of a room and says which face each frame shows.

    ```python
    watch = FaceWatch(candidates={"av_stock_001": ..., ...})   # stock by default
    await watch.connect(url, viewer_token)
    await watch.wait_for_face("av_stock_002", timeout=30)
    gap = watch.largest_gap(since=t0)
    await watch.aclose()
    ```

    Args:
        candidates: Looks by avatar id; the stock avatars by default.
    """

    def __init__(self, candidates: Mapping[str, FaceStyle] | None = None) -> None:
        self.candidates: Mapping[str, FaceStyle] = dict(
            STOCK_STYLES if candidates is None else candidates
        )
        self.room = rtc.Room()
        self.seen: list[FaceSeen] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, url: str, token: str) -> None:
        """Join the room (the token needs only to subscribe) and start watching."""
        self.room.on("track_subscribed", self._on_track_subscribed)
        await self.room.connect(url, token)

    async def aclose(self) -> None:
        """Stop watching and leave the room."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()

    def faces(self, *, since: float = 0.0, until: float = float("inf")) -> list[str | None]:
        """The face of each frame received within [since, until), in order."""
        return [s.face for s in self.seen if since <= s.received_at < until]

    def first_seen(self, face: str, *, since: float = 0.0) -> float | None:
        """When `face` was first received at or after `since`, if it was."""
        return next(
            (s.received_at for s in self.seen if s.received_at >= since and s.face == face), None
        )

    def last_seen(self, face: str) -> float | None:
        """When `face` was last received, if ever."""
        return next((s.received_at for s in reversed(self.seen) if s.face == face), None)

    def largest_gap(self, *, since: float, until: float | None = None) -> float:
        """The longest time within [since, until] with no video frame of any known face.

        Counts from `since` to the first such frame and from the last one to
        `until` (now, if `until` is later or None) too, so video that stops
        entirely is a gap, not nothing.
        """
        # Not past now: frames that have not arrived yet are no gap.
        end = time.monotonic() if until is None else min(until, time.monotonic())
        times = [
            s.received_at for s in self.seen if s.face is not None and since <= s.received_at <= end
        ]
        edges = [since, *times, end]
        return max(b - a for a, b in itertools.pairwise(edges))

    async def wait_for_face(self, face: str, *, timeout: float, since: float = 0.0) -> float:
        """Wait until a frame of `face` arrives (at or after `since`); returns when.

        Raises:
            AssertionError: None came within `timeout` seconds; says what did.
        """
        await eventually(
            lambda: self.first_seen(face, since=since) is not None,
            timeout=timeout,
            message=lambda: f"waited {timeout:g} s for the face {face!r}: {self.describe()}",
        )
        seen = self.first_seen(face, since=since)
        assert seen is not None
        return seen

    def describe(self) -> str:
        """What arrived so far, in one line: frames per (identity, face)."""
        counts: dict[tuple[str, str | None], int] = {}
        for s in self.seen:
            counts[(s.identity, s.face)] = counts.get((s.identity, s.face), 0) + 1
        shown = ", ".join(f"{who}: {face} x{n}" for (who, face), n in counts.items())
        return f"{len(self.seen)} video frames received ({shown or 'none'})"

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        _publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_VIDEO:
            return
        task = asyncio.create_task(self._record(track, participant.identity))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, track: rtc.Track, identity: str) -> None:
        async for received_at, rgba in rgba_frames(track):
            face = which_face(rgba, self.candidates)
            openness = 0.0 if face is None else _mouth_openness(rgba, self.candidates[face])
            self.seen.append(FaceSeen(received_at, identity, face, openness))


def _mouth_openness(frame: npt.NDArray[np.uint8], style: FaceStyle) -> float:
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = mouth_box(width, height)
    closed = _reference(style, width, height)[y0:y1, x0:x1]
    return float(np.abs(frame[y0:y1, x0:x1, :3].astype(np.int16) - closed).mean())

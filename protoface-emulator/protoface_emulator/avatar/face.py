"""Audio level in, video frames out: the emulator's avatar face, in pure numpy.

The face is drawn once per frame size (background, hair, head, ears, eyes,
eyebrows, nose) and cached. Every mouth opening the renderer can show is also
drawn once, as a patch the size of `mouth_box`; a frame is then the cached face
with one mouth patch pasted in (and, while blinking, one eyelid patch).

A frame's pixels depend only on its *look* (the mouth step and whether the eyes
are closed), so there are `2 * (MOUTH_STEPS + 1)` distinct frames per size.
`FaceRenderer.render_i420` hands out each look converted once to I420 (the
encoder's own format) and shared by every renderer of that size: a frame then
costs no drawing, no copy and no colour conversion, which matters on a 2-core
machine that also encodes the video.

Guarantees the rest of the project relies on:

- `mouth_box` is the only region that changes with the audio; the mouth is drawn
  strictly inside it and nothing else (blinks included) is drawn inside it.
- A closed mouth is always the same pixels, so silent frames have zero change in
  the mouth box.
- `audio_level` of digital silence (and of noise under `NOISE_FLOOR_DBFS`) is
  exactly 0.0, which closes the mouth.

Each avatar looks like itself (`style_for`): the stock avatars are drawn faces
of their own (`STOCK_STYLES`: Ada, Bram, Test Pattern, told apart by their
background, skin, hair and head shape), and an uploaded avatar shows its own
image, scaled to cover the frame, with a drawn mouth at the fixed `mouth_box`
(it does not blink). Everything is still drawn once per style and size.

The drawing lives in `face_art`, the looks in `looks`, uploaded images in
`uploads` and the audio level in `levels`; this module re-exports their public
names, so `protoface_emulator.avatar.face` stays the one place to import from.
"""

from __future__ import annotations

import math

import numpy as np

from .face_art import MOUTH_STEPS, Look, face_art, mouth_box, rgba_to_i420
from .levels import FULL_SCALE_DBFS, NOISE_FLOOR_DBFS, audio_level
from .looks import DEFAULT_STYLE, STOCK_STYLES, FaceStyle, style_for, style_from_wire
from .readonly import ReadOnly
from .uploads import RGBAImage, decode_png

__all__ = [
    "DEFAULT_STYLE",
    "FULL_SCALE_DBFS",
    "MOUTH_STEPS",
    "NOISE_FLOOR_DBFS",
    "STOCK_STYLES",
    "FaceRenderer",
    "FaceStyle",
    "Look",
    "audio_level",
    "decode_png",
    "mouth_box",
    "rgba_to_i420",
    "style_for",
    "style_from_wire",
]

# Release time constant of the mouth: it opens at once (attack within the frame
# that carries the sound) but closes over ~this long, so it does not flicker
# between syllables while still closing between words.
_RELEASE_SECONDS = 0.08


class FaceRenderer:
    """Renders the avatar's frames, one per video frame period.

    Each `render` call is one frame: pass the level of the audio played during
    that frame. The mouth opens at once with sound and closes with a short
    release; the eyes blink now and then (outside the mouth box).

    Args:
        width: Frame width in pixels (at least 32).
        height: Frame height in pixels (at least 32).
        fps: Frame rate; sets the mouth release and the blink timing.
        blink: Whether the eyes blink.
        seed: Seeds the blink timing, so a session's frames are reproducible.
        style: The avatar's look (`style_for`); Ada's by default.
    """

    width: ReadOnly[int] = ReadOnly("Frame width in pixels.")
    height: ReadOnly[int] = ReadOnly("Frame height in pixels.")
    style: ReadOnly[FaceStyle] = ReadOnly("The look this renderer draws.")
    opening: ReadOnly[float] = ReadOnly(
        "The mouth opening of the last rendered frame, 0..1 before quantising."
    )

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        *,
        blink: bool = True,
        seed: int = 0,
        style: FaceStyle = DEFAULT_STYLE,
    ) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"face frames must be at least 32x32 pixels, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._width = width
        self._height = height
        self._style = style
        self._art = face_art(width, height, style)
        self._canvas: RGBAImage = self._art.face.copy()
        self._box = self._art.mouth_box
        self._eye_box = self._art.eye_box
        self._shown_step = 0
        self._shown_eyes_closed = False
        self._opening = 0.0
        self._fps = fps
        self._release = math.exp(-1.0 / (fps * _RELEASE_SECONDS))
        self._blink = blink
        self._rng = np.random.default_rng(seed)
        self._frame_index = 0
        self._next_blink = self._draw_blink_gap()
        self._blink_frames = max(1, round(0.12 * fps))

    def close_mouth(self) -> None:
        """Shut the mouth from the next frame on, skipping the release (interruptions)."""
        self._opening = 0.0

    def render(self, level: float) -> RGBAImage:
        """Render the next frame.

        Args:
            level: Audio level for this frame period, 0..1 (see `audio_level`).

        Returns:
            A new (height, width, 4) RGBA uint8 array, owned by the caller.
        """
        self.advance(level)
        frame: RGBAImage = self._canvas.copy()
        return frame

    def render_i420(self, level: float) -> bytes:
        """Render the next frame as I420 (BT.601 limited range, planes Y, U, V).

        The same frame as `render` would give, converted once per look and frame
        size and then shared: do not expect a new object per call.

        Args:
            level: Audio level for this frame period, 0..1 (see `audio_level`).
        """
        look = self.advance(level)
        cached = self._art.i420.get(look)
        if cached is None:
            cached = self._art.i420[look] = rgba_to_i420(self._canvas)
        return cached

    def advance(self, level: float) -> Look:
        """Move to the next frame and return its look, without producing pixels.

        Args:
            level: Audio level for this frame period, 0..1 (see `audio_level`).
        """
        level = min(1.0, max(0.0, float(level)))
        # Instant attack, exponential release.
        self._opening = max(level, self._opening * self._release)
        step = round(self._opening * MOUTH_STEPS)
        if step == 0:
            # Snap, so the mouth is exactly closed rather than decaying forever.
            self._opening = 0.0
        if step != self._shown_step:
            x0, y0, x1, y1 = self._box
            self._canvas[y0:y1, x0:x1] = self._art.mouths[step]
            self._shown_step = step

        eyes_closed = self._eyes_closed_now()
        if eyes_closed != self._shown_eyes_closed:
            x0, y0, x1, y1 = self._eye_box
            patch = self._art.eyes_closed if eyes_closed else self._art.eyes_open
            self._canvas[y0:y1, x0:x1] = patch
            self._shown_eyes_closed = eyes_closed

        self._frame_index += 1
        return step, eyes_closed

    def _eyes_closed_now(self) -> bool:
        if not self._blink:
            return False
        if self._frame_index >= self._next_blink + self._blink_frames:
            self._next_blink = self._frame_index + self._draw_blink_gap()
        return self._next_blink <= self._frame_index < self._next_blink + self._blink_frames

    def _draw_blink_gap(self) -> int:
        # People blink every few seconds, irregularly.
        return max(1, round(float(self._rng.uniform(2.5, 5.5)) * self._fps))

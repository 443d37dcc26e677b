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
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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

RGBAImage = npt.NDArray[np.uint8]
"""An (height, width, 4) uint8 RGBA image."""

Look = tuple[int, bool]
"""What a frame shows: the mouth step (0 = closed) and whether the eyes are closed."""

_Mask = npt.NDArray[np.float32]
_Color = tuple[int, int, int]

NOISE_FLOOR_DBFS = -50.0
"""RMS levels at or below this read as silence (level 0.0, mouth closed)."""
FULL_SCALE_DBFS = -14.0
"""RMS levels at or above this read as full voice (level 1.0, mouth wide open).

Typical TTS speech sits around -25..-15 dBFS RMS, so speech spans most of the range.
"""

MOUTH_STEPS = 12
"""Number of distinct open-mouth shapes; openings are quantised to these steps."""

# Release time constant of the mouth: it opens at once (attack within the frame
# that carries the sound) but closes over ~this long, so it does not flicker
# between syllables while still closing between words.
_RELEASE_SECONDS = 0.08

# Supersampling factor for anti-aliased edges; everything is drawn once, so it is cheap.
_SUPERSAMPLE = 3

# Face geometry in fractions of the frame (x of width, y of height).
_HEAD = (0.50, 0.52)  # cx, cy; the radii are the style's
_MOUTH_CENTER = (0.50, 0.69)
_MOUTH_HALF_WIDTH = 0.10
_MOUTH_MAX_OPEN = 0.065  # extra half-height of the lips at full opening
_LIP_HALF_HEIGHT = 0.014
_EYES = ((0.385, 0.44), (0.615, 0.44))
_EYE_RADII = (0.056, 0.032)
_IRIS_RADIUS = 0.024
_PUPIL_RADIUS = 0.011

_BG_TOP: _Color = (48, 63, 92)
_BG_BOTTOM: _Color = (92, 112, 148)
_HAIR: _Color = (58, 38, 26)
_SKIN: _Color = (233, 184, 150)
_SKIN_SHADE: _Color = (206, 150, 118)
_EYE_WHITE: _Color = (248, 248, 244)
_IRIS: _Color = (70, 96, 60)
_PUPIL: _Color = (12, 12, 14)
_BROW: _Color = (52, 34, 24)
_LIPS: _Color = (176, 72, 78)
_MOUTH_INSIDE: _Color = (62, 14, 22)
_TEETH: _Color = (246, 244, 236)
_TONGUE: _Color = (196, 90, 98)
_LID_LINE: _Color = (88, 52, 40)

# What shows through a transparent part of an uploaded image.
_IMAGE_MATTE: _Color = (40, 40, 46)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class FaceStyle:
    """What one avatar looks like: the colours and shape of a drawn face, or an image.

    The eyes and the mouth sit at the same place in every style (so `mouth_box`
    holds for all); the rest is the style's own. With `image` (an uploaded PNG)
    the image is the face and only the mouth is drawn over it.

    Attributes:
        name: A label for people (the stock avatar's name).
        background_top: Background colour at the top (a vertical gradient).
        background_bottom: Background colour at the bottom.
        shirt: The shoulders' colour.
        skin: Skin colour.
        skin_shade: Shaded skin (neck, ears, nose).
        hair: Hair colour; None draws no hair.
        fringe: Whether the hair falls over the forehead.
        iris: Iris colour.
        brow: Eyebrow colour.
        lips: Lip colour.
        head_width: Half-width of the head, in fractions of the frame width.
        head_height: Half-height of the head, in fractions of the frame height.
        colour_bars: Draw vertical colour bars as the background (Test Pattern).
        image: The uploaded image file (PNG), drawn instead of a face.
    """

    name: str
    background_top: _Color = _BG_TOP
    background_bottom: _Color = _BG_BOTTOM
    shirt: _Color = (64, 92, 140)
    skin: _Color = _SKIN
    skin_shade: _Color = _SKIN_SHADE
    hair: _Color | None = _HAIR
    fringe: bool = True
    iris: _Color = _IRIS
    brow: _Color = _BROW
    lips: _Color = _LIPS
    head_width: float = 0.30
    head_height: float = 0.37
    colour_bars: bool = False
    image: bytes | None = None

    def __repr__(self) -> str:
        # An uploaded image is kilobytes of binary: name it by size and digest.
        if self.image is None:
            return f"FaceStyle(name={self.name!r})"
        digest = hashlib.sha256(self.image).hexdigest()[:12]
        return f"FaceStyle(name={self.name!r}, image={len(self.image)} bytes sha256:{digest})"


DEFAULT_STYLE = FaceStyle(name="Ada")
"""The look of `av_stock_001`, and of any avatar id the emulator has no look for."""

STOCK_STYLES: Mapping[str, FaceStyle] = {
    "av_stock_001": DEFAULT_STYLE,
    # Dark skin, black close-cropped hair, a broad head on green.
    "av_stock_002": FaceStyle(
        name="Bram",
        background_top=(24, 112, 64),
        background_bottom=(110, 190, 120),
        shirt=(150, 66, 44),
        skin=(116, 74, 48),
        skin_shade=(90, 56, 36),
        hair=(24, 22, 22),
        fringe=False,
        iris=(84, 56, 30),
        brow=(20, 18, 18),
        lips=(118, 58, 58),
        head_width=0.33,
        head_height=0.355,
    ),
    # Grey and bald on colour bars: unmistakable, and easy to check by eye.
    "av_stock_003": FaceStyle(
        name="Test Pattern",
        shirt=(30, 30, 30),
        skin=(190, 190, 190),
        skin_shade=(150, 150, 150),
        hair=None,
        fringe=False,
        iris=(40, 80, 200),
        brow=(60, 60, 60),
        lips=(200, 40, 40),
        head_width=0.27,
        head_height=0.35,
        colour_bars=True,
    ),
}
"""The stock avatars' looks, by avatar id (the emulator's stock avatars)."""

# Seven bars, as on a test card: white, yellow, cyan, green, magenta, red, blue.
_BARS: tuple[_Color, ...] = (
    (192, 192, 192),
    (192, 192, 0),
    (0, 192, 192),
    (0, 192, 0),
    (192, 0, 192),
    (192, 0, 0),
    (0, 0, 192),
)


def style_for(avatar_id: str, image: bytes | None = None) -> FaceStyle:
    """The look of `avatar_id`: its stock style, or its uploaded image.

    Args:
        avatar_id: The session's avatar.
        image: The file uploaded for it (`POST /v1/avatars`), if any.

    Returns:
        With a PNG the emulator can decode, that image with a drawn mouth. Any
        other upload (a JPEG: the emulator has no JPEG decoder, and no imaging
        library to lean on) gets the default face on a background tinted from
        the file's bytes, so two uploads still look different. Without an
        image, the stock style, or `DEFAULT_STYLE` for an unknown id.
    """
    if image is None:
        return STOCK_STYLES.get(avatar_id, DEFAULT_STYLE)
    if _decoded_upload(image) is not None:
        return FaceStyle(name=avatar_id, image=image)
    digest = hashlib.sha256(image).digest()
    tint: _Color = (digest[0], digest[1], digest[2])
    darker: _Color = (digest[0] // 2, digest[1] // 2, digest[2] // 2)
    return FaceStyle(name=avatar_id, background_top=darker, background_bottom=tint)


def style_from_wire(avatar_id: str, image_base64: str | None) -> FaceStyle:
    """`style_for` with the image as a worker spec carries it (base64 text)."""
    image = base64.b64decode(image_base64) if image_base64 else None
    return style_for(avatar_id, image)


def mouth_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The region of a frame that the mouth may occupy.

    Everything that moves with the audio lies inside this box and nothing else is
    drawn in it, so tests and benchmarks measure lip motion as the mean absolute
    change of these pixels between frames.

    Args:
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        ``(x0, y0, x1, y1)``, half-open: columns ``x0..x1-1`` and rows ``y0..y1-1``,
        i.e. ``frame[y0:y1, x0:x1]``.
    """
    cx, cy = _MOUTH_CENTER
    half_w = _MOUTH_HALF_WIDTH + 0.035
    half_h = _LIP_HALF_HEIGHT + _MOUTH_MAX_OPEN + 0.015
    x0 = max(0, math.floor((cx - half_w) * width))
    x1 = min(width, math.ceil((cx + half_w) * width))
    y0 = max(0, math.floor((cy - half_h) * height))
    y1 = min(height, math.ceil((cy + half_h) * height))
    return x0, y0, x1, y1


def audio_level(samples: npt.NDArray[np.generic]) -> float:
    """How loud a block of audio is, mapped to 0..1 for the mouth.

    The RMS in dBFS is mapped linearly from `NOISE_FLOOR_DBFS` (0.0) to
    `FULL_SCALE_DBFS` (1.0) and clipped, so silence and faint noise give exactly
    0.0 and the mouth stays shut.

    Args:
        samples: PCM samples, any shape (interleaved channels are fine): signed
            integers at their full scale (e.g. int16 from ``rtc.AudioFrame.data``),
            or floats in -1..1.

    Returns:
        The level, from 0.0 (silent) to 1.0 (loud).
    """
    if samples.size == 0:
        return 0.0
    x = np.asarray(samples).reshape(-1)
    kind = x.dtype.kind
    scale = float(-np.iinfo(x.dtype).min) if kind == "i" else 1.0
    # One dot product in float64: called once per frame per session, so no temporaries.
    values = x.astype(np.float64)
    mean_square = float(np.dot(values, values)) / (x.size * scale * scale)
    if not math.isfinite(mean_square) or mean_square <= 0.0:
        return 0.0
    dbfs = 10.0 * math.log10(mean_square)
    level = (dbfs - NOISE_FLOOR_DBFS) / (FULL_SCALE_DBFS - NOISE_FLOOR_DBFS)
    return min(1.0, max(0.0, level))


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
        self._fps = fps
        self._style = style
        self._art = _face_art(width, height, style)
        self._canvas: RGBAImage = self._art.face.copy()
        self._box = self._art.mouth_box
        self._eye_box = self._art.eye_box
        self._shown_step = 0
        self._shown_eyes_closed = False
        self._opening = 0.0
        self._release = math.exp(-1.0 / (fps * _RELEASE_SECONDS))
        self._blink = blink
        self._rng = np.random.default_rng(seed)
        self._frame_index = 0
        self._next_blink = self._draw_blink_gap()
        self._blink_frames = max(1, round(0.12 * fps))

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._height

    @property
    def style(self) -> FaceStyle:
        """The look this renderer draws."""
        return self._style

    @property
    def opening(self) -> float:
        """The mouth opening of the last rendered frame, 0..1 before quantising."""
        return self._opening

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


class _FaceArt:
    """Everything drawn once per frame size; shared read-only between renderers."""

    def __init__(self, width: int, height: int, style: FaceStyle) -> None:
        self.mouth_box = mouth_box(width, height)
        image = None if style.image is None else _decoded_upload(style.image)
        if image is not None:
            face = _cover(image, width, height)
        else:
            face = _draw_static_face(width, height, style)

        x0, y0, x1, y1 = self.mouth_box
        skin_patch = face[y0:y1, x0:x1]
        self.mouths: list[RGBAImage] = [
            _draw_mouth(skin_patch, self.mouth_box, width, height, step / MOUTH_STEPS, style.lips)
            for step in range(MOUTH_STEPS + 1)
        ]
        face[y0:y1, x0:x1] = self.mouths[0]

        self.eye_box = _eye_box(width, height)
        ex0, ey0, ex1, ey1 = self.eye_box
        self.eyes_open = face[ey0:ey1, ex0:ex1].copy()
        # A photo's eyes are wherever the photo has them: it does not blink.
        self.eyes_closed = (
            self.eyes_open.copy()
            if image is not None
            else _draw_closed_eyes(face, self.eye_box, width, height, style.skin)
        )

        self.face = face
        # Filled lazily by `FaceRenderer.render_i420`, one entry per look shown.
        self.i420: dict[Look, bytes] = {}
        for array in (self.face, self.eyes_open, self.eyes_closed, *self.mouths):
            array.setflags(write=False)


@functools.lru_cache(maxsize=32)
def _face_art(width: int, height: int, style: FaceStyle) -> _FaceArt:
    # Sessions share the drawing for a look and frame size: drawing is the only costly part.
    return _FaceArt(width, height, style)


def rgba_to_i420(rgba: RGBAImage) -> bytes:
    """An RGBA image (even width and height) as I420 bytes: BT.601, limited range.

    What LiveKit itself makes of an RGBA frame: luma identical, chroma (from each
    2x2 block's rounded mean colour) within one level of it.
    """
    height, width = rgba.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"I420 needs an even frame size, got {width}x{height}")
    rgb = rgba[..., :3].astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    blocks = rgb.reshape(height // 2, 2, width // 2, 2, 3).sum(axis=(1, 3))
    r2, g2, b2 = ((blocks[..., c] + 2) >> 2 for c in range(3))
    u = ((-38 * r2 - 74 * g2 + 112 * b2 + 128) >> 8) + 128
    v = ((112 * r2 - 94 * g2 - 18 * b2 + 128) >> 8) + 128
    planes = (np.clip(p, 0, 255).astype(np.uint8).tobytes() for p in (y, u, v))
    return b"".join(planes)


def _eye_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The region a blink redraws: both eyes, clear of the eyebrows and the mouth box."""
    (lx, ly), (rx, _) = _EYES
    erx, ery = _EYE_RADII
    x0 = max(0, math.floor((lx - erx - 0.01) * width))
    x1 = min(width, math.ceil((rx + erx + 0.01) * width))
    y0 = max(0, math.floor((ly - ery - 0.008) * height))
    y1 = min(height, math.ceil((ly + ery + 0.008) * height))
    return x0, y0, x1, y1


def _grid(box: tuple[int, int, int, int], width: int, height: int) -> tuple[_Mask, _Mask]:
    """Supersampled pixel-centre coordinates of `box`, in fractions of the frame."""
    x0, y0, x1, y1 = box
    ss = _SUPERSAMPLE
    xs = (np.arange(x0 * ss, x1 * ss, dtype=np.float32) + 0.5) / (ss * width)
    ys = (np.arange(y0 * ss, y1 * ss, dtype=np.float32) + 0.5) / (ss * height)
    gx, gy = np.meshgrid(xs, ys)
    return gx.astype(np.float32), gy.astype(np.float32)


def _coverage(inside: npt.NDArray[np.bool_]) -> _Mask:
    """Per-pixel coverage (0..1) of a supersampled boolean mask."""
    ss = _SUPERSAMPLE
    h, w = inside.shape[0] // ss, inside.shape[1] // ss
    blocks = inside.reshape(h, ss, w, ss).astype(np.float32)
    covered: _Mask = blocks.mean(axis=(1, 3), dtype=np.float32)
    return covered


def _ellipse(gx: _Mask, gy: _Mask, cx: float, cy: float, rx: float, ry: float) -> _Mask:
    if rx <= 0 or ry <= 0:
        return np.zeros((gx.shape[0] // _SUPERSAMPLE, gx.shape[1] // _SUPERSAMPLE), np.float32)
    return _coverage(((gx - cx) / rx) ** 2 + ((gy - cy) / ry) ** 2 <= 1.0)


def _paint(rgb: _Mask, mask: _Mask, color: _Color) -> None:
    """Alpha-blend `color` into the float RGB image where `mask` covers it."""
    alpha = mask[..., None]
    rgb *= 1.0 - alpha
    rgb += alpha * np.asarray(color, dtype=np.float32)


def _to_rgba(rgb: _Mask) -> RGBAImage:
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    out[..., 3] = 255
    return out


def _draw_static_face(width: int, height: int, style: FaceStyle) -> RGBAImage:
    """The whole face with the mouth area left as bare skin."""
    box = (0, 0, width, height)
    gx, gy = _grid(box, width, height)
    if style.colour_bars:
        bar = np.minimum((np.arange(width) * len(_BARS)) // width, len(_BARS) - 1)
        row = np.asarray(_BARS, dtype=np.float32)[bar]
        rgb = np.broadcast_to(row, (height, width, 3)).copy()
    else:
        top = np.asarray(style.background_top, dtype=np.float32)
        bottom = np.asarray(style.background_bottom, dtype=np.float32)
        t = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None, None]
        rgb = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()

    hcx, hcy = _HEAD[0], _HEAD[1]
    hrx, hry = style.head_width, style.head_height
    # Shoulders and neck first, so the head sits on them.
    _paint(rgb, _ellipse(gx, gy, 0.50, 1.08, 0.42, 0.17), style.shirt)
    _paint(rgb, _ellipse(gx, gy, 0.50, 0.86, 0.11, 0.12), style.skin_shade)
    # Hair behind the head, then ears, then the face.
    if style.hair is not None:
        spread = 0.035 if style.fringe else 0.012
        _paint(rgb, _ellipse(gx, gy, hcx, hcy - 0.06, hrx + spread, hry + 0.01), style.hair)
    for ex in (hcx - hrx, hcx + hrx):
        _paint(rgb, _ellipse(gx, gy, ex, 0.50, 0.035, 0.06), style.skin_shade)
    _paint(rgb, _ellipse(gx, gy, hcx, hcy, hrx, hry), style.skin)
    if style.hair is not None and style.fringe:
        # A fringe over the forehead, clipped to the top of the head.
        fringe = _coverage(
            (((gx - hcx) / (hrx + 0.01)) ** 2 + ((gy - (hcy - 0.02)) / hry) ** 2 <= 1.0)
            & (gy < hcy - hry * 0.62 + 0.04 * np.cos((gx - hcx) * 18.0))
        )
        _paint(rgb, fringe, style.hair)

    erx, ery = _EYE_RADII
    for ex, ey in _EYES:
        _paint(rgb, _ellipse(gx, gy, ex, ey, erx, ery), _EYE_WHITE)
        _paint(rgb, _ellipse(gx, gy, ex, ey + 0.002, _IRIS_RADIUS, _IRIS_RADIUS), style.iris)
        _paint(rgb, _ellipse(gx, gy, ex, ey + 0.002, _PUPIL_RADIUS, _PUPIL_RADIUS), _PUPIL)
        _paint(
            rgb,
            _ellipse(gx, gy, ex + 0.008, ey - 0.008, _PUPIL_RADIUS * 0.45, _PUPIL_RADIUS * 0.45),
            _EYE_WHITE,
        )
        # Eyebrow: the top of an arch, above the eye and clear of the blink box.
        brow = _coverage(
            (((gx - ex) / (erx + 0.012)) ** 2 + ((gy - (ey - 0.037)) / 0.045) ** 2 <= 1.0)
            & (((gx - ex) / (erx + 0.008)) ** 2 + ((gy - (ey - 0.026)) / 0.045) ** 2 > 1.0)
            & (gy < ey - 0.045)
        )
        _paint(rgb, brow, style.brow)

    # Nose: a soft shaded ridge and nostrils, above the mouth box.
    _paint(rgb, _ellipse(gx, gy, 0.50, 0.545, 0.028, 0.045), style.skin_shade)
    _paint(rgb, _ellipse(gx, gy, 0.50, 0.535, 0.020, 0.040), style.skin)
    for nx in (0.483, 0.517):
        _paint(rgb, _ellipse(gx, gy, nx, 0.578, 0.010, 0.006), (150, 96, 80))
    return _to_rgba(rgb)


def _draw_mouth(
    skin_patch: RGBAImage,
    box: tuple[int, int, int, int],
    width: int,
    height: int,
    opening: float,
    lips: _Color,
) -> RGBAImage:
    """The mouth box at one opening (0 = closed lips), over the bare-skin patch."""
    gx, gy = _grid(box, width, height)
    rgb = skin_patch[..., :3].astype(np.float32)
    cx, cy = _MOUTH_CENTER
    half_w = _MOUTH_HALF_WIDTH * (1.0 - 0.12 * opening)  # lips round a little as they open
    open_h = _MOUTH_MAX_OPEN * opening
    _paint(rgb, _ellipse(gx, gy, cx, cy, half_w, _LIP_HALF_HEIGHT + open_h), lips)
    if opening > 0:
        inner_w = half_w * 0.82
        inner_h = open_h + _LIP_HALF_HEIGHT * 0.25
        inside = _ellipse(gx, gy, cx, cy, inner_w, inner_h)
        _paint(rgb, inside, _MOUTH_INSIDE)
        inner = ((gx - cx) / inner_w) ** 2 + ((gy - cy) / inner_h) ** 2 <= 1.0
        teeth = _coverage(inner & (gy < cy - inner_h * 0.55))
        _paint(rgb, teeth, _TEETH)
        tongue = _coverage(
            inner
            & (
                ((gx - cx) / (inner_w * 0.6)) ** 2 + ((gy - (cy + inner_h)) / (inner_h * 0.7)) ** 2
                <= 1.0
            )
        )
        _paint(rgb, tongue, _TONGUE)
    else:
        # Closed: the line between the lips.
        seam = _coverage((np.abs(gy - cy) <= 0.0035) & (((gx - cx) / (half_w * 0.92)) ** 2 <= 1.0))
        _paint(rgb, seam, _MOUTH_INSIDE)
    return _to_rgba(rgb)


def _draw_closed_eyes(
    face: RGBAImage, box: tuple[int, int, int, int], width: int, height: int, skin: _Color
) -> RGBAImage:
    """The eye box with both eyes shut: skin over the eye and a lid line."""
    gx, gy = _grid(box, width, height)
    x0, y0, x1, y1 = box
    rgb = face[y0:y1, x0:x1, :3].astype(np.float32)
    erx, ery = _EYE_RADII
    for ex, ey in _EYES:
        _paint(rgb, _ellipse(gx, gy, ex, ey, erx + 0.003, ery + 0.003), skin)
        lid = _coverage(
            (np.abs(gy - (ey + 0.004 + 0.25 * ((gx - ex) / erx) ** 2 * 0.02)) <= 0.004)
            & (np.abs(gx - ex) <= erx)
        )
        _paint(rgb, lid, _LID_LINE)
    return _to_rgba(rgb)


# --- uploaded images --------------------------------------------------------------

# Channels per pixel of each PNG colour type (grey, RGB, palette, grey+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@functools.lru_cache(maxsize=8)
def _decoded_upload(data: bytes) -> RGBAImage | None:
    # Once per upload and process: a worker decodes each image it shows once.
    try:
        image = decode_png(data)
    except ValueError:
        return None
    image.setflags(write=False)
    return image


def decode_png(data: bytes) -> RGBAImage:
    """Decode a PNG (8 or 16 bits, any colour type, not interlaced) to RGBA.

    Pure numpy and zlib: the emulator carries no imaging library. Transparent
    parts are composed over a dark matte.

    Raises:
        ValueError: `data` is not a PNG this decoder reads; the message says why.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file (no PNG signature)")
    pos = len(_PNG_SIGNATURE)
    header: bytes | None = None
    palette = b""
    idat: list[bytes] = []
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None or len(header) != 13 or not idat:
        raise ValueError("PNG without a header or image data")
    width = int.from_bytes(header[0:4], "big")
    height = int.from_bytes(header[4:8], "big")
    depth, colour_type, interlace = header[8], header[9], header[12]
    if colour_type not in _PNG_CHANNELS or depth not in (8, 16) or interlace != 0:
        raise ValueError(
            f"PNG colour type {colour_type}, depth {depth}, interlace {interlace} is not "
            "supported (8 or 16 bits, not interlaced)"
        )
    if not 1 <= width <= 8192 or not 1 <= height <= 8192:
        raise ValueError(f"PNG of {width}x{height} pixels is out of range")
    channels = _PNG_CHANNELS[colour_type]
    bpp = channels * depth // 8
    stride = width * bpp
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise ValueError(f"PNG image data is corrupt: {exc}") from None
    if len(raw) < height * (stride + 1):
        raise ValueError("PNG image data is shorter than its size says")
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (stride + 1)).reshape(
        height, stride + 1
    )
    pixels = _unfilter(rows, bpp)
    if depth == 16:
        pixels = pixels.reshape(height, width * channels, 2)[..., 0]  # the high bytes
    samples = pixels.reshape(height, width, channels)
    return _to_display(samples, colour_type, palette)


def _unfilter(rows: npt.NDArray[np.uint8], bpp: int) -> npt.NDArray[np.uint8]:
    """Undo PNG's per-row filters (none, sub, up, average, paeth)."""
    height, stride = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:
            # Each byte adds the one bpp to its left: a running sum per channel.
            padded = np.zeros(((stride + bpp - 1) // bpp) * bpp, dtype=np.int64)
            padded[:stride] = line
            cur = (np.cumsum(padded.reshape(-1, bpp), axis=0).reshape(-1)[:stride] % 256).astype(
                np.uint8
            )
        elif kind == 2:
            cur = line + prev  # uint8 wraps modulo 256, as the filter says
        elif kind in (3, 4):
            cur = _unfilter_sequential(line, prev, bpp, paeth=kind == 4)
        else:
            raise ValueError(f"PNG row {y} has an unknown filter type {kind}")
        out[y] = cur
        prev = cur
    return out


def _unfilter_sequential(
    line: npt.NDArray[np.uint8], prev: npt.NDArray[np.uint8], bpp: int, *, paeth: bool
) -> npt.NDArray[np.uint8]:
    # Each byte depends on the decoded byte to its left, so this one is a loop;
    # an upload is decoded once per worker process, never per frame.
    src, up = line.tolist(), prev.tolist()
    cur = [0] * len(src)
    for i, value in enumerate(src):
        left = cur[i - bpp] if i >= bpp else 0
        if paeth:
            corner = up[i - bpp] if i >= bpp else 0
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else (up[i] if pb <= pc else corner)
        else:
            pred = (left + up[i]) >> 1
        cur[i] = (value + pred) & 0xFF
    return np.asarray(cur, dtype=np.uint8)


def _to_display(samples: npt.NDArray[np.uint8], colour_type: int, palette: bytes) -> RGBAImage:
    """Decoded samples as opaque RGBA, transparency composed over the matte."""
    height, width = samples.shape[:2]
    if colour_type == 3:
        entries = np.frombuffer(palette, dtype=np.uint8)
        if entries.size < 3:
            raise ValueError("palette PNG without a palette")
        table = entries[: entries.size // 3 * 3].reshape(-1, 3)
        rgb = table[np.minimum(samples[..., 0], len(table) - 1)].astype(np.float32)
        alpha = None
    else:
        colour = samples[..., : 1 if colour_type in (0, 4) else 3].astype(np.float32)
        rgb = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour
        alpha = samples[..., -1:].astype(np.float32) / 255.0 if colour_type in (4, 6) else None
    if alpha is not None:
        rgb = rgb * alpha + np.asarray(_IMAGE_MATTE, dtype=np.float32) * (1.0 - alpha)
    out = np.empty((height, width, 4), dtype=np.uint8)
    out[..., :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    out[..., 3] = 255
    return out


def _cover(image: RGBAImage, width: int, height: int) -> RGBAImage:
    """`image` scaled to cover width x height (centred, the overflow cropped)."""
    src_h, src_w = image.shape[:2]
    scale = max(width / src_w, height / src_h)
    # Each output pixel takes the mean of the source pixels under it (or the
    # nearest one when enlarging): cheap, and no aliasing on large photos.
    x0 = (src_w - width / scale) / 2
    y0 = (src_h - height / scale) / 2
    xs = x0 + np.arange(width + 1) / scale
    ys = y0 + np.arange(height + 1) / scale
    xi = np.clip(np.floor(xs).astype(np.int64), 0, src_w - 1)
    yi = np.clip(np.floor(ys).astype(np.int64), 0, src_h - 1)
    if scale >= 1.0:
        enlarged: RGBAImage = image[yi[:-1]][:, xi[:-1]].copy()
        return enlarged
    summed = np.cumsum(np.cumsum(image[..., :3].astype(np.float64), axis=0), axis=1)
    summed = np.pad(summed, ((1, 0), (1, 0), (0, 0)))
    x_hi = np.maximum(xi[1:], xi[:-1] + 1)
    y_hi = np.maximum(yi[1:], yi[:-1] + 1)
    x_hi = np.minimum(x_hi, src_w)
    y_hi = np.minimum(y_hi, src_h)
    a = summed[y_hi][:, x_hi] - summed[yi[:-1]][:, x_hi]
    b = summed[y_hi][:, xi[:-1]] - summed[yi[:-1]][:, xi[:-1]]
    area = (y_hi - yi[:-1])[:, None, None] * (x_hi - xi[:-1])[None, :, None]
    out = np.empty((height, width, 4), dtype=np.uint8)
    out[..., :3] = np.clip(np.rint((a - b) / area), 0, 255).astype(np.uint8)
    out[..., 3] = 255
    return out

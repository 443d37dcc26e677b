"""The drawing behind the face: everything drawn once per look and frame size.

`face_art` draws (and caches) the face with the mouth area left as bare skin,
one mouth patch per step the size of `mouth_box`, and the eye box open and shut.

Guarantees the rest of the project relies on:

- `mouth_box` is the only region that changes with the audio; the mouth is drawn
  strictly inside it and nothing else (blinks included) is drawn inside it.
- A closed mouth is always the same pixels, so silent frames have zero change in
  the mouth box.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from .looks import Color, FaceStyle
from .uploads import RGBAImage, cover, decoded_upload

__all__ = ["MOUTH_STEPS", "FaceArt", "Look", "face_art", "mouth_box", "rgba_to_i420"]

Look = tuple[int, bool]
"""What a frame shows: the mouth step (0 = closed) and whether the eyes are closed."""

_Mask = npt.NDArray[np.float32]

MOUTH_STEPS = 12
"""Number of distinct open-mouth shapes; openings are quantised to these steps."""

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

_EYE_WHITE: Color = (248, 248, 244)
_PUPIL: Color = (12, 12, 14)
_MOUTH_INSIDE: Color = (62, 14, 22)
_TEETH: Color = (246, 244, 236)
_TONGUE: Color = (196, 90, 98)
_LID_LINE: Color = (88, 52, 40)

# Seven bars, as on a test card: white, yellow, cyan, green, magenta, red, blue.
_BARS: tuple[Color, ...] = (
    (192, 192, 192),
    (192, 192, 0),
    (0, 192, 192),
    (0, 192, 0),
    (192, 0, 192),
    (192, 0, 0),
    (0, 0, 192),
)


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


class FaceArt:
    """Everything drawn once per frame size; shared read-only between renderers."""

    def __init__(self, width: int, height: int, style: FaceStyle) -> None:
        self.mouth_box = mouth_box(width, height)
        image = None if style.image is None else decoded_upload(style.image)
        if image is not None:
            face = cover(image, width, height)
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
def face_art(width: int, height: int, style: FaceStyle) -> FaceArt:
    """The drawing for `style` at width x height, shared read-only between renderers.

    Sessions share the drawing for a look and frame size: drawing is the only costly part.
    """
    return FaceArt(width, height, style)


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


def _paint(rgb: _Mask, mask: _Mask, color: Color) -> None:
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
    lips: Color,
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
    face: RGBAImage, box: tuple[int, int, int, int], width: int, height: int, skin: Color
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

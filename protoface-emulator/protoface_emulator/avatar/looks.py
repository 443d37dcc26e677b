"""What each avatar looks like: `FaceStyle`, the stock looks and uploaded looks.

The stock avatars are drawn faces of their own (`STOCK_STYLES`: Ada, Bram, Test
Pattern, told apart by their background, skin, hair and head shape); an uploaded
avatar shows its own image (`style_for`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from .uploads import decoded_upload

__all__ = ["DEFAULT_STYLE", "STOCK_STYLES", "Color", "FaceStyle", "style_for", "style_from_wire"]

Color = tuple[int, int, int]
"""An RGB colour, 0..255 per channel."""


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
    background_top: Color = (48, 63, 92)
    background_bottom: Color = (92, 112, 148)
    shirt: Color = (64, 92, 140)
    skin: Color = (233, 184, 150)
    skin_shade: Color = (206, 150, 118)
    hair: Color | None = (58, 38, 26)
    fringe: bool = True
    iris: Color = (70, 96, 60)
    brow: Color = (52, 34, 24)
    lips: Color = (176, 72, 78)
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

# One line per part of the face: head, background and shirt, skin and hair, eyes and mouth.
# fmt: off
STOCK_STYLES: Mapping[str, FaceStyle] = {
    "av_stock_001": DEFAULT_STYLE,
    # Dark skin, black close-cropped hair, a broad head on green.
    "av_stock_002": FaceStyle(
        name="Bram", head_width=0.33, head_height=0.355,
        background_top=(24, 112, 64), background_bottom=(110, 190, 120), shirt=(150, 66, 44),
        skin=(116, 74, 48), skin_shade=(90, 56, 36), hair=(24, 22, 22), fringe=False,
        iris=(84, 56, 30), brow=(20, 18, 18), lips=(118, 58, 58),
    ),
    # Grey and bald on colour bars: unmistakable, and easy to check by eye.
    "av_stock_003": FaceStyle(
        name="Test Pattern", head_width=0.27, head_height=0.35,
        colour_bars=True, shirt=(30, 30, 30),
        skin=(190, 190, 190), skin_shade=(150, 150, 150), hair=None, fringe=False,
        iris=(40, 80, 200), brow=(60, 60, 60), lips=(200, 40, 40),
    ),
}
# fmt: on
"""The stock avatars' looks, by avatar id (the emulator's stock avatars)."""


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
    if decoded_upload(image) is not None:
        return FaceStyle(name=avatar_id, image=image)
    digest = hashlib.sha256(image).digest()
    tint: Color = (digest[0], digest[1], digest[2])
    darker: Color = (digest[0] // 2, digest[1] // 2, digest[2] // 2)
    return FaceStyle(name=avatar_id, background_top=darker, background_bottom=tint)


def style_from_wire(avatar_id: str, image_base64: str | None) -> FaceStyle:
    """`style_for` with the image as a worker spec carries it (base64 text)."""
    image = base64.b64decode(image_base64) if image_base64 else None
    return style_for(avatar_id, image)

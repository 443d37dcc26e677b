"""Each avatar looks like itself: the stock faces differ, an upload shows its own image.

Unit tests of `face.style_for` / `FaceRenderer(style=...)`, the PNG decoder the
uploads go through, and the kit's `which_face`; `test_faces_room.py` checks the
same through a real room.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import numpy.typing as npt
import pytest
from emulator_helpers import eventually, session_body
from standin_worker import StandInWorkers

from protoface_emulator.api.requests import parse_session_create
from protoface_emulator.avatar.face import (
    DEFAULT_STYLE,
    STOCK_STYLES,
    FaceRenderer,
    decode_png,
    mouth_box,
    style_for,
    style_from_wire,
)
from protoface_emulator.server import Emulator
from protoface_emulator.testing.faces import MAX_FACE_DISTANCE, face_distances, which_face
from protoface_emulator.testing.png import encode_png

STOCK = ("av_stock_001", "av_stock_002", "av_stock_003")
SIZES = [(64, 64), (160, 160), (320, 320), (512, 512)]


def _still(avatar_id: str, width: int, height: int, level: float = 0.0) -> npt.NDArray[np.uint8]:
    return FaceRenderer(width, height, 20.0, blink=False, style=style_for(avatar_id)).render(level)


def _portrait(width: int = 300, height: int = 200) -> npt.NDArray[np.uint8]:
    """An RGB test image: magenta with a yellow block and a cyan stripe."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[...] = (200, 30, 160)
    rgb[20 : height // 2, 40 : width // 2] = (250, 220, 10)
    rgb[:, -80:] = (20, 200, 220)
    return rgb


def _png_with_filter(rgb: npt.NDArray[np.uint8], kind: int) -> bytes:
    """Encode RGB with one PNG row filter (1 sub, 2 up, 3 average, 4 paeth) on every row.

    The test's own encoder: the decoder must undo what the PNG spec says each
    filter did, whatever wrote the file.
    """
    height, width = rgb.shape[:2]
    bpp = 3
    data = rgb.reshape(height, width * bpp).astype(np.int64)
    rows = []
    prev = np.zeros(width * bpp, np.int64)
    for y in range(height):
        cur = data[y]
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - corner
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - corner)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, corner))
        rows.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())
        prev = cur
    plain = encode_png(rgb)
    # Same header as our plain encoder's; only the image data differs.
    header_end = 8 + 8 + 13 + 4
    idat = zlib.compress(b"".join(rows))
    chunk = len(idat).to_bytes(4, "big") + b"IDAT" + idat
    chunk += (zlib.crc32(b"IDAT" + idat) & 0xFFFFFFFF).to_bytes(4, "big")
    iend = (0).to_bytes(4, "big") + b"IEND" + zlib.crc32(b"IEND").to_bytes(4, "big")
    return plain[:header_end] + chunk + iend


@pytest.mark.parametrize("size", SIZES)
def test_the_three_stock_avatars_are_far_apart_at_every_tier_size(size: tuple[int, int]) -> None:
    width, height = size
    for a, b in itertools.combinations(STOCK, 2):
        distance = face_distances(_still(a, width, height), {b: style_for(b)})[b]
        assert distance > 2 * MAX_FACE_DISTANCE, f"{a} and {b} look alike at {size}: {distance}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("avatar_id", STOCK)
def test_which_face_names_each_stock_avatar_speaking_and_blinking(
    avatar_id: str, size: tuple[int, int]
) -> None:
    width, height = size
    renderer = FaceRenderer(width, height, 20.0, style=style_for(avatar_id), seed=3)
    rng = np.random.default_rng(0)
    for index in range(120):  # six seconds: blinks included
        frame = renderer.render(0.9 if index % 3 else 0.0).astype(np.int16)
        # What a video codec leaves of it, roughly.
        frame[..., :3] += rng.integers(-8, 9, size=frame[..., :3].shape, dtype=np.int16)
        noisy = np.clip(frame, 0, 255).astype(np.uint8)
        assert which_face(noisy) == avatar_id, face_distances(noisy)


def test_which_face_sees_none_of_them_in_other_pictures() -> None:
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8)
    grey = np.full((160, 160, 3), 128, np.uint8)
    assert which_face(noise) is None
    assert which_face(grey) is None
    with pytest.raises(ValueError, match="too small"):
        which_face(grey[:16, :16])


def test_ada_is_the_default_look_and_unknown_ids_get_it() -> None:
    assert STOCK_STYLES["av_stock_001"] is DEFAULT_STYLE
    assert style_for("av_someone_else") is DEFAULT_STYLE
    default = FaceRenderer(160, 160, 20.0, blink=False).render(0.0)
    assert np.array_equal(default, _still("av_stock_001", 160, 160))


@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_png_decoder_undoes_every_row_filter(kind: int) -> None:
    rgb = np.random.default_rng(kind).integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    decoded = decode_png(_png_with_filter(rgb, kind))
    assert decoded.shape == (17, 23, 4)
    assert np.array_equal(decoded[..., :3], rgb)
    assert np.all(decoded[..., 3] == 255)


def test_png_decoder_refuses_what_it_cannot_read_with_the_reason() -> None:
    with pytest.raises(ValueError, match="signature"):
        decode_png(b"\xff\xd8\xff\xe0 a JPEG")
    broken = encode_png(_portrait())[:60]
    with pytest.raises(ValueError):
        decode_png(broken)


@pytest.mark.parametrize("size", SIZES)
def test_an_uploaded_png_is_the_face_scaled_to_cover_the_frame(size: tuple[int, int]) -> None:
    width, height = size
    image = _portrait()
    style = style_for("av_upload", encode_png(image))
    assert style.image is not None and repr(style).startswith("FaceStyle(name='av_upload', image=")
    frame = FaceRenderer(width, height, 20.0, style=style).render(0.0)
    # 300x200 covering a square: the height fills it, the sides are cropped
    # evenly; the top left of the frame is the image's magenta, the right edge
    # its cyan stripe (cropped from 80 to 30 columns), the block's yellow above the mouth.
    rgb = frame[..., :3].astype(int)
    assert np.abs(rgb[1, 1] - (200, 30, 160)).max() <= 2
    assert np.abs(rgb[height // 2, width - 2] - (20, 200, 220)).max() <= 2
    assert np.abs(rgb[height // 3, width // 3] - (250, 220, 10)).max() <= 2
    assert which_face(frame, {"av_upload": style, **STOCK_STYLES}) == "av_upload"


def test_an_uploaded_face_moves_its_mouth_with_the_sound_and_only_there() -> None:
    style = style_for("av_upload", encode_png(_portrait()))
    renderer = FaceRenderer(320, 320, 20.0, style=style)
    closed = renderer.render(0.0).astype(np.int16)
    speaking = renderer.render(1.0).astype(np.int16)
    x0, y0, x1, y1 = mouth_box(320, 320)
    change = np.abs(speaking - closed)
    assert change[y0:y1, x0:x1].mean() > 20, "the mouth opens"
    change[y0:y1, x0:x1] = 0
    assert change.max() == 0, "nothing else moves (an image does not blink)"
    for _ in range(40):
        silent = renderer.render(0.0)
    assert np.array_equal(silent.astype(np.int16), closed), "silence closes it again"


def test_an_upload_the_emulator_cannot_decode_still_gets_a_look_of_its_own() -> None:
    jpeg_a = b"\xff\xd8\xff\xe0" + b"a" * 64
    jpeg_b = b"\xff\xd8\xff\xe0" + b"b" * 64
    a, b = style_for("av_a", jpeg_a), style_for("av_b", jpeg_b)
    assert a.image is None and a != DEFAULT_STYLE and a != b
    frames = [FaceRenderer(160, 160, 20.0, blink=False, style=s).render(0.0) for s in (a, b)]
    ada = _still("av_stock_001", 160, 160)
    corner = (slice(0, 8), slice(0, 8))  # the background: the tint shows there
    assert not np.array_equal(frames[0][corner], frames[1][corner])
    assert not np.array_equal(frames[0][corner], ada[corner])


def test_looks_are_drawn_once_per_style_and_size_and_shared() -> None:
    style = style_for("av_upload", encode_png(_portrait(64, 64)))
    first = FaceRenderer(160, 160, 15.0, style=style).render_i420(0.0)
    second = FaceRenderer(160, 160, 15.0, style=style_from_wire("av_upload", None)).render_i420(0.0)
    again = FaceRenderer(160, 160, 15.0, style=style).render_i420(0.0)
    assert again is first, "the same look's I420 frame is converted once and shared"
    assert second is not first and second != first, "another look is another frame"


async def test_a_session_of_an_uploaded_avatar_hands_its_worker_the_image() -> None:
    workers = StandInWorkers()
    png = encode_png(_portrait(40, 40))
    async with Emulator(worker_factory=workers, avatar_processing_delay=0.01) as emu:
        avatar = emu.store.create_avatar(name="Mine", runtime_type="avtr1", image=png)
        await eventually(lambda: emu.store.get_avatar(avatar.id).status, lambda s: s == "ready")
        for avatar_id in (avatar.id, "av_stock_002"):
            await emu.store.create_session(parse_session_create(session_body(avatar_id=avatar_id)))
    uploaded, stock = (w.spec for w in workers.started[-2:])
    assert uploaded.avatar_id == avatar.id
    assert style_from_wire(uploaded.avatar_id, uploaded.avatar_image) == style_for(avatar.id, png)
    assert "avatar_image" not in repr(uploaded), "kilobytes of image stay out of logs"
    assert stock.avatar_id == "av_stock_002" and stock.avatar_image is None

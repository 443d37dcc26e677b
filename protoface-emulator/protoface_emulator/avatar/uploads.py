"""Uploaded avatar images: a pure numpy and zlib PNG decoder, and cover scaling.

The emulator carries no imaging library; an upload is decoded once per worker
process (`decoded_upload`), then scaled to each frame size once (`cover`).
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import numpy.typing as npt

__all__ = ["RGBAImage", "cover", "decode_png", "decoded_upload"]

RGBAImage = npt.NDArray[np.uint8]
"""An (height, width, 4) uint8 RGBA image."""

# What shows through a transparent part of an uploaded image.
_IMAGE_MATTE: tuple[int, int, int] = (40, 40, 46)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Channels per pixel of each PNG colour type (grey, RGB, palette, grey+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@functools.lru_cache(maxsize=8)
def decoded_upload(data: bytes) -> RGBAImage | None:
    """`data` decoded (read-only), or None when it is not a PNG this decoder reads.

    Cached: a worker decodes each image it shows once per process.
    """
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


def cover(image: RGBAImage, width: int, height: int) -> RGBAImage:
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

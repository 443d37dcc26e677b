"""PNG encoding and contact sheets with numpy and zlib only (no imaging library)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["contact_sheet", "encode_png", "write_png"]


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """Encode an (height, width, 3) uint8 RGB image as PNG bytes."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    # Filter type 0 (none) in front of every row.
    raw = np.zeros((height, width * 3 + 1), dtype=np.uint8)
    raw[:, 1:] = rgb.reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: Path, rgb: npt.NDArray[np.uint8]) -> None:
    """Write an RGB image to `path` as PNG."""
    path.write_bytes(encode_png(rgb))


def contact_sheet(
    frames: Sequence[npt.NDArray[np.uint8]],
    *,
    columns: int = 6,
    gap: int = 4,
    marks: Sequence[bool] | None = None,
) -> npt.NDArray[np.uint8]:
    """Tile RGB frames into one image, left to right, top to bottom.

    Args:
        frames: (H, W, 3) uint8 frames. Frames smaller than the largest one (a
            viewer receives lower simulcast layers first) are scaled up to it.
        columns: Frames per row.
        gap: Pixels between tiles.
        marks: Optional flag per frame; a flagged frame gets a green bar under it
            (the demo marks frames received while the agent was speaking).
    """
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    height = max(f.shape[0] for f in frames)
    width = max(f.shape[1] for f in frames)
    rows = (len(frames) + columns - 1) // columns
    bar = 6 if marks is not None else 0
    sheet = np.full(
        (rows * (height + bar + gap) + gap, columns * (width + gap) + gap, 3), 32, np.uint8
    )
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        y = gap + r * (height + bar + gap)
        x = gap + c * (width + gap)
        sheet[y : y + height, x : x + width] = _scale_to(frame, height, width)
        if marks is not None and marks[i]:
            sheet[y + height + 1 : y + height + bar, x : x + width] = (60, 200, 90)
    return sheet


def _scale_to(frame: npt.NDArray[np.uint8], height: int, width: int) -> npt.NDArray[np.uint8]:
    if frame.shape[:2] == (height, width):
        return frame
    rows = np.linspace(0, frame.shape[0] - 1, height).round().astype(np.intp)
    cols = np.linspace(0, frame.shape[1] - 1, width).round().astype(np.intp)
    scaled: npt.NDArray[np.uint8] = frame[rows][:, cols]
    return scaled

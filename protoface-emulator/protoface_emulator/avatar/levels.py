"""How loud a block of audio is, as the mouth opening it calls for (0..1).

`audio_level` of digital silence (and of noise under `NOISE_FLOOR_DBFS`) is
exactly 0.0, which closes the mouth.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["FULL_SCALE_DBFS", "NOISE_FLOOR_DBFS", "audio_level"]

NOISE_FLOOR_DBFS = -50.0
"""RMS levels at or below this read as silence (level 0.0, mouth closed)."""
FULL_SCALE_DBFS = -14.0
"""RMS levels at or above this read as full voice (level 1.0, mouth wide open).

Typical TTS speech sits around -25..-15 dBFS RMS, so speech spans most of the range.
"""


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

"""Agent audio for demos, tests and benchmarks: PCM cut into `rtc.AudioFrame`s."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
from livekit import rtc

__all__ = ["pcm_frames", "wav_frames"]


def pcm_frames(pcm: npt.NDArray[np.int16], rate: int, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    """Mono int16 samples as consecutive frames of `frame_ms` (the last may be shorter)."""
    step = rate * frame_ms // 1000
    return [
        rtc.AudioFrame(pcm[i : i + step].tobytes(), rate, 1, len(pcm[i : i + step]))
        for i in range(0, len(pcm), step)
    ]


def wav_frames(
    path: Path, *, seconds: float | None = None, frame_ms: int = 20
) -> list[rtc.AudioFrame]:
    """A mono 16-bit WAV file (optionally only its first `seconds`) as frames."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{path} must be mono 16-bit PCM")
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if seconds is not None:
        pcm = pcm[: int(seconds * rate)]
    return pcm_frames(pcm, rate, frame_ms)

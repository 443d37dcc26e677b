"""Agent audio for tests, demos and benchmarks: PCM cut into `rtc.AudioFrame`s.

A test speaks through its agent with pre-rendered audio (`session.say(text,
audio=play(frames))`), so no TTS, STT or LLM service is involved: `wav_frames`
reads a recorded line, `speech` synthesises voiced audio of any length.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from livekit import rtc

__all__ = ["audio_seconds", "pcm_frames", "play", "speech", "tone", "wav_frames"]

SPEECH_RATE = 16000


def pcm_frames(pcm: npt.NDArray[np.int16], rate: int, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    """Mono int16 samples as consecutive frames of `frame_ms` (the last may be shorter)."""
    step = rate * frame_ms // 1000
    return [
        rtc.AudioFrame(pcm[i : i + step].tobytes(), rate, 1, len(pcm[i : i + step]))
        for i in range(0, len(pcm), step)
    ]


def wav_frames(
    path: Path | str, *, seconds: float | None = None, frame_ms: int = 20
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


def speech(seconds: float, *, rate: int = SPEECH_RATE, frame_ms: int = 20) -> list[rtc.AudioFrame]:
    """Voiced, syllable-like synthetic audio, loud from its first sample to its last.

    It never drops to silence, so the avatar's mouth moves for all of it.
    """
    t = np.arange(int(rate * seconds)) / rate
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3.0 * t))
    voice = np.sin(2 * np.pi * 180 * t) + 0.3 * np.sin(2 * np.pi * 360 * t)
    return pcm_frames((0.25 * envelope * voice * 32767).astype(np.int16), rate, frame_ms)


def tone(
    seconds: float, *, hz: float = 220.0, level: float = 0.3, rate: int = SPEECH_RATE
) -> list[rtc.AudioFrame]:
    """A steady tone in 20 ms frames: every frame is equally loud, so heard seconds are exact.

    Where a test counts how much of a line a viewer heard (nothing skipped,
    nothing repeated), a tone has no quiet syllables to blur the count.
    """
    t = np.arange(int(seconds * rate)) / rate
    return pcm_frames((level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16), rate)


async def play(frames: Iterable[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    """Frames as the async iterator `AgentSession.say(..., audio=...)` takes."""
    for frame in frames:
        yield frame


def audio_seconds(frames: Iterable[rtc.AudioFrame]) -> float:
    """The total duration of `frames`, in seconds."""
    return sum(f.samples_per_channel / f.sample_rate for f in frames)

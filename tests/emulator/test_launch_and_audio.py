"""The development helpers the demo and benchmarks share: the emulator as a child
process, and agent audio cut into frames."""

from __future__ import annotations

import wave
from pathlib import Path

import aiohttp
import numpy as np

from protoface_emulator.audio import pcm_frames, wav_frames
from protoface_emulator.launch import start_emulator_process


async def test_emulator_process_serves_with_its_key_and_stops_cleanly() -> None:
    emulator = start_emulator_process(args=["--log-level", "warning"])
    try:
        assert emulator.url.startswith("http://127.0.0.1:")
        assert emulator.api_key not in repr(emulator)
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {emulator.api_key}"}
            async with http.get(f"{emulator.url}/v1/status", headers=headers) as reply:
                assert reply.status == 200
            async with http.get(f"{emulator.url}/v1/status") as reply:
                assert reply.status == 401
    finally:
        emulator.stop()
    assert emulator.process.returncode == 0


def test_pcm_is_cut_into_frames_of_the_asked_length_without_losing_samples() -> None:
    pcm = np.arange(16000 + 100, dtype=np.int16)
    frames = pcm_frames(pcm, 16000, frame_ms=20)
    assert [f.samples_per_channel for f in frames[:-1]] == [320] * 50
    assert frames[-1].samples_per_channel == 100
    joined = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert np.array_equal(joined, pcm)


def test_wav_frames_reads_mono_pcm_and_can_keep_only_the_start(tmp_path: Path) -> None:
    path = tmp_path / "line.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(np.ones(24000, dtype=np.int16).tobytes())
    assert sum(f.samples_per_channel for f in wav_frames(path)) == 24000
    assert sum(f.samples_per_channel for f in wav_frames(path, seconds=0.5)) == 12000
    assert all(f.sample_rate == 24000 for f in wav_frames(path))

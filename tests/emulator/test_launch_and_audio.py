"""The kit's helpers the demo, the benchmarks and users' tests share: the emulator as
a child process, agent audio cut into frames, and participant tokens."""

from __future__ import annotations

import wave
from pathlib import Path

import aiohttp
import jwt
import numpy as np
import pytest
from livekit.api import TokenVerifier

from protoface_emulator.testing import (
    mint_token,
    pcm_frames,
    speech,
    start_emulator_process,
    wav_frames,
)


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


def test_synthetic_speech_is_loud_from_its_first_frame_to_its_last() -> None:
    frames = speech(1.0)
    assert sum(f.samples_per_channel for f in frames) == 16000
    levels = [float(np.abs(np.frombuffer(f.data, dtype=np.int16)).mean()) for f in frames]
    assert min(levels) > 0.05 * 32767


def test_minted_tokens_admit_one_identity_to_one_room_with_its_kind_and_attributes() -> None:
    token = mint_token(
        "key", "secret-" + "x" * 32, "agent-1", "room-a", kind="agent", attributes={"a": "b"}
    )
    claims = TokenVerifier("key", "secret-" + "x" * 32).verify(token)
    assert claims.identity == "agent-1"
    assert claims.kind == "agent"
    assert claims.attributes == {"a": "b"}
    assert claims.video is not None and claims.video.room == "room-a" and claims.video.room_join
    assert claims.video.can_publish and claims.video.can_subscribe and claims.video.can_publish_data
    with pytest.raises(jwt.InvalidSignatureError):
        TokenVerifier("key", "another-secret-" + "y" * 32).verify(token)

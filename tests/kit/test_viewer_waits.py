"""The viewer's waits, fed frames by hand: what they wait for, and what they say on failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from protoface_emulator.testing import AudioSample, AvatarViewer, VideoSample
from protoface_emulator.testing.viewer import MOUTH_OPEN_THRESHOLD

OPEN = MOUTH_OPEN_THRESHOLD + 10
CLOSED = 0.0


async def _feed(viewer: AvatarViewer, openness: list[float], every: float = 0.01) -> None:
    for value in openness:
        await asyncio.sleep(every)
        viewer.video.append(VideoSample(time.monotonic(), 0.0, value))


async def test_mouth_open_counts_only_frames_from_the_call_or_since_on() -> None:
    viewer = AvatarViewer()
    viewer.video.append(VideoSample(time.monotonic(), 0.0, OPEN))  # before the wait
    with pytest.raises(AssertionError, match=r"the mouth to open: 1 video frames .* 1 with"):
        await viewer.wait_for_mouth_open(timeout=0.2)
    await viewer.wait_for_mouth_open(timeout=0.2, since=viewer.video[0].received_at)
    feeding = asyncio.create_task(_feed(viewer, [CLOSED, CLOSED, OPEN]))
    await viewer.wait_for_mouth_open(timeout=5)
    await feeding


async def test_mouth_closed_needs_that_many_consecutive_closed_frames() -> None:
    viewer = AvatarViewer()
    feeding = asyncio.create_task(_feed(viewer, [CLOSED] * 4 + [OPEN] + [CLOSED] * 4))
    with pytest.raises(AssertionError, match="stay closed for 5 frames"):
        await viewer.wait_for_mouth_closed(frames=5, timeout=0.5)
    await feeding
    feeding = asyncio.create_task(_feed(viewer, [CLOSED] * 5))
    await viewer.wait_for_mouth_closed(frames=5, timeout=5)
    await feeding


async def test_audio_wait_counts_only_speech_louder_than_the_level() -> None:
    viewer = AvatarViewer()
    now = time.monotonic()
    viewer.audio += [AudioSample(now, 0.5, 0.01), AudioSample(now, 0.5, 0.2)]
    await viewer.wait_for_audio(0.5, timeout=0.2)
    with pytest.raises(AssertionError, match=r"1 s of speech.*0\.50 s of speech heard"):
        await viewer.wait_for_audio(1.0, timeout=0.2)

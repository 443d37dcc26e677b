"""Barge-in holds on a busy machine: the worker's queues ahead of the room, and their flush.

The agent's own track keeps ~200 ms of its audio queued in its `AudioSource`, so a
loop stall shorter than that does not reach the room; `clear_buffer` flushes it, so
barge-in does not wait for it. The worker's generator feeds livekit-agents' runner
the same way: these tests drive `FaceVideoGenerator` into a real `AVSynchronizer`
over a real native `AudioSource`, sized as `AvatarWorker` sizes them, and check the
audio held ahead (a property of the queues, not of the machine's speed). Timing
itself is measured by `benchmarks/bargein_load.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from protoface_emulator.avatar.generator import FaceVideoGenerator
from protoface_emulator.avatar.options import WorkerOptions
from protoface_emulator.avatar.worker import _queue_size_ms

OPTIONS = WorkerOptions()  # 320x320 @ 20 fps, 24 kHz mono
RATE = OPTIONS.audio_sample_rate


def speech(seconds: float) -> npt.NDArray[np.int16]:
    """A voiced tone that never drops to silence."""
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.25 * np.sin(2 * np.pi * 200 * t) * 32767).astype(np.int16)


def frames_of(samples: npt.NDArray[np.int16], ms: int = 100) -> list[rtc.AudioFrame]:
    """`samples` cut into frames of `ms`, as the agent's data stream delivers them."""
    step = RATE * ms // 1000
    return [
        rtc.AudioFrame(samples[i : i + step].tobytes(), RATE, 1, len(samples[i : i + step]))
        for i in range(0, len(samples), step)
    ]


async def _forward(gen: FaceVideoGenerator, av_sync: rtc.AVSynchronizer) -> None:
    """What `AvatarRunner` does with the generator's items (segment ends aside)."""
    async for item in gen:
        if not isinstance(item, AudioSegmentEnd):
            await av_sync.push(item)


@contextlib.asynccontextmanager
async def _runner_queues(
    gen: FaceVideoGenerator, options: WorkerOptions
) -> AsyncIterator[rtc.AudioSource]:
    """The runner's audio source and synchronizer, as `AvatarWorker` sizes them, fed by `gen`."""
    queue_ms = _queue_size_ms(options.video_fps)
    audio = rtc.AudioSource(
        options.audio_sample_rate, options.audio_channels, queue_size_ms=queue_ms
    )
    video = rtc.VideoSource(options.video_width, options.video_height)
    av_sync = rtc.AVSynchronizer(
        audio_source=audio,
        video_source=video,
        video_fps=options.video_fps,
        video_queue_size_ms=queue_ms,
    )
    gen.attach_synchronizer(av_sync)
    forward = asyncio.create_task(_forward(gen, av_sync))
    try:
        yield audio
    finally:
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forward
        await av_sync.aclose()
        await audio.aclose()
        await video.aclose()


async def _held_while_speaking(audio: rtc.AudioSource, seconds: float) -> list[float]:
    """How much audio the source holds, sampled every 10 ms for `seconds`."""
    held = []
    for _ in range(int(seconds / 0.01)):
        await asyncio.sleep(0.01)
        held.append(audio.queued_duration)
    return held


async def test_while_speaking_audio_is_queued_ahead_so_a_stall_does_not_run_it_dry() -> None:
    # Before: the queue was one frame period deep and the generator was throttled
    # by idle frames queued ahead of the speech; the source held ~70 ms, so a
    # loop stall under load left a gap in the room's audio.
    gen = FaceVideoGenerator(OPTIONS)
    async with _runner_queues(gen, OPTIONS) as audio:
        await asyncio.sleep(0.3)  # idle first, as between lines
        for frame in frames_of(speech(4.0)):
            await gen.push_audio(frame)
        await asyncio.sleep(0.5)  # the queues fill in the first frames
        held = await _held_while_speaking(audio, 1.5)
    assert statistics.median(held) >= 0.15, f"median audio held {statistics.median(held):.3f} s"


async def test_barge_in_flushes_the_audio_queued_ahead() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    async with _runner_queues(gen, OPTIONS) as audio:
        for frame in frames_of(speech(4.0)):
            await gen.push_audio(frame)
        await asyncio.sleep(0.5)
        assert max(await _held_while_speaking(audio, 0.5)) > 0.0
        flushed = gen.clear_buffer()
        assert flushed is not None
        await flushed
        assert audio.queued_duration == 0.0
        held_after = await _held_while_speaking(audio, 0.5)
    assert max(held_after) == 0.0, "nothing was queued after the interruption"


async def test_audio_trickling_in_below_a_period_does_not_spin_out_idle_frames() -> None:
    # Before: any audio queued, even less than a frame period's, ended the idle
    # wait at once, so a consumer got closed-mouth frames as fast as it could take
    # them, all queued ahead of the speech they preceded.
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    trickle = frames_of(speech(0.6), ms=10)

    async def feed() -> None:
        for frame in trickle:
            await gen.push_audio(frame)
            await asyncio.sleep(0.04)  # 10 ms of audio every 40 ms: slower than real time

    feeding = asyncio.create_task(feed())
    loop = asyncio.get_running_loop()
    began = loop.time()
    idle = 0
    while loop.time() - began < 0.5:
        item = await it.__anext__()
        if isinstance(item, rtc.VideoFrame):
            idle += 1
    feeding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feeding
    # Speaking frames come as a period's audio is complete (every ~200 ms here);
    # the rest are idle frames at the frame rate.
    assert idle <= 0.5 * OPTIONS.video_fps + 6, idle

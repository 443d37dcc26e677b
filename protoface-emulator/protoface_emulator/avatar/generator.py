"""The face the avatar shows: a `VideoGenerator` that speaks the agent's audio.

Playback protocol. The runner reports `lk.playback_started` when the first
audio frame of a segment leaves the generator and `lk.playback_finished` when
the generator yields `AudioSegmentEnd` (interrupted=False, position = seconds
played), or, on the agent's `lk.clear_buffer` RPC, right after
`FaceVideoGenerator.clear_buffer` (interrupted=True, position = seconds played
so far). So the generator emits audio only for the agent's speech (never filler
silence, which would count as playback) and swallows the end marker of a segment
it already cleared (which would otherwise finish the *next* segment early).

Drawing is negligible (the face and every mouth shape are drawn once per size,
then pasted; a frame costs tens of microseconds); a session's CPU goes to
libwebrtc's media pipeline and the plumbing that hands it each frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine

import numpy as np
import numpy.typing as npt
from livekit import rtc
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    VideoGenerator,
)

from .face import FaceRenderer
from .levels import audio_level
from .options import WorkerOptions

__all__ = ["FaceVideoGenerator"]

# a frame period or two in practice.
_CONSUMER_WAIT = 0.5


class FaceVideoGenerator(VideoGenerator):
    """The `VideoGenerator` of the emulator: a face that speaks the agent's audio.

    Pushed audio is converted to the published rate and channel count and queued.
    Iterating yields, once per video frame period, a video frame whose mouth
    follows the level of that period's audio, then that audio as an
    `rtc.AudioFrame` (so each frame's sound and picture leave together), and an
    `AudioSegmentEnd` right after the last audio of a segment. With nothing
    queued it yields closed-mouth video frames only. The consumer (the runner's
    `AVSynchronizer`) paces the iteration at the frame rate.

    Args:
        options: Frame size, rate and audio format.
        renderer: Draws the frames; a fresh `FaceRenderer` by default.
        on_audio: Called whenever agent audio is pushed.
        on_frame_published: Called with the running count each time the consumer
            comes back for more after a video frame, i.e. once that frame has been
            handed to the synchronizer (the runner publishes its tracks before the
            first one).
        first_frame_delay: Seconds to wait before the first frame (`timing.py`).
    """

    def __init__(
        self,
        options: WorkerOptions,
        *,
        renderer: FaceRenderer | None = None,
        on_audio: Callable[[], None] | None = None,
        on_frame_published: Callable[[int], None] | None = None,
        first_frame_delay: float = 0.0,
    ) -> None:
        self._options = options
        self._first_frame_delay = first_frame_delay
        self._renderer = renderer or FaceRenderer(
            options.video_width, options.video_height, options.video_fps
        )
        if (self._renderer.width, self._renderer.height) != (
            options.video_width,
            options.video_height,
        ):
            raise ValueError("the renderer's frame size must match the options")
        self._on_audio = on_audio
        self._on_frame_published = on_frame_published
        self._channels = options.audio_channels
        # Agent audio at the published format, interleaved int16, and segment ends.
        self._queue: deque[npt.NDArray[np.int16] | AudioSegmentEnd] = deque()
        self._queued_samples = 0  # per channel, across the queue
        self._queued_ends = 0
        # Whether audio of a not yet ended segment has been pushed since the last
        # end or clear; an end marker with no such audio is a cleared segment's.
        self._segment_open = False
        self._resampler: rtc.AudioResampler | None = None
        self._resampler_rate = 0
        self._generation = 0  # bumped by clear_buffer
        self._audio_periods = 0  # audio frames emitted, for drift-free chunk sizes
        self._frames_published = 0
        self._av_sync: rtc.AVSynchronizer | None = None
        # Clear while the consumer holds a yielded item; set when it asks for more.
        self._consumer_idle = asyncio.Event()
        self._consumer_idle.set()
        # Set when audio (or a segment end) is queued; idle frames wait on it.
        self._audio_queued = asyncio.Event()
        # When (time.monotonic()) the audio handed to the room so far is played
        # out: the room's audio source plays it in real time, behind its queue.
        self._played_out_at = 0.0

    @property
    def frames_published(self) -> int:
        """Video frames handed to the consumer so far."""
        return self._frames_published

    @property
    def queued_duration(self) -> float:
        """Seconds of agent audio waiting to be played."""
        return self._queued_samples / self._options.audio_sample_rate

    def playout_ahead(self) -> float:
        """Seconds of the audio handed to the room that a listener has not heard yet.

        A segment's end reaches the runner when its last frame was handed over,
        up to the runner's queue depth before it is heard: its finish notice
        waits this long (`notices.AgentAudioReceiver.playout_ahead`).
        """
        return max(0.0, self._played_out_at - time.monotonic())

    def attach_synchronizer(self, av_sync: rtc.AVSynchronizer) -> None:
        """Also flush `av_sync`'s queues on `clear_buffer`, so interruptions are immediate.

        Args:
            av_sync: The runner's synchronizer (`AvatarRunner.av_sync`).
        """
        self._av_sync = av_sync

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Queue the agent's audio, or mark the end of its current segment.

        Args:
            frame: An audio frame at any rate and channel count, or `AudioSegmentEnd`.
        """
        if isinstance(frame, AudioSegmentEnd):
            if not self._segment_open:
                # The receiver ends a segment it has cleared; that segment's playback
                # was already reported as interrupted.
                return
            if self._resampler is not None:
                for out in self._resampler.flush():
                    self._enqueue(np.frombuffer(out.data, dtype=np.int16))
                self._resampler = None
            self._queue.append(frame)
            self._queued_ends += 1
            self._segment_open = False
            self._audio_queued.set()
            return

        self._segment_open = True
        if self._on_audio is not None:
            self._on_audio()
        self._enqueue(self._convert(frame))

    def clear_buffer(self) -> Coroutine[None, None, None] | None:
        """Drop all queued audio at once (the agent was interrupted).

        The mouth closes from the next frame; the runner then reports the playback
        as interrupted. If a synchronizer is attached, the returned coroutine (the
        runner awaits it before reporting) also drops what the synchronizer has
        buffered and waits for the runner to be done with the frame it holds.
        """
        self._queue.clear()
        self._queued_samples = 0
        self._queued_ends = 0
        self._segment_open = False
        self._resampler = None
        self._generation += 1
        self._played_out_at = 0.0  # what the room held is dropped with it
        self._renderer.close_mouth()
        if self._av_sync is not None:
            return self._flush_downstream(self._av_sync)
        return None

    async def _flush_downstream(self, av_sync: rtc.AVSynchronizer) -> None:
        await av_sync.clear_queue()
        # The runner may be mid-push of an audio frame, which it adds to its playback
        # position once the push returns. Wait for that, so the position it reports
        # as interrupted is final and the reset that follows starts the next segment
        # at 0 (otherwise the stray frame counts into the next segment and hides its
        # playback_started). Bounded: the consumer may be gone.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._consumer_idle.wait(), timeout=_CONSUMER_WAIT)

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        """Frames forever: see the class docstring for what and in which order."""
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        if self._first_frame_delay > 0:
            # A hosted avatar's first frame comes a while after its tracks (`timing.py`).
            await asyncio.sleep(self._first_frame_delay)
            self._first_frame_delay = 0.0
        async for item in self._produce():
            self._consumer_idle.clear()
            yield item
            self._consumer_idle.set()

    async def _wait_for_audio(self, timeout: float) -> None:
        """Wait up to `timeout` for a frame period's audio (or a segment end) to be queued."""
        self._audio_queued.clear()
        if self._period_ready():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._audio_queued.wait(), timeout=timeout)

    async def _produce(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        options = self._options
        period = 1.0 / options.video_fps
        # While there is nothing to say, one closed-mouth frame per period, however
        # often audio trickles in: the consumer takes frames as fast as its queue
        # drains, and idle frames queued ahead would show the speech that follows
        # them late. Speaking frames are not paced here: they run ahead into the
        # runner's queues (`_RUNNER_QUEUE_MS`), which pace them.
        idle_due = 0.0
        while True:
            if self._queue and isinstance(self._queue[0], AudioSegmentEnd):
                self._queue.popleft()
                self._queued_ends -= 1
                yield AudioSegmentEnd()
                continue

            generation = self._generation
            chunk = self._take_period()
            if chunk is None:
                wait = idle_due - time.monotonic()
                if wait > 0:
                    await self._wait_for_audio(wait)
                    continue
                idle_due = time.monotonic() + period
            level = audio_level(chunk) if chunk is not None else 0.0
            yield rtc.VideoFrame(
                options.video_width,
                options.video_height,
                rtc.VideoBufferType.I420,
                self._renderer.render_i420(level),
            )
            self._frames_published += 1
            if self._on_frame_published is not None:
                self._on_frame_published(self._frames_published)

            if chunk is None or generation != self._generation:
                continue  # nothing to say, or cleared while the frame was being consumed
            samples = chunk.size // self._channels
            seconds = samples / options.audio_sample_rate
            self._played_out_at = max(self._played_out_at, time.monotonic()) + seconds
            yield rtc.AudioFrame(
                chunk.tobytes(), options.audio_sample_rate, self._channels, samples
            )

    def _period_samples(self) -> int:
        """Samples per channel in the next frame period (drift-free across periods)."""
        rate = self._options.audio_sample_rate
        fps = self._options.video_fps
        k = self._audio_periods
        return math.floor((k + 1) * rate / fps) - math.floor(k * rate / fps)

    def _period_ready(self) -> bool:
        """Whether `_take_period` has a period to give, or a segment end is queued."""
        return self._queued_ends > 0 or self._queued_samples >= self._period_samples()

    def _take_period(self) -> npt.NDArray[np.int16] | None:
        """The audio for the next frame period, or None if there is none to play.

        A short chunk is returned only at the end of a segment; while a segment is
        still arriving and less than a period is queued, the frame waits (None).
        """
        wanted = self._period_samples()
        if self._queued_samples == 0 or (self._queued_samples < wanted and not self._queued_ends):
            return None

        channels = self._channels
        parts: list[npt.NDArray[np.int16]] = []
        taken = 0
        while taken < wanted and self._queue:
            head = self._queue[0]
            if isinstance(head, AudioSegmentEnd):
                break
            n = min(wanted - taken, head.size // channels)
            parts.append(head[: n * channels])
            if n * channels == head.size:
                self._queue.popleft()
            else:
                self._queue[0] = head[n * channels :]
            taken += n
        if taken == 0:
            return None
        self._queued_samples -= taken
        self._audio_periods += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _enqueue(self, samples: npt.NDArray[np.int16]) -> None:
        if samples.size:
            self._queue.append(samples)
            self._queued_samples += samples.size // self._channels
            self._audio_queued.set()

    def _convert(self, frame: rtc.AudioFrame) -> npt.NDArray[np.int16]:
        """The frame's samples at the published channel count and rate, interleaved."""
        channels = self._channels
        data = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels != channels:
            mono = data.reshape(-1, frame.num_channels).mean(axis=1)
            mixed = np.repeat(mono, channels) if channels > 1 else mono
            data = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
        if frame.sample_rate == self._options.audio_sample_rate:
            return data

        if self._resampler is None or self._resampler_rate != frame.sample_rate:
            pending: list[npt.NDArray[np.int16]] = []
            if self._resampler is not None:
                pending = [np.frombuffer(f.data, dtype=np.int16) for f in self._resampler.flush()]
            self._resampler = rtc.AudioResampler(
                frame.sample_rate,
                self._options.audio_sample_rate,
                num_channels=channels,
            )
            self._resampler_rate = frame.sample_rate
            for part in pending:
                self._enqueue(part)
        out = self._resampler.push(bytearray(data.tobytes()))
        if not out:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])

"""One LiveKit participant per session: the emulator's avatar worker.

`start_worker` (a `lifecycle.WorkerFactory`) joins the customer's room with the
session's worker token and identity, receives the agent's speech over LiveKit
data streams (`notices.AgentAudioReceiver`), and publishes a talking face and the
lip-synced speech on the agent's behalf through livekit-agents' `AvatarRunner`.
The token carries the `lk.publish_on_behalf` attribute, so the agent's room I/O
treats these tracks as the agent's own. What happens in the room is reported to
the store through `WorkerEvents`; nothing here knows HTTP or billing.

How the pieces fit:

    agent --data stream--> AgentAudioReceiver --> AvatarRunner --> FaceVideoGenerator
    FaceVideoGenerator --video frame + that frame period's audio--> AvatarRunner
    AvatarRunner --AVSynchronizer--> published video + audio tracks --> viewers
    AvatarRunner --lk.playback_started / lk.playback_finished RPCs--> agent

Playback protocol. The runner reports `lk.playback_started` when the first
audio frame of a segment leaves the generator and `lk.playback_finished` when
the generator yields `AudioSegmentEnd` (interrupted=False, position = seconds
played), or, on the agent's `lk.clear_buffer` RPC, right after
`FaceVideoGenerator.clear_buffer` (interrupted=True, position = seconds played
so far). So the generator emits audio only for the agent's speech (never filler
silence, which would count as playback) and swallows the end marker of a segment
it already cleared (which would otherwise finish the *next* segment early).

Audio sources: `audio_source="data_stream"` is the LiveKit Agents path above.
`audio_source="track"` is supported minimally: the worker listens to the
microphone track of `subscribe_to_identity`, re-publishes it lip-synced, and
splits it into segments at 0.3 s of silence; there is no playback protocol
since nobody sends one. `synthetic_audio_if_no_input` is accepted and ignored:
the worker publishes its (silent, idle) face once the agent is in the room.

Video and CPU. A session's `quality` picks its video (`VIDEO_TIERS`): `mock`
64x64 @ 5 fps, `lite` 160x160 @ 15, `standard` 320x320 @ 20 (the default, and
what `WorkerOptions` / `PROTOFACE_EMULATOR_VIDEO_WIDTH` / `_HEIGHT` / `_FPS`
set), `pro` 512x512 @ 20; audio 24 kHz mono. No tier goes past 20 fps because
LiveKit's default encoding for video this small sends at most 20 (a 25 fps
source reaches viewers at 20 anyway). Each tier's measured cost, and where a
session's CPU goes, are in the emulator README ("The avatar worker"), measured
with `benchmarks/worker_cpu.py`. In short: drawing is negligible (the face and
every mouth shape are drawn once per size, then pasted; a frame costs tens of
microseconds); the cost is libwebrtc's per-session media pipeline (VP8 and
Opus encoders, audio capture ticks, the network thread) and the Python/FFI
plumbing that hands it each frame.

The worker token is a secret: it is never logged, and LiveKit's connect errors
(which quote the token back) are redacted before they are reported or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.utils import wait_for_participant
from livekit.agents.voice.avatar import (
    AudioReceiver,
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    VideoGenerator,
)

from protoface_emulator.lifecycle import (
    FAILURE_LIVEKIT_AUTH,
    FAILURE_LIVEKIT_UNREACHABLE,
    FAILURE_WORKER_CRASHED,
    FAILURE_WORKER_LOST,
    WorkerEvents,
    WorkerFactory,
    WorkerHandle,
    WorkerSpec,
)

from .face import FaceRenderer, audio_level, style_from_wire
from .notices import AgentAudioReceiver

__all__ = [
    "ENV_VIDEO_FPS",
    "ENV_VIDEO_HEIGHT",
    "ENV_VIDEO_WIDTH",
    "VIDEO_TIERS",
    "AvatarWorker",
    "FaceVideoGenerator",
    "VideoTier",
    "WorkerOptions",
    "make_worker_factory",
    "start_worker",
]

logger = logging.getLogger("protoface_emulator.worker")

ENV_VIDEO_WIDTH: Final = "PROTOFACE_EMULATOR_VIDEO_WIDTH"
"""Environment override of `WorkerOptions.video_width`."""
ENV_VIDEO_HEIGHT: Final = "PROTOFACE_EMULATOR_VIDEO_HEIGHT"
"""Environment override of `WorkerOptions.video_height`."""
ENV_VIDEO_FPS: Final = "PROTOFACE_EMULATOR_VIDEO_FPS"
"""Environment override of `WorkerOptions.video_fps`."""

# How long cleanup may take when a worker is closed before it is abandoned: aclose()
# must return promptly even if the native SDK hangs.
_CLOSE_TIMEOUT = 5.0
# How far the runner's audio and video queues run ahead of real time while the
# avatar speaks, as the agent's own track does (livekit-agents queues 200 ms of its
# audio): on a busy machine the loop stalls for tens to hundreds of ms, and a queue
# kept empty ran dry on each stall; the sender fell silent, the viewer's jitter buffer
# grew to cover the gaps, and everything after, barge-in included, was heard that
# much later. Both queues are equally deep, so the mouth keeps to the speech, and
# `clear_buffer` flushes both, so barge-in does not wait for them.
_RUNNER_QUEUE_MS = 200
# The idle timer only needs a heartbeat, not a call per 100 ms audio frame.
_AUDIO_EVENT_INTERVAL = 0.5
# How long an interruption waits for the runner to finish pushing the frame it holds;
# a frame period or two in practice.
_CONSUMER_WAIT = 0.5
# audio_source="track": this much silence ends a segment.
_TRACK_SEGMENT_SILENCE = 0.3

# JWTs (three base64url parts, the first being a JSON header) anywhere in a message.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ACCESS_TOKEN_RE = re.compile(r"(access_token=)[^&\s]+")


@dataclass(frozen=True)
class VideoTier:
    """The video one session `quality` renders.

    Attributes:
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Frames per second.
    """

    width: int
    height: int
    fps: float


VIDEO_TIERS: Final[Mapping[str, VideoTier]] = {
    # Cheapest first. A session's cost is mostly per frame (encoding and the FFI
    # hop), then per pixel, so the cheap tiers cut the rate as well as the size.
    "mock": VideoTier(64, 64, 5.0),
    "lite": VideoTier(160, 160, 15.0),
    "standard": VideoTier(320, 320, 20.0),
    # 20, not more: LiveKit's default encoding for this size sends at most 20 fps,
    # so frames drawn beyond it would be encoded for nobody.
    "pro": VideoTier(512, 512, 20.0),
}
"""What each `quality` renders. `standard` is `WorkerOptions`' own size and rate
(so `PROTOFACE_EMULATOR_VIDEO_*` and explicit options change it); the others are fixed."""


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker renders and connects; the same for every session of an emulator.

    Attributes:
        video_width: Published video width in pixels (even, at least 32).
        video_height: Published video height in pixels (even, at least 32).
        video_fps: Published video frame rate.
        audio_sample_rate: Sample rate of the published audio; the agent's audio
            is resampled to it when it differs.
        audio_channels: Channels of the published audio (1 or 2).
        connect_timeout: Bound, in seconds, on joining the room; past it the
            session fails with `livekit_unreachable`.
        frames_report_interval: How often, in seconds, published frames are
            reported through `WorkerEvents.on_frames`.
    """

    video_width: int = 320
    video_height: int = 320
    video_fps: float = 20.0
    audio_sample_rate: int = 24000
    audio_channels: int = 1
    connect_timeout: float = 10.0
    frames_report_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("video_width", "video_height"):
            value = getattr(self, name)
            if value < 32 or value % 2:
                raise ValueError(f"{name} must be an even number of pixels >= 32, got {value!r}")
        if not 1.0 <= self.video_fps <= 60.0:
            raise ValueError(f"video_fps must be between 1 and 60, got {self.video_fps!r}")
        if self.audio_sample_rate < 8000:
            raise ValueError(
                f"audio_sample_rate must be at least 8000 Hz, got {self.audio_sample_rate!r}"
            )
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels!r}")
        if self.connect_timeout <= 0 or self.frames_report_interval <= 0:
            raise ValueError("connect_timeout and frames_report_interval must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerOptions:
        """Defaults, overridden by `PROTOFACE_EMULATOR_VIDEO_WIDTH`, `_HEIGHT` and `_FPS`.

        Args:
            environ: Where to read the variables; `os.environ` by default.

        Raises:
            ValueError: A variable is set to something that is not a valid value;
                the message names the variable and the value.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for var, name, kind in (
            (ENV_VIDEO_WIDTH, "video_width", int),
            (ENV_VIDEO_HEIGHT, "video_height", int),
            (ENV_VIDEO_FPS, "video_fps", float),
        ):
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                kwargs[name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{var}={raw!r} is not a valid {kind.__name__}; unset it or set e.g. "
                    f"{var}={getattr(cls(), name)}"
                ) from None
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(
                f"invalid emulator video settings from the environment: {exc}"
            ) from None

    def for_quality(self, quality: str) -> WorkerOptions:
        """These options with the video of `quality`'s tier (see `VIDEO_TIERS`).

        `standard` keeps this object's own size and rate.

        Raises:
            ValueError: `quality` is not one of `VIDEO_TIERS`.
        """
        if quality == "standard":
            return self
        tier = VIDEO_TIERS.get(quality)
        if tier is None:
            raise ValueError(f"quality must be one of {', '.join(VIDEO_TIERS)}, got {quality!r}")
        return dataclasses.replace(
            self, video_width=tier.width, video_height=tier.height, video_fps=tier.fps
        )

    def avatar_options(self) -> AvatarOptions:
        """The same settings in the form `AvatarRunner` takes."""
        return AvatarOptions(
            video_width=self.video_width,
            video_height=self.video_height,
            video_fps=self.video_fps,
            audio_sample_rate=self.audio_sample_rate,
            audio_channels=self.audio_channels,
        )


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

    @property
    def frames_published(self) -> int:
        """Video frames handed to the consumer so far."""
        return self._frames_published

    @property
    def queued_duration(self) -> float:
        """Seconds of agent audio waiting to be played."""
        return self._queued_samples / self._options.audio_sample_rate

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
            yield rtc.AudioFrame(
                chunk.tobytes(),
                options.audio_sample_rate,
                self._channels,
                chunk.size // self._channels,
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


class _TrackAudioReceiver(AudioReceiver):
    """`audio_source="track"`: a participant's microphone track as speech segments.

    Frames are forwarded while there is sound and for `_TRACK_SEGMENT_SILENCE`
    after it; then the segment ends and silence is dropped until sound returns,
    so the avatar's audio and mouth rest like they do with data streams. There is
    no sender to tell about playback, so the notifications go nowhere.
    """

    def __init__(
        self, room: rtc.Room, identity: str | None, *, sample_rate: int, num_channels: int
    ) -> None:
        super().__init__()
        self._room = room
        self._identity = identity
        self._sample_rate = sample_rate
        self._num_channels = num_channels
        self._stream: rtc.AudioStream | None = None

    async def start(self) -> None:
        """Wait for the participant (None: the first to join), then listen to its microphone."""
        participant = await wait_for_participant(room=self._room, identity=self._identity)
        self._stream = rtc.AudioStream.from_participant(
            participant=participant,
            track_source=rtc.TrackSource.SOURCE_MICROPHONE,
            sample_rate=self._sample_rate,
            num_channels=self._num_channels,
            frame_size_ms=50,
        )

    def notify_playback_started(self) -> None:
        """Nobody to notify for a track."""

    def notify_playback_finished(self, playback_position: float, interrupted: bool) -> None:
        """Nobody to notify for a track."""

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        """Speech frames, with `AudioSegmentEnd` after each pause."""
        return self._segments()

    async def _segments(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        if self._stream is None:
            raise RuntimeError("start() first")
        silent_for: float | None = None  # None: not in a segment
        async for event in self._stream:
            frame = event.frame
            if audio_level(np.frombuffer(frame.data, dtype=np.int16)) > 0.0:
                silent_for = 0.0
            elif silent_for is None:
                continue
            else:
                silent_for += frame.duration
                if silent_for >= _TRACK_SEGMENT_SILENCE:
                    silent_for = None
                    yield AudioSegmentEnd()
                    continue
            yield frame

    async def aclose(self) -> None:
        """Stop listening."""
        if self._stream is not None:
            await self._stream.aclose()


class AvatarWorker:
    """One session's avatar: a participant in the customer's room.

    Use `start_worker` (or `make_worker_factory`) rather than this class directly.

    Args:
        spec: Where to join and as whom, with the token.
        events: Where to report what happens.
        options: Rendering and connection settings.
    """

    def __init__(self, spec: WorkerSpec, events: WorkerEvents, options: WorkerOptions) -> None:
        self._spec = spec
        self._events = events
        self._options = options.for_quality(spec.quality)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failed = False
        self._first_frame_seen = False
        self._frames_reported = 0
        self._generator: FaceVideoGenerator | None = None
        self._last_audio_event = -math.inf
        self._lost: asyncio.Future[str] | None = None
        self._pending_connect: asyncio.Future[None] | None = None
        self._runner_started = False
        self._stopping = False

    @property
    def spec(self) -> WorkerSpec:
        """The session this worker serves."""
        return self._spec

    def start(self) -> None:
        """Start joining the room in the background; returns at once."""
        if self._task is not None:
            return
        _install_token_redaction()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"protoface-worker-{self._spec.session_id}"
        )

    async def wait_closed(self) -> None:
        """Wait until the worker has left the room (after a failure or `aclose`)."""
        if self._task is not None:
            await asyncio.wait({self._task})

    async def aclose(self) -> None:
        """Leave the room and release everything; idempotent, never raises."""
        self._closing = True
        task = self._task
        if task is None:
            return
        if not task.done() and not self._stopping:
            # Once: a second cancel would interrupt the cleanup that leaves the room.
            self._stopping = True
            task.cancel()
        # The run task reports its own errors; waiting never raises them here.
        _, pending = await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT)
        if pending:
            logger.warning(
                "avatar worker did not stop within %.0f s",
                _CLOSE_TIMEOUT,
                extra={"session_id": self._spec.session_id},
            )

    async def _run(self) -> None:
        spec = self._spec
        log_extra = {"session_id": spec.session_id, "room": spec.room_name}
        room = rtc.Room()
        self._lost = asyncio.get_running_loop().create_future()
        room.on("disconnected", self._on_disconnected)
        runner: AvatarRunner | None = None
        frames_task: asyncio.Task[None] | None = None
        try:
            self._events.on_connecting()
            if not await self._connect(room):
                return
            logger.info("avatar worker joined as %s", spec.identity, extra=log_extra)

            options = self._options

            # Each avatar its own look, drawn once per worker process and size.
            # An upload is decoded and drawn off the loop (a large image takes a
            # while, and other sessions' frames share this loop); a stock look is
            # quick and drawn here: drawing threads in a busy host process
            # starved the loop enough for a second session's join to time out.
            def renderer_for_spec() -> FaceRenderer:
                return FaceRenderer(
                    options.video_width,
                    options.video_height,
                    options.video_fps,
                    style=style_from_wire(spec.avatar_id, spec.avatar_image),
                )

            renderer = (
                await asyncio.to_thread(renderer_for_spec)
                if spec.avatar_image
                else renderer_for_spec()
            )
            generator = FaceVideoGenerator(
                options,
                renderer=renderer,
                on_audio=self._on_audio,
                on_frame_published=self._on_frame_published,
                first_frame_delay=spec.first_frame_delay,
            )
            self._generator = generator
            runner = AvatarRunner(
                room,
                audio_recv=self._audio_receiver(room),
                video_gen=generator,
                options=self._options.avatar_options(),
                _queue_size_ms=_queue_size_ms(self._options.video_fps),
            )
            generator.attach_synchronizer(runner.av_sync)
            frames_task = asyncio.create_task(self._report_frames())
            # start() waits for the agent to be in the room.
            await self._until_lost(runner.start())
            self._runner_started = True
            await self._until_lost(runner.wait_for_complete())
            # The frame loop never ends by itself; the audio side did.
            self._fail(FAILURE_WORKER_CRASHED, "the avatar's audio receiver stopped")
        except _Lost as lost:
            self._fail(
                FAILURE_WORKER_LOST, f"the worker was disconnected from the room ({lost.reason})"
            )
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except Exception as exc:
            logger.exception("avatar worker crashed", extra=log_extra)
            self._fail(FAILURE_WORKER_CRASHED, f"{type(exc).__name__}: {_redact(str(exc))}")
        finally:
            self._closing = True
            self._stopping = True  # from here on, aclose() only waits
            await self._cleanup(room, runner, frames_task)
            logger.info("avatar worker left the room", extra=log_extra)

    async def _connect(self, room: rtc.Room) -> bool:
        """Join the room within the bound; report and return False if it fails."""
        spec = self._spec
        bound = self._options.connect_timeout
        connect = asyncio.ensure_future(
            room.connect(
                spec.url,
                spec.token,
                # Each signal attempt is bounded by the SDK; our bound covers them all.
                rtc.RoomOptions(auto_subscribe=True, connect_timeout=min(5.0, bound)),
            )
        )
        try:
            # asyncio.wait, not wait_for: cancelling a native connect midway could
            # leave an orphan participant in the room; _cleanup lets it settle, then
            # leaves.
            done, _ = await asyncio.wait({connect}, timeout=bound)
        except asyncio.CancelledError:
            self._pending_connect = connect
            raise
        if not done:
            self._pending_connect = connect
            self._fail(
                FAILURE_LIVEKIT_UNREACHABLE,
                f"could not join the room at {spec.url} within {bound:g} s",
            )
            return False
        exc = connect.exception()
        if exc is None:
            return True
        message = _redact(getattr(exc, "message", None) or str(exc))
        if isinstance(exc, rtc.ConnectError) and _is_auth_error(message):
            self._fail(
                FAILURE_LIVEKIT_AUTH,
                f"LiveKit at {spec.url} refused the worker token: {message}",
            )
        elif isinstance(exc, rtc.ConnectError):
            self._fail(
                FAILURE_LIVEKIT_UNREACHABLE,
                f"could not connect to LiveKit at {spec.url}: {message}",
            )
        else:
            self._fail(FAILURE_WORKER_CRASHED, f"{type(exc).__name__}: {message}")
        return False

    def _audio_receiver(self, room: rtc.Room) -> AudioReceiver:
        spec = self._spec
        on_behalf = room.local_participant.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) or None
        if spec.audio_source == "track":
            # subscribe_to_identity is optional in the API: unpinned, listen to the
            # agent named in our token, else to the first participant who joins.
            return _TrackAudioReceiver(
                room,
                spec.subscribe_to_identity or on_behalf,
                sample_rate=self._options.audio_sample_rate,
                num_channels=self._options.audio_channels,
            )
        # Listen to the agent we publish for (named in our token) rather than to
        # whichever agent joins first.
        return AgentAudioReceiver(room, on_behalf, ack_delay=spec.ack_delay)

    async def _until_lost(self, aw: Coroutine[Any, Any, None]) -> None:
        """Await `aw`, unless the room is lost first (raises `_Lost`)."""
        assert self._lost is not None
        task = asyncio.ensure_future(aw)
        waiters: set[asyncio.Future[Any]] = {task, self._lost}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if self._lost.done():
            # Checked first: losing the room also makes the awaited work fail.
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise _Lost(self._lost.result())
        task.result()

    async def _cleanup(
        self,
        room: rtc.Room,
        runner: AvatarRunner | None,
        frames_task: asyncio.Task[None] | None,
    ) -> None:
        if frames_task is not None:
            frames_task.cancel()
            with contextlib.suppress(BaseException):
                await frames_task
        if runner is not None:
            try:
                if self._runner_started:
                    await asyncio.wait_for(runner.aclose(), _CLOSE_TIMEOUT)
                else:
                    # AvatarRunner.aclose() assumes start() completed; release what
                    # its constructor started (the synchronizer's capture task).
                    await runner.av_sync.aclose()
            except Exception:
                logger.warning("closing the avatar runner failed", exc_info=True)
        self._report_new_frames()
        pending = self._pending_connect
        if pending is not None and not pending.done():
            # Let the native connect finish so that we can leave, not linger.
            await asyncio.wait({pending}, timeout=_CLOSE_TIMEOUT)
        if pending is not None and pending.done() and not pending.cancelled():
            pending.exception()  # retrieved: the outcome was already reported
        room.off("disconnected", self._on_disconnected)
        if room.isconnected():
            try:
                await asyncio.wait_for(room.disconnect(), _CLOSE_TIMEOUT)
            except Exception:
                logger.warning("leaving the room failed", exc_info=True)

    async def _report_frames(self) -> None:
        while True:
            await asyncio.sleep(self._options.frames_report_interval)
            self._report_new_frames()

    def _report_new_frames(self) -> None:
        if self._generator is None:
            return
        published = self._generator.frames_published
        if published > self._frames_reported:
            self._events.on_frames(published - self._frames_reported)
            self._frames_reported = published

    def _on_frame_published(self, count: int) -> None:
        if not self._first_frame_seen:
            self._first_frame_seen = True
            self._events.on_first_frame()

    def _on_audio(self) -> None:
        now = time.monotonic()
        if now - self._last_audio_event >= _AUDIO_EVENT_INTERVAL:
            self._last_audio_event = now
            self._events.on_audio()

    def _on_disconnected(self, reason: int) -> None:
        if self._closing or self._lost is None or self._lost.done():
            return
        try:
            name = rtc.DisconnectReason.Name(reason)  # type: ignore[arg-type]
        except ValueError:
            name = str(reason)
        self._lost.set_result(name)

    def _fail(self, code: str, message: str) -> None:
        if self._failed or self._closing:
            return
        self._failed = True
        logger.warning(
            "avatar worker failed: %s: %s",
            code,
            message,
            extra={"session_id": self._spec.session_id},
        )
        self._events.on_failed(code, message)


class _Lost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _queue_size_ms(fps: float) -> int:
    """The runner's queue bound: at least one frame period (each frame's audio is
    queued whole), in the multiple of 10 ms the native audio source requires."""
    return max(_RUNNER_QUEUE_MS, 10 * math.ceil(100 / fps))


def start_worker(spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
    """Start an avatar worker for one session with `WorkerOptions.from_env()`.

    A `lifecycle.WorkerFactory`: must be called on the running event loop and
    returns at once; the worker joins in the background and reports through
    `events`.

    Args:
        spec: The session's room, identity and worker token.
        events: The store's sink for what happens.

    Returns:
        The worker; `aclose()` takes it out of the room.
    """
    return make_worker_factory(WorkerOptions.from_env())(spec, events)


def make_worker_factory(options: WorkerOptions | None = None) -> WorkerFactory:
    """A `WorkerFactory` whose workers all use `options`.

    Args:
        options: Video size, rate and bounds; `WorkerOptions.from_env()` if omitted.

    Returns:
        A factory the store calls once per session.
    """
    resolved = options if options is not None else WorkerOptions.from_env()

    def factory(spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
        worker = AvatarWorker(spec, events, resolved)
        worker.start()
        return worker

    return factory


def _is_auth_error(message: str) -> bool:
    lowered = message.lower()
    return any(
        marker in lowered
        for marker in ("401", "403", "unauthorized", "forbidden", "permission denied")
    )


def _redact(text: str) -> str:
    """`text` with any JWT (the worker token, echoed by LiveKit errors) removed."""
    return _ACCESS_TOKEN_RE.sub(r"\1[redacted]", _JWT_RE.sub("[redacted]", text))


class _RedactTokens(logging.Filter):
    """Redacts JWTs from the records of LiveKit's native SDK, which logs rejected tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _redact(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


class _QuietPlaybackStarted(logging.Filter):
    """Demotes the framework's per-utterance error about `lk.playback_started`.

    The plugin, like the published one, does not ask to be told when playback
    starts, so the agent never registers that RPC and the receiver logs an ERROR
    for every utterance. Nothing is wrong; keep the note at DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "lk.playback_started" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # The logger's level was checked at ERROR; check it again at DEBUG.
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_redaction_installed = False


def _install_token_redaction() -> None:
    global _redaction_installed
    if _redaction_installed:
        return
    _redaction_installed = True
    # The native SDK's records go to the "livekit" logger (see livekit.rtc.log).
    logging.getLogger("livekit").addFilter(_RedactTokens())
    logging.getLogger("livekit.agents").addFilter(_QuietPlaybackStarted())

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

The generator and its playback protocol are in `generator.py`, the video
tiers and settings in `options.py`, `audio_source="track"` in `track_audio.py`,
and keeping the worker token (a secret) out of logs and reports in `redaction.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Coroutine
from typing import Any

from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import (
    AudioReceiver,
    AvatarRunner,
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

from .face import FaceRenderer
from .generator import FaceVideoGenerator
from .looks import style_from_wire
from .notices import AgentAudioReceiver
from .options import WorkerOptions
from .redaction import install_token_redaction, is_auth_error, redact
from .track_audio import TrackAudioReceiver

__all__ = ["AvatarWorker", "make_worker_factory", "start_worker"]

logger = logging.getLogger("protoface_emulator.worker")


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
        self._receiver: AudioReceiver | None = None
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
        install_token_redaction()
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

            runner = await self._make_runner(room)
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
            self._fail(FAILURE_WORKER_CRASHED, f"{type(exc).__name__}: {redact(str(exc))}")
        finally:
            self._closing = True
            self._stopping = True  # from here on, aclose() only waits
            await self._cleanup(room, runner, frames_task)
            logger.info("avatar worker left the room", extra=log_extra)

    async def _make_runner(self, room: rtc.Room) -> AvatarRunner:
        """The runner that publishes this session's face and speech in `room`."""
        spec = self._spec
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
            await asyncio.to_thread(renderer_for_spec) if spec.avatar_image else renderer_for_spec()
        )
        generator = FaceVideoGenerator(
            options,
            renderer=renderer,
            on_audio=self._on_audio,
            on_frame_published=self._on_frame_published,
            first_frame_delay=spec.first_frame_delay,
        )
        self._generator = generator
        self._receiver = self._audio_receiver(room)
        runner = AvatarRunner(
            room,
            audio_recv=self._receiver,
            video_gen=generator,
            options=self._options.avatar_options(),
            _queue_size_ms=_queue_size_ms(self._options.video_fps),
        )
        generator.attach_synchronizer(runner.av_sync)
        if isinstance(self._receiver, AgentAudioReceiver):
            # A segment's finish is told once its end is heard, not handed over.
            self._receiver.playout_ahead = generator.playout_ahead
        return runner

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
        message = redact(getattr(exc, "message", None) or str(exc))
        if isinstance(exc, rtc.ConnectError) and is_auth_error(message):
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
            return TrackAudioReceiver(
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

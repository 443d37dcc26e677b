"""The seam between the session store and the LiveKit worker.

`store.py` knows sessions and their lifecycle but nothing of LiveKit; `worker.py`
knows LiveKit but nothing of HTTP or billing. The store hands a `WorkerSpec` and a
`WorkerEvents` sink to a `WorkerFactory`; the worker reports what happens in the
room through the sink, and the store turns those reports into status changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from protoface_emulator.contract import (
    DEFAULT_AUDIO_SOURCE,
    DEFAULT_QUALITY,
    STOCK_AVATAR_ID,
    TRANSPORT_TYPE_LIVEKIT,
    AudioSource,
)
from protoface_emulator.contract import END_REASON_METADATA_KEY as END_REASON_METADATA_KEY

# Failure codes a worker reports through `WorkerEvents.on_failed`; they become the
# session's `failure.code`.
FAILURE_LIVEKIT_AUTH = "livekit_auth_failed"  # the server refused the worker token
FAILURE_LIVEKIT_UNREACHABLE = "livekit_unreachable"  # nothing answered at transport.url
FAILURE_JOIN_TIMEOUT = "worker_join_timeout"  # joined nothing within the bound
FAILURE_WORKER_LOST = "worker_lost"  # the worker left the room without being asked
FAILURE_WORKER_CRASHED = "worker_crashed"  # an unexpected error inside the worker

# Why a session ended, stored in `metadata[END_REASON_METADATA_KEY]` (`contract.py`) so clients
# can read it.
END_REASON_REQUESTED = "end_requested"
END_REASON_MAX_DURATION = "max_duration_reached"
END_REASON_IDLE_TIMEOUT = "idle_timeout"
END_REASON_SHUTDOWN = "emulator_shutdown"  # the emulator stopped (SIGINT/SIGTERM, Emulator exit)


@dataclass(frozen=True)
class LiveKitTransport:
    """A session's LiveKit transport, under the names `POST /v1/sessions` gives it.

    Defined here once and carried as it is: `api/requests.py` parses it from the
    request, the session record keeps it (and shows it without the token, `view()`),
    and `WorkerSpec.for_session` hands every field to the worker. A new transport
    field is one line here plus its parse (`api/requests.py`), and the `WorkerSpec`
    field of the same name the worker reads it from (`for_session` refuses a field
    the spec lacks; `WorkerSpec` keeps its flat fields, which tests and benchmarks
    construct directly).
    """

    url: str
    room_name: str
    # Write-only: goes to the worker and nowhere else; kept out of repr() so it
    # cannot reach a log line by accident, and out of `view()`.
    worker_token: str = field(repr=False)
    worker_identity: str
    audio_source: AudioSource
    subscribe_to_identity: str | None
    synthetic_audio_if_no_input: bool

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields, as the request names them (without `type`)."""
        return tuple(f.name for f in fields(cls))

    def view(self) -> dict[str, str | bool | None]:
        """`Session.transport`: the type and every field but the worker token."""
        shown: dict[str, str | bool | None] = {"type": TRANSPORT_TYPE_LIVEKIT}
        shown.update(
            (name, getattr(self, name)) for name in self.field_names() if name != "worker_token"
        )
        return shown

    # `SessionRecord.transport` was `view()`'s dict before 0.2.0: reading it by
    # key still works (the token was never there, and is not now).
    def __getitem__(self, key: str) -> str | bool | None:
        """`view()[key]`."""
        return self.view()[key]

    def get(self, key: str, default: str | bool | None = None) -> str | bool | None:
        """`view().get(key, default)`."""
        return self.view().get(key, default)


# The transport fields a `WorkerSpec` knows by shorter names; the rest keep theirs.
_SPEC_NAMES = {"worker_identity": "identity", "worker_token": "token"}


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to join the customer's room for one session."""

    session_id: str
    url: str
    room_name: str
    identity: str
    audio_source: str = DEFAULT_AUDIO_SOURCE
    # The session's `quality`: which video tier the worker renders (`worker.VIDEO_TIERS`).
    quality: str = DEFAULT_QUALITY
    subscribe_to_identity: str | None = None
    synthetic_audio_if_no_input: bool = False
    # The session's avatar: which look the worker draws (`face.style_for`).
    avatar_id: str = STOCK_AVATAR_ID
    # An uploaded avatar's image file as base64 text (so the spec stays JSON for
    # worker processes and dispatched jobs); None for a stock avatar.
    avatar_image: str | None = field(default=None, repr=False)
    # The session's share of the emulator's `timing.Timing`: seconds between
    # joining and the first frame, and before each `lk.playback_started`.
    first_frame_delay: float = 0.0
    ack_delay: float = 0.0
    # Write-only secret: never logged, never part of repr().
    token: str = field(default="", repr=False)

    @classmethod
    def for_session(
        cls,
        session_id: str,
        transport: LiveKitTransport,
        *,
        quality: str,
        avatar_id: str,
        avatar_image: str | None,
    ) -> WorkerSpec:
        """The spec of one session: its transport carried over field by field, as it is."""
        carried: dict[str, Any] = {
            _SPEC_NAMES.get(name, name): getattr(transport, name)
            for name in transport.field_names()
        }
        return cls(
            session_id=session_id,
            quality=quality,
            avatar_id=avatar_id,
            avatar_image=avatar_image,
            **carried,
        )


class WorkerEvents(Protocol):
    """What a worker reports to the store. Every method is called on the loop."""

    def on_connecting(self) -> None:
        """The worker began connecting to the room (session -> `starting`)."""

    def on_first_frame(self) -> None:
        """The first video frame was published (session -> `running`)."""

    def on_audio(self) -> None:
        """Audio arrived from the agent; resets the idle timer."""

    def on_frames(self, count: int) -> None:
        """`count` more video frames were published (usage.frames)."""

    def on_failed(self, code: str, message: str) -> None:
        """The worker could not join or was lost (session -> `failed`)."""


class WorkerHandle(Protocol):
    """A running worker, as the store sees it."""

    async def aclose(self) -> None:
        """Leave the room promptly and release everything. Idempotent."""


WorkerFactory = Callable[[WorkerSpec, WorkerEvents], WorkerHandle]
"""Starts a worker in the background and returns its handle at once."""


@runtime_checkable
class ManagedWorkerFactory(Protocol):
    """A `WorkerFactory` with resources of its own (`workers.ProcessPool`).

    `Emulator` starts it before serving and closes it after every session ended.
    """

    def __call__(self, spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
        """Start a worker, as a `WorkerFactory` does."""

    async def start(self) -> None:
        """Get ready for sessions (start processes, say)."""

    async def aclose(self) -> None:
        """Release everything; called once no session holds a worker."""


class ManualWorker:
    """A stand-in worker that joins nothing and reports what a test tells it to.

    Each method reports one `WorkerEvents` event for its session, so a test moves a
    session through its lifecycle without LiveKit: `connect()` (`starting`),
    `publish()` (`running`), `speak()` (agent audio: not idle), `fail(code)`.
    """

    def __init__(self, spec: WorkerSpec, events: WorkerEvents) -> None:
        self.spec = spec
        self.events = events
        self.closed = False

    def connect(self) -> None:
        """Report connecting: the session becomes `starting`."""
        self.events.on_connecting()

    def publish(self, frames: int = 1) -> None:
        """Report the first frame (and `frames` frames): the session becomes `running`."""
        self.events.on_first_frame()
        self.events.on_frames(frames)

    def speak(self) -> None:
        """Report agent audio (resets the idle timer)."""
        self.events.on_audio()

    def fail(self, code: str = FAILURE_WORKER_LOST, message: str = "lost") -> None:
        """Report a failure: the session becomes `failed` with `code` and `message`."""
        self.events.on_failed(code, message)

    async def aclose(self) -> None:
        """Leave (there is nothing to leave); `closed` becomes True."""
        self.closed = True


class ManualWorkers:
    """A `WorkerFactory` of `ManualWorker`s, for API tests without a LiveKit server.

        workers = ManualWorkers(autostart=True)  # every session reaches `running`
        async with Emulator(worker_factory=workers) as emu:
            ...
            workers.worker(session_id).fail("livekit_auth_failed", "token rejected")

    Args:
        autostart: connect and publish each worker right after its create, so
            sessions are `running` without a test driving them.
    """

    def __init__(self, *, autostart: bool = False) -> None:
        self.autostart = autostart
        self.started: list[ManualWorker] = []

    def __call__(self, spec: WorkerSpec, events: WorkerEvents) -> ManualWorker:
        worker = ManualWorker(spec, events)
        self.started.append(worker)
        if self.autostart:
            # After the factory returns, as a real worker reports from its own task.
            loop = asyncio.get_running_loop()
            loop.call_soon(worker.connect)
            loop.call_soon(worker.publish)
        return worker

    def worker(self, session_id: str) -> ManualWorker:
        """The worker of one session.

        Raises:
            KeyError: if no worker was started for it.
        """
        for worker in reversed(self.started):
            if worker.spec.session_id == session_id:
                return worker
        raise KeyError(f"no worker was started for session {session_id!r}")

"""Sessions and their lifecycle timers, composed with avatars, idempotency and usage.

No HTTP and no LiveKit here: the app hands the store validated requests, and the
store hands each session's worker a `WorkerSpec` through a `WorkerFactory`
(`lifecycle.py`), then turns the worker's `WorkerEvents` into status changes:

    create -> queued
    on_connecting -> starting (started_at)
    on_first_frame -> running (first_frame_at); max-duration and idle timers start
    on_failed, or no first frame within `join_timeout_seconds` -> failed (failure)
    end / max duration / idle -> ending -> (worker closed) -> ended (ended_at)

Everything runs on one event loop, so no locks: each state change happens in one
synchronous step. Hot paths (create, get, end, worker events) are O(1); only the
list and usage calls walk the sessions (`listing.py`). The records are in
`records.py`, the avatars in `avatars.py`, idempotency keys in `idempotency.py`
and the limits in `limits.py`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from datetime import datetime

from protoface_emulator.api.avatars import AvatarCatalog
from protoface_emulator.api.errors import (
    CODE_AVATAR_NOT_READY,
    CODE_CONCURRENCY_LIMIT,
    CODE_SESSION_NOT_FOUND,
    CODE_SHUTTING_DOWN,
    conflict,
    limited,
    not_found,
    shown,
    unavailable,
)
from protoface_emulator.api.idempotency import IdempotencyKeys
from protoface_emulator.api.ids import new_id
from protoface_emulator.api.limits import StoreConfig, plan_view
from protoface_emulator.api.listing import session_page, usage_summary
from protoface_emulator.api.queries import AvatarListQuery, SessionFilter
from protoface_emulator.api.records import AvatarRecord, SessionRecord, utc_now
from protoface_emulator.api.requests import SessionCreate
from protoface_emulator.api.views import (
    AvatarListView,
    PlanView,
    SessionListView,
    StatusView,
    UsageSummaryView,
    format_time,
)
from protoface_emulator.contract import END_REASON_METADATA_KEY, LIVE_STATUSES
from protoface_emulator.lifecycle import (
    END_REASON_IDLE_TIMEOUT,
    END_REASON_MAX_DURATION,
    END_REASON_REQUESTED,
    END_REASON_SHUTDOWN,
    FAILURE_JOIN_TIMEOUT,
    FAILURE_WORKER_CRASHED,
    WorkerFactory,
    WorkerHandle,
    WorkerSpec,
)

logger = logging.getLogger("protoface_emulator.store")


# Shorter tokens are not scrubbed from failure messages: replacing every "ab" in a
# message would garble it, and no real LiveKit JWT is that short.
_MIN_SCRUBBED_TOKEN_LENGTH = 8


class _SessionEvents:
    """The `WorkerEvents` sink of one session: forwards to the store."""

    __slots__ = ("_record", "_store", "_token")

    def __init__(self, store: Store, record: SessionRecord, token: str) -> None:
        self._store = store
        self._record = record
        self._token = token

    def on_connecting(self) -> None:
        self._store._on_connecting(self._record)

    def on_first_frame(self) -> None:
        self._store._on_first_frame(self._record)

    def on_audio(self) -> None:
        self._store._on_audio(self._record)

    def on_frames(self, count: int) -> None:
        self._store._on_frames(self._record, count)

    def on_failed(self, code: str, message: str) -> None:
        # The message becomes `failure.message`; it may quote an error from LiveKit,
        # which can echo the token in forms the worker's own redaction misses.
        if len(self._token) >= _MIN_SCRUBBED_TOKEN_LENGTH:
            message = message.replace(self._token, "[redacted]")
        self._store._on_failed(self._record, code, message)


class Store:
    """All state of one emulator: sessions, avatars, idempotency keys, usage.

    Args:
        worker_factory: starts one worker per session (see `lifecycle.py`).
        config: plan limits and lifecycle bounds.
    """

    def __init__(self, worker_factory: WorkerFactory, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()
        self._worker_factory = worker_factory
        self._sessions: dict[str, SessionRecord] = {}  # creation order == id order
        self._active: dict[str, SessionRecord] = {}  # non-terminal, for the concurrency limit
        self._avatars = AvatarCatalog(self.config.avatar_processing_seconds)
        self._idempotency = IdempotencyKeys(self.config.idempotency_ttl_seconds)
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._started_at = utc_now()

    # -- reads that need no session ---------------------------------------------

    def plan(self) -> PlanView:
        """The one plan in effect."""
        return plan_view(self.config)

    def status(self) -> StatusView:
        """Platform status: always operational (faults simulate outages)."""
        return {
            "status": "operational",
            "components": [
                {"name": "api", "status": "operational"},
                {"name": "workers", "status": "operational"},
                {"name": "billing", "status": "operational"},
            ],
            "updated_at": format_time(utc_now()),
        }

    @property
    def active_count(self) -> int:
        """Sessions not yet terminal (what the concurrency limit counts)."""
        return len(self._active)

    # -- avatars -------------------------------------------------------------------

    def get_avatar(self, avatar_id: str) -> AvatarRecord:
        """One avatar. Raises `not_found` (`avatar_not_found`) if unknown."""
        return self._avatars.get(avatar_id)

    def list_avatars(self, query: AvatarListQuery) -> AvatarListView:
        """Stock avatars first, then uploads newest first (see `AvatarCatalog.listing`)."""
        return self._avatars.listing(query)

    def create_avatar(
        self, *, name: str, runtime_type: str, image: bytes | None = None
    ) -> AvatarRecord:
        """Accept an upload as `processing`; it becomes `ready` after a short delay."""
        return self._avatars.create(name=name, runtime_type=runtime_type, image=image)

    def delete_avatar(self, avatar_id: str) -> None:
        """Delete an uploaded avatar; a stock avatar is `forbidden`."""
        self._avatars.delete(avatar_id)

    # -- sessions: create ------------------------------------------------------------

    async def create_session(
        self,
        request: SessionCreate,
        *,
        idempotency_key: str | None = None,
        idempotency_scope: str = "",
        fingerprint: str = "",
    ) -> tuple[SessionRecord, bool]:
        """Create a session and start its worker; returns (session, replayed).

        With an `idempotency_key`, a repeat of the same request (same `fingerprint`,
        i.e. canonical body) returns the first session and starts no second worker,
        even while the first create is still in flight; a different body under the
        same key is a 409. Keys are remembered per `idempotency_scope` (the API key)
        for 24 hours. A create that failed is forgotten, so a retry may succeed.

        Raises:
            ApiError: `not_found`/`conflict` for the avatar, `conflict` for a reused
                key, `limited` at the concurrency limit, `unavailable` while shutting
                down.
        """
        if idempotency_key is None:
            return self._create(request), False
        session_id, replayed = await self._idempotency.once(
            idempotency_scope, idempotency_key, fingerprint, lambda: self._create(request).id
        )
        return self._sessions[session_id], replayed

    def _create(self, request: SessionCreate) -> SessionRecord:
        avatar = self._admit(request)
        limit = self.config.session_time_limit_seconds
        requested = request.max_duration_seconds
        transport = request.transport
        record = SessionRecord(
            id=new_id("sess"),
            avatar_id=avatar.id,
            quality=request.quality,
            idle_timeout_seconds=request.idle_timeout_seconds,
            max_duration_seconds=limit if requested is None else min(requested, limit),
            metadata=dict(request.metadata),
            transport=transport,
            created_at=utc_now(),
        )
        self._sessions[record.id] = record
        self._active[record.id] = record
        loop = asyncio.get_running_loop()
        record.join_timer = loop.call_later(
            self.config.join_timeout_seconds, self._join_timed_out, record
        )
        spec = self._worker_spec(record, request, avatar)
        logger.info("session %s created (room %r)", record.id, transport.room_name)
        try:
            handle = self._worker_factory(
                spec, _SessionEvents(self, record, transport.worker_token)
            )
        except Exception:
            logger.exception("session %s: the worker factory raised", record.id)
            self._fail(record, FAILURE_WORKER_CRASHED, "The avatar worker could not be started.")
            return record
        if record.status in LIVE_STATUSES:
            record.handle = handle
        else:
            # The worker reported a failure before the factory even returned.
            self._close_in_background(handle)
        return record

    def _admit(self, request: SessionCreate) -> AvatarRecord:
        """The avatar to show, once the emulator may take this session; raises if not."""
        if self._closing:
            raise unavailable(
                CODE_SHUTTING_DOWN,
                "The emulator is shutting down and takes no new sessions.",
                self.config.retry_after_seconds,
            )
        avatar = self._avatars.get(request.avatar_id)
        if avatar.status != "ready":
            raise conflict(
                CODE_AVATAR_NOT_READY,
                f"Avatar {avatar.id!r} is {avatar.status}, not ready; wait until GET "
                f"/v1/avatars/{avatar.id} shows status 'ready'.",
                "avatar_id",
            )
        if len(self._active) >= self.config.max_concurrency:
            raise limited(
                CODE_CONCURRENCY_LIMIT,
                f"The plan allows {self.config.max_concurrency} concurrent sessions and that "
                "many are active; end one or retry after the Retry-After delay.",
                self.config.retry_after_seconds,
            )
        return avatar

    def _worker_spec(
        self, record: SessionRecord, request: SessionCreate, avatar: AvatarRecord
    ) -> WorkerSpec:
        return WorkerSpec.for_session(
            record.id,
            request.transport,
            quality=request.quality,
            avatar_id=avatar.id,
            avatar_image=None
            if avatar.image is None
            else base64.b64encode(avatar.image).decode("ascii"),
        )

    # -- sessions: read ----------------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRecord:
        """One session. Raises `not_found` (`session_not_found`) if unknown."""
        record = self._sessions.get(session_id)
        if record is None:
            raise not_found(
                CODE_SESSION_NOT_FOUND,
                f"No session {shown(session_id)}; session ids look like sess_01J…",
            )
        return record

    def iter_sessions(self) -> Iterator[SessionRecord]:
        """Every session, oldest first."""
        return iter(self._sessions.values())

    def list_sessions(
        self,
        *,
        limit: int,
        starting_after: str | None = None,
        filters: SessionFilter | None = None,
    ) -> SessionListView:
        """A page of sessions, newest first."""
        return session_page(
            self._sessions, limit=limit, starting_after=starting_after, filters=filters
        )

    def usage(self, period_start: datetime, period_end: datetime) -> UsageSummaryView:
        """Billable running seconds in [period_start, period_end), rounded up per session."""
        return usage_summary(self._sessions.values(), period_start, period_end)

    # -- sessions: end -----------------------------------------------------------------

    async def end_session(
        self, session_id: str, *, reason: str = END_REASON_REQUESTED
    ) -> SessionRecord:
        """End a session now; idempotent.

        A live session goes to `ending` and its worker is closed; this waits up to
        `end_wait_seconds` for the worker to leave, so the answer is usually already
        `ended`. A terminal session is returned unchanged.

        Args:
            session_id: the session.
            reason: the end reason recorded in its metadata; the API's end call is
                `end_requested`. A test may pass another (`idle_timeout`,
                `max_duration_reached`) to end a session as the timers would.
        """
        record = self.get_session(session_id)
        task = self._begin_end(record, reason)
        if task is not None and not task.done():
            # asyncio.wait does not cancel the task on timeout or when this caller goes away.
            await asyncio.wait({task}, timeout=self.config.end_wait_seconds)
        return record

    def _begin_end(self, record: SessionRecord, reason: str) -> asyncio.Task[None] | None:
        """Move a live session to `ending`; returns the task that finishes it."""
        if record.status in LIVE_STATUSES:
            record.status = "ending"
            record.metadata[END_REASON_METADATA_KEY] = reason
            self._stop_running(record)
            logger.info("session %s ending (%s)", record.id, reason)
            record.close_task = asyncio.get_running_loop().create_task(self._finish_end(record))
        return record.close_task

    async def _finish_end(self, record: SessionRecord) -> None:
        handle, record.handle = record.handle, None
        try:
            if handle is not None:
                await self._close_handle(handle, record.id)
        finally:
            record.status = "ended"
            record.ended_at = utc_now()
            self._active.pop(record.id, None)
            logger.info("session %s ended", record.id)

    async def _close_handle(self, handle: WorkerHandle, session_id: str) -> None:
        try:
            await asyncio.wait_for(handle.aclose(), self.config.worker_close_timeout_seconds)
        except asyncio.TimeoutError:
            logger.warning(
                "session %s: the worker did not close within %.0f s; abandoning it",
                session_id,
                self.config.worker_close_timeout_seconds,
            )
        except Exception:
            logger.exception("session %s: closing the worker failed", session_id)

    def _close_in_background(self, handle: WorkerHandle, session_id: str = "") -> None:
        task = asyncio.get_running_loop().create_task(self._close_handle(handle, session_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stop_running(self, record: SessionRecord) -> None:
        now = utc_now()
        if record.first_frame_at is not None and record.running_until is None:
            record.running_until = now
        for timer in (record.join_timer, record.duration_timer, record.idle_timer):
            if timer is not None:
                timer.cancel()
        record.join_timer = record.duration_timer = record.idle_timer = None

    def _fail(self, record: SessionRecord, code: str, message: str) -> None:
        if record.status not in LIVE_STATUSES:
            return
        self._stop_running(record)
        record.status = "failed"
        record.failed_at = utc_now()
        record.failure = {"code": code, "message": message}
        self._active.pop(record.id, None)
        logger.info("session %s failed: %s", record.id, code)
        handle, record.handle = record.handle, None
        if handle is not None:
            self._close_in_background(handle, record.id)

    # -- worker events and timers ----------------------------------------------------

    def _on_connecting(self, record: SessionRecord) -> None:
        if record.status == "queued":
            record.status = "starting"
            record.started_at = utc_now()

    def _on_first_frame(self, record: SessionRecord) -> None:
        if record.status not in ("queued", "starting"):
            return
        now = utc_now()
        if record.started_at is None:
            record.started_at = now
        record.status = "running"
        record.first_frame_at = now
        if record.join_timer is not None:
            record.join_timer.cancel()
            record.join_timer = None
        loop = asyncio.get_running_loop()
        # Max duration bounds the billable (running) time, so it counts from here.
        record.duration_timer = loop.call_later(
            record.max_duration_seconds, self._expire, record, END_REASON_MAX_DURATION
        )
        # Idle counting starts when running: before that the agent has nothing to send.
        record.last_audio = loop.time()
        record.idle_timer = loop.call_later(record.idle_timeout_seconds, self._check_idle, record)

    def _on_audio(self, record: SessionRecord) -> None:
        if record.status == "running":
            # Only a timestamp: rescheduling a timer per audio chunk would be costly.
            record.last_audio = asyncio.get_running_loop().time()

    def _on_frames(self, record: SessionRecord, count: int) -> None:
        if count > 0:
            record.frames += count

    def _on_failed(self, record: SessionRecord, code: str, message: str) -> None:
        self._fail(record, code, message)

    def _join_timed_out(self, record: SessionRecord) -> None:
        record.join_timer = None
        self._fail(
            record,
            FAILURE_JOIN_TIMEOUT,
            f"The worker published no video within {self.config.join_timeout_seconds:g} s. "
            "It joins transport.room_name at transport.url with the worker token, waits for "
            "the agent to join, then publishes: check all four.",
        )

    def _expire(self, record: SessionRecord, reason: str) -> None:
        record.duration_timer = None
        self._begin_end(record, reason)

    def _check_idle(self, record: SessionRecord) -> None:
        record.idle_timer = None
        if record.status != "running":
            return
        loop = asyncio.get_running_loop()
        quiet = loop.time() - record.last_audio
        if quiet >= record.idle_timeout_seconds:
            self._begin_end(record, END_REASON_IDLE_TIMEOUT)
        else:
            record.idle_timer = loop.call_later(
                record.idle_timeout_seconds - quiet, self._check_idle, record
            )

    # -- shutdown ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """End every live session and wait until every worker has left its room.

        New creates are refused (503) from the moment this starts.
        """
        self._closing = True
        tasks = [
            task
            for record in list(self._active.values())
            if (task := self._begin_end(record, END_REASON_SHUTDOWN)) is not None
        ]
        tasks.extend(self._background)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._avatars.close()

"""Sessions, avatars, idempotency, plan limits, lifecycle timers and usage.

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
list and usage calls walk the sessions.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from protoface_emulator.api.decoding import MetadataValue
from protoface_emulator.api.errors import (
    CODE_AVATAR_NOT_FOUND,
    CODE_AVATAR_NOT_READY,
    CODE_CONCURRENCY_LIMIT,
    CODE_IDEMPOTENCY_KEY_REUSED,
    CODE_INVALID_CURSOR,
    CODE_SESSION_NOT_FOUND,
    CODE_SHUTTING_DOWN,
    CODE_STOCK_AVATAR_IMMUTABLE,
    conflict,
    forbidden,
    invalid,
    limited,
    not_found,
    shown,
    unavailable,
)
from protoface_emulator.api.ids import new_id
from protoface_emulator.api.queries import SessionFilter
from protoface_emulator.api.requests import SessionCreate
from protoface_emulator.api.views import (
    AvatarListView,
    AvatarView,
    FailureView,
    PlanView,
    SessionListView,
    SessionView,
    StatusView,
    TransportView,
    UsageSummaryView,
    ceil_seconds,
    format_time,
)
from protoface_emulator.contract import (
    END_REASON_METADATA_KEY,
    LIVE_STATUSES,
    QUALITIES,
    STOCK_AVATAR_ID,
    TERMINAL_SESSION_STATUSES,
    TRANSPORT_TYPE_LIVEKIT,
    AvatarStatus,
    Quality,
    SessionStatus,
)
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

PLAN_KEY = "developer"
DEFAULT_MAX_CONCURRENCY = 2000
DEFAULT_SESSION_TIME_LIMIT_SECONDS = 1800
# A burst of 16 creates on a saturated 2-core machine took over 15 s to get some
# avatars' first frames (1 to 4 of 16 failed at 15 s, none at 30 s): a slow
# machine is not a broken worker. Auth and network failures are reported by the
# worker itself, at once.
DEFAULT_JOIN_TIMEOUT_SECONDS = 30.0
DEFAULT_AVATAR_PROCESSING_SECONDS = 1.0
DEFAULT_END_WAIT_SECONDS = 5.0
DEFAULT_WORKER_CLOSE_TIMEOUT_SECONDS = 10.0
IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class StoreConfig:
    """Plan limits and lifecycle bounds.

    Attributes:
        max_concurrency: sessions that may be non-terminal at once; one more is a 429.
            The default leaves room for a 1,000-session benchmark plus stragglers.
        session_time_limit_seconds: the plan's ceiling; `max_duration_seconds` is
            clamped to it and defaults to it.
        join_timeout_seconds: a session with no first frame this long after create
            fails with `worker_join_timeout`.
        avatar_processing_seconds: how long an uploaded avatar stays `processing`.
        end_wait_seconds: how long `end` waits for the worker to leave before it
            answers with the session still `ending`.
        worker_close_timeout_seconds: a worker whose `aclose()` takes longer is
            abandoned (logged) and the session counted `ended` anyway.
        retry_after_seconds: the `Retry-After` of a concurrency 429.
        idempotency_ttl_seconds: how long an idempotency key is remembered.
    """

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    session_time_limit_seconds: int = DEFAULT_SESSION_TIME_LIMIT_SECONDS
    join_timeout_seconds: float = DEFAULT_JOIN_TIMEOUT_SECONDS
    avatar_processing_seconds: float = DEFAULT_AVATAR_PROCESSING_SECONDS
    end_wait_seconds: float = DEFAULT_END_WAIT_SECONDS
    worker_close_timeout_seconds: float = DEFAULT_WORKER_CLOSE_TIMEOUT_SECONDS
    retry_after_seconds: int = 1
    idempotency_ttl_seconds: float = IDEMPOTENCY_TTL_SECONDS


def _now() -> datetime:
    # Milliseconds, as the API shows them: filters then agree with what clients read.
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# --- avatars --------------------------------------------------------------------


@dataclass
class AvatarRecord:
    """An avatar, stock or uploaded."""

    id: str
    name: str
    status: AvatarStatus
    is_demo: bool
    runtime_type: str
    created_at: datetime
    default_voice: str | None = None
    default_custom_instructions: str | None = None
    failure_reason: str | None = None
    ready_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    # The uploaded image file (None for stock avatars); its workers show it.
    image: bytes | None = field(default=None, repr=False)

    def view(self) -> AvatarView:
        """The avatar resource."""
        return {
            "object": "avatar",
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "is_demo": self.is_demo,
            "runtime_type": self.runtime_type,
            "created_at": format_time(self.created_at),
            "default_voice": self.default_voice,
            "default_custom_instructions": self.default_custom_instructions,
            "failure_reason": self.failure_reason,
        }


_STOCK_CREATED_AT = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _stock_avatars() -> list[AvatarRecord]:
    def stock(number: int, name: str, runtime: str, voice: str | None) -> AvatarRecord:
        return AvatarRecord(
            id=f"av_stock_{number:03d}",
            name=name,
            status="ready",
            is_demo=True,
            runtime_type=runtime,
            created_at=_STOCK_CREATED_AT,
            default_voice=voice,
        )

    return [
        stock(1, "Ada", "avtr1", "alloy"),
        stock(2, "Bram", "avtr1", "echo"),
        stock(3, "Test Pattern", "mock", None),
    ]


# --- sessions -------------------------------------------------------------------


@dataclass(eq=False)
class SessionRecord:
    """One session and its lifecycle bookkeeping. Read it; change it via the store."""

    id: str
    avatar_id: str
    quality: Quality
    idle_timeout_seconds: int
    max_duration_seconds: int
    metadata: dict[str, MetadataValue]
    transport: TransportView
    created_at: datetime
    status: SessionStatus = "queued"
    started_at: datetime | None = None
    first_frame_at: datetime | None = None
    ended_at: datetime | None = None
    failed_at: datetime | None = None
    failure: FailureView | None = None
    frames: int = 0
    # Billable time runs from the first frame until the session stops running.
    running_until: datetime | None = None
    handle: WorkerHandle | None = field(default=None, repr=False)
    close_task: asyncio.Task[None] | None = field(default=None, repr=False)
    join_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    duration_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    idle_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    last_audio: float = 0.0  # loop time of the last `on_audio`

    @property
    def terminal(self) -> bool:
        """True once `ended`, `failed` or `canceled`."""
        return self.status in TERMINAL_SESSION_STATUSES

    def running_seconds(self, start: datetime | None = None, end: datetime | None = None) -> float:
        """Seconds spent running, optionally only those inside [start, end)."""
        if self.first_frame_at is None:
            return 0.0
        since = self.first_frame_at
        until = self.running_until or _now()
        if start is not None and start > since:
            since = start
        if end is not None and end < until:
            until = end
        return max(0.0, (until - since).total_seconds())

    def view(self) -> SessionView:
        """The session resource (the transport without its token)."""

        def time_or_none(value: datetime | None) -> str | None:
            return None if value is None else format_time(value)

        return {
            "object": "session",
            "id": self.id,
            "avatar_id": self.avatar_id,
            "status": self.status,
            "created_at": format_time(self.created_at),
            "started_at": time_or_none(self.started_at),
            "first_frame_at": time_or_none(self.first_frame_at),
            "ended_at": time_or_none(self.ended_at),
            "failed_at": time_or_none(self.failed_at),
            "failure": None if self.failure is None else self.failure.copy(),
            "idle_timeout_seconds": self.idle_timeout_seconds,
            "max_duration_seconds": self.max_duration_seconds,
            "metadata": dict(self.metadata),
            "quality": self.quality,
            "transport": self.transport.copy(),
            "usage": {
                "billable_seconds": ceil_seconds(self.running_seconds()),
                "frames": self.frames,
            },
        }


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


@dataclass
class _IdempotencyEntry:
    fingerprint: str
    # Resolves to the session id; an in-flight create is awaited, never repeated.
    # Creation is synchronous today, so the future is settled before anyone else can
    # look; it keeps the guarantee if creating ever has to await (a remote worker pool).
    result: asyncio.Future[str]
    expires_at: float


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
        self._stock: dict[str, AvatarRecord] = {a.id: a for a in _stock_avatars()}
        self._custom: dict[str, AvatarRecord] = {}
        self._idempotency: OrderedDict[tuple[str, str], _IdempotencyEntry] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._started_at = _now()

    # -- reads that need no session ---------------------------------------------

    def plan(self) -> PlanView:
        """The one plan in effect."""
        return {
            "key": PLAN_KEY,
            "name": "Developer",
            "max_concurrency": self.config.max_concurrency,
            "session_time_limit_seconds": self.config.session_time_limit_seconds,
            "included_credits": 0,
            "monthly_price_cents": 0,
            "custom_avatar_slots": 3,
            "extra_avatar_slot_cents": None,
            "extra_credit_unit_micros": None,
        }

    def status(self) -> StatusView:
        """Platform status: always operational (faults simulate outages)."""
        return {
            "status": "operational",
            "components": [
                {"name": "api", "status": "operational"},
                {"name": "workers", "status": "operational"},
                {"name": "billing", "status": "operational"},
            ],
            "updated_at": format_time(_now()),
        }

    @property
    def active_count(self) -> int:
        """Sessions not yet terminal (what the concurrency limit counts)."""
        return len(self._active)

    # -- avatars -------------------------------------------------------------------

    def _avatar(self, avatar_id: str) -> AvatarRecord:
        avatar = self._stock.get(avatar_id) or self._custom.get(avatar_id)
        if avatar is None:
            raise not_found(
                CODE_AVATAR_NOT_FOUND,
                f"No avatar {shown(avatar_id)}; list the available ones with GET /v1/avatars "
                f"(the stock avatar is {STOCK_AVATAR_ID!r}).",
                "avatar_id",
            )
        return avatar

    def get_avatar(self, avatar_id: str) -> AvatarRecord:
        """One avatar. Raises `not_found` (`avatar_not_found`) if unknown."""
        return self._avatar(avatar_id)

    def list_avatars(
        self,
        *,
        limit: int,
        starting_after: str | None = None,
        scope: str | None = None,
        q: str | None = None,
    ) -> AvatarListView:
        """Stock avatars first, then uploads newest first.

        Args:
            limit: page size.
            starting_after: the `next_cursor` of the previous page.
            scope: `stock`, `custom` or `all` (default).
            q: case-insensitive substring of the name or id.
        """
        candidates: list[AvatarRecord] = []
        if scope in (None, "all", "stock"):
            candidates.extend(self._stock.values())
        if scope in (None, "all", "custom"):
            candidates.extend(reversed(self._custom.values()))
        if q:
            needle = q.lower()
            candidates = [
                a for a in candidates if needle in a.name.lower() or needle in a.id.lower()
            ]
        start = 0
        if starting_after is not None:
            ids = [a.id for a in candidates]
            if starting_after not in ids:
                raise invalid(
                    CODE_INVALID_CURSOR,
                    f"starting_after {shown(starting_after)} is not an avatar of this listing; "
                    "pass the next_cursor of the previous page.",
                    "starting_after",
                )
            start = ids.index(starting_after) + 1
        page = candidates[start : start + limit]
        has_more = start + limit < len(candidates)
        return {
            "object": "list",
            "data": [a.view() for a in page],
            "has_more": has_more,
            "next_cursor": page[-1].id if has_more and page else None,
        }

    def create_avatar(
        self, *, name: str, runtime_type: str, image: bytes | None = None
    ) -> AvatarRecord:
        """Accept an upload as `processing`; it becomes `ready` after a short delay.

        `image` is the uploaded file; sessions of this avatar show it.
        """
        avatar = AvatarRecord(
            id=new_id("av"),
            name=name,
            status="processing",
            is_demo=False,
            runtime_type=runtime_type,
            created_at=_now(),
            image=image or None,
        )
        self._custom[avatar.id] = avatar
        avatar.ready_timer = asyncio.get_running_loop().call_later(
            self.config.avatar_processing_seconds, self._avatar_ready, avatar
        )
        return avatar

    def _avatar_ready(self, avatar: AvatarRecord) -> None:
        avatar.ready_timer = None
        if avatar.status == "processing":
            avatar.status = "ready"

    def delete_avatar(self, avatar_id: str) -> None:
        """Delete an uploaded avatar; a stock avatar is `forbidden`."""
        avatar = self._avatar(avatar_id)
        if avatar.is_demo:
            raise forbidden(
                CODE_STOCK_AVATAR_IMMUTABLE,
                f"{avatar_id!r} is a stock avatar and cannot be deleted; only uploaded "
                "avatars can.",
                "avatar_id",
            )
        if avatar.ready_timer is not None:
            avatar.ready_timer.cancel()
        del self._custom[avatar_id]

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
        loop = asyncio.get_running_loop()
        key = (idempotency_scope, idempotency_key)
        self._expire_idempotency(loop.time())
        entry = self._idempotency.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise conflict(
                    CODE_IDEMPOTENCY_KEY_REUSED,
                    "This Idempotency-Key was already used with a different request body; "
                    "use a new key for a new request.",
                )
            # shield: a client that disconnects must not cancel the shared result.
            session_id = await asyncio.shield(entry.result)
            return self._sessions[session_id], True
        future: asyncio.Future[str] = loop.create_future()
        self._idempotency[key] = _IdempotencyEntry(
            fingerprint, future, loop.time() + self.config.idempotency_ttl_seconds
        )
        try:
            record = self._create(request)
        except BaseException as exc:
            del self._idempotency[key]
            future.set_exception(exc)
            future.exception()  # retrieved: nobody may be waiting, and that is fine
            raise
        future.set_result(record.id)
        return record, False

    def _expire_idempotency(self, now: float) -> None:
        # Entries are in insertion order with one TTL, so expired ones are at the front.
        while self._idempotency:
            oldest = next(iter(self._idempotency.values()))
            if oldest.expires_at > now or not oldest.result.done():
                break
            self._idempotency.popitem(last=False)

    def _create(self, request: SessionCreate) -> SessionRecord:
        if self._closing:
            raise unavailable(
                CODE_SHUTTING_DOWN,
                "The emulator is shutting down and takes no new sessions.",
                self.config.retry_after_seconds,
            )
        avatar = self._avatar(request.avatar_id)
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
            transport={
                "type": TRANSPORT_TYPE_LIVEKIT,
                "url": transport.url,
                "room_name": transport.room_name,
                "worker_identity": transport.worker_identity,
                "audio_source": transport.audio_source,
                "subscribe_to_identity": transport.subscribe_to_identity,
                "synthetic_audio_if_no_input": transport.synthetic_audio_if_no_input,
            },
            created_at=_now(),
        )
        self._sessions[record.id] = record
        self._active[record.id] = record
        loop = asyncio.get_running_loop()
        record.join_timer = loop.call_later(
            self.config.join_timeout_seconds, self._join_timed_out, record
        )
        spec = WorkerSpec(
            session_id=record.id,
            url=transport.url,
            room_name=transport.room_name,
            identity=transport.worker_identity,
            audio_source=transport.audio_source,
            quality=request.quality,
            subscribe_to_identity=transport.subscribe_to_identity,
            synthetic_audio_if_no_input=transport.synthetic_audio_if_no_input,
            token=transport.worker_token,
            avatar_id=avatar.id,
            avatar_image=None
            if avatar.image is None
            else base64.b64encode(avatar.image).decode("ascii"),
        )
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
        filters = filters or SessionFilter()
        if starting_after is not None and starting_after not in self._sessions:
            raise invalid(
                CODE_INVALID_CURSOR,
                f"starting_after {shown(starting_after)} is not a session id; pass the "
                "next_cursor of the previous page.",
                "starting_after",
            )
        page: list[SessionRecord] = []
        has_more = False
        skipping = starting_after is not None
        for record in reversed(self._sessions.values()):
            if skipping:
                skipping = record.id != starting_after
                continue
            if not _matches(record, filters):
                continue
            if len(page) == limit:
                has_more = True
                break
            page.append(record)
        return {
            "object": "list",
            "data": [r.view() for r in page],
            "has_more": has_more,
            "next_cursor": page[-1].id if has_more else None,
        }

    def usage(self, period_start: datetime, period_end: datetime) -> UsageSummaryView:
        """Billable running seconds in [period_start, period_end), rounded up per session."""
        total = 0
        sessions = 0
        by_quality: dict[Quality, int] = dict.fromkeys(QUALITIES, 0)
        for record in self._sessions.values():
            seconds = ceil_seconds(record.running_seconds(period_start, period_end))
            if seconds <= 0:
                continue
            sessions += 1
            total += seconds
            by_quality[record.quality] += seconds
        return {
            "billable_seconds": total,
            "sessions": sessions,
            "period_start": format_time(period_start),
            "period_end": format_time(period_end),
            "by_quality": by_quality,
        }

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
            record.ended_at = _now()
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
        now = _now()
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
        record.failed_at = _now()
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
            record.started_at = _now()

    def _on_first_frame(self, record: SessionRecord) -> None:
        if record.status not in ("queued", "starting"):
            return
        now = _now()
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
        for avatar in self._custom.values():
            if avatar.ready_timer is not None:
                avatar.ready_timer.cancel()
                avatar.ready_timer = None


def _matches(record: SessionRecord, filters: SessionFilter) -> bool:
    if filters.statuses is not None and record.status not in filters.statuses:
        return False
    if filters.avatar_id is not None and record.avatar_id != filters.avatar_id:
        return False
    if filters.created_after is not None and record.created_at < filters.created_after:
        return False
    return not (filters.created_before is not None and record.created_at >= filters.created_before)

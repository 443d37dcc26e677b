"""`AvatarSession`: a hosted Protoface avatar in a LiveKit Agents session.

Lifecycle: `start()` validates everything, mints a short-lived worker token,
creates the hosted session, watches it in the background and routes the
agent's speech to the avatar worker over LiveKit data streams. When the avatar
is lost the agent's audio goes back to the room; `aclose()` ends the hosted
session and leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from livekit import api, rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    AgentSession,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    NotGivenOr,
    get_job_context,
    utils,
)
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.room_io._output import _ParticipantAudioOutput

from .api import TERMINAL_SESSION_STATUSES, ProtofaceAPI, SessionResource, _resolve
from .errors import (
    AvatarSessionFailedError,
    ProtofaceAPIError,
    ProtofaceException,
    ProtofaceValueError,
)
from .log import logger
from .validation import (
    IDLE_TIMEOUT_RANGE,
    LIVEKIT_URL_SCHEMES,
    MAX_DURATION_RANGE,
    MetadataValue,
    check_int_range,
    check_nonblank,
    check_quality,
    check_secret,
    check_url,
    checked_metadata,
)

__all__ = [
    "DEFAULT_STOCK_AVATAR_ID",
    "DEFAULT_WORKER_TOKEN_TTL",
    "END_REASON_METADATA_KEY",
    "MAX_WORKER_TOKEN_TTL",
    "AvatarLostEvent",
    "AvatarSession",
]

DEFAULT_STOCK_AVATAR_ID = "av_stock_001"
SAMPLE_RATE = 16000
FALLBACK_SAMPLE_RATE = 24000
DEFAULT_WORKER_TOKEN_TTL = datetime.timedelta(minutes=10)
"""Lifetime of the worker's LiveKit token: long enough to join, short if it leaks."""
MAX_WORKER_TOKEN_TTL = datetime.timedelta(hours=6)
DEFAULT_POLL_INTERVAL = 1.0
END_REASON_METADATA_KEY = "_avatar.end_reason"
"""Session metadata key where Protoface records why a session ended."""

_AVATAR_AGENT_IDENTITY = "protoface-avatar-agent"
_AVATAR_AGENT_NAME = "protoface-avatar-agent"
_JOIN_POLL_INTERVAL = 0.25  # a failing start should be reported within seconds
_AVATAR_LEFT_GRACE = 2.0  # lets the session record why the avatar left the room
_FALLBACK_START_TIMEOUT = 5.0  # publishing waits for a subscriber; do not wait forever
_MAX_POLL_BACKOFF = 30.0
_REASON_AVATAR_LEFT = "avatar_left_room"

EventTypes = Literal["avatar_lost"]


@dataclass(frozen=True)
class AvatarLostEvent:
    """Emitted as `"avatar_lost"` when an avatar that had joined is gone.

    Attributes:
        session_id: The Protoface session id.
        reason: Why, read from the session: its `failure.code` when it failed
            (e.g. `worker_lost`), else `metadata["_avatar.end_reason"]`
            (`end_requested`, `max_duration_reached`, `idle_timeout`), else
            `avatar_left_room` when the avatar left while the session still
            ran, else the session status.
        status: The session status when the loss was noticed.
    """

    session_id: str
    reason: str
    status: str


class AvatarSession(BaseAvatarSession[EventTypes]):
    """A Protoface avatar session for LiveKit Agents.

    ```python
    avatar = protoface.AvatarSession(avatar_id="av_stock_001")
    await avatar.start(session, room=ctx.room)
    await session.start(agent=MyAgent(), room=ctx.room)
    ```

    Events:
        `"metrics_collected"` (`AvatarMetrics`) when the avatar joined, and
        `"avatar_lost"` (`AvatarLostEvent`) when it is gone after joining.
    """

    def __init__(
        self,
        *,
        avatar_id: str = DEFAULT_STOCK_AVATAR_ID,
        api_url: NotGivenOr[str | None] = NOT_GIVEN,
        api_key: NotGivenOr[str | None] = NOT_GIVEN,
        max_duration_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        avatar_participant_identity: NotGivenOr[str | None] = NOT_GIVEN,
        avatar_participant_name: NotGivenOr[str | None] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        quality: NotGivenOr[str | None] = NOT_GIVEN,
        idle_timeout_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        metadata: NotGivenOr[Mapping[str, MetadataValue] | None] = NOT_GIVEN,
        worker_token_ttl: datetime.timedelta = DEFAULT_WORKER_TOKEN_TTL,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        audio_fallback: bool = True,
    ) -> None:
        """Create a Protoface avatar session.

        Args:
            avatar_id: Protoface avatar id to render. Defaults to the stock
                avatar `av_stock_001`.
            api_url: Protoface API base URL. Defaults to `PROTOFACE_API_URL`,
                then the public API.
            api_key: Protoface API key. Defaults to `PROTOFACE_API_KEY`.
            max_duration_seconds: Hard ceiling on the session, an int in
                1..3600. Protoface applies the lower of this and the plan limit.
            avatar_participant_identity: LiveKit identity of the avatar
                participant. Defaults to `protoface-avatar-agent`.
            avatar_participant_name: Display name of the avatar participant.
                Defaults to `protoface-avatar-agent`.
            conn_options: Timeout and retry options for Protoface API calls.
            quality: `mock`, `lite`, `standard` or `pro` (drives billing).
            idle_timeout_seconds: End the session after this many seconds
                without audio from the agent, an int in 1..600.
            metadata: Your own key/value data stored on the session (str keys;
                str, int, float, bool or None values; at most 8 KB as JSON; no
                `_avatar.` keys).
            worker_token_ttl: Lifetime of the LiveKit token minted for the
                avatar worker (more than 0, at most 6 hours). It only has to
                outlive the worker's join.
            poll_interval: Seconds between checks of the hosted session once the
                avatar has joined (until then it is checked every 0.25 s).
            audio_fallback: When the avatar is lost, publish the agent's audio
                in the room itself so the conversation goes on audio-only.

        Raises:
            ProtofaceException: If no API key is provided.
            ProtofaceValueError: If an argument is refused.
        """
        super().__init__()
        check_nonblank(avatar_id, "avatar_id")
        if utils.is_given(max_duration_seconds) and max_duration_seconds is not None:
            check_int_range(max_duration_seconds, "max_duration_seconds", *MAX_DURATION_RANGE)
        if utils.is_given(idle_timeout_seconds) and idle_timeout_seconds is not None:
            check_int_range(idle_timeout_seconds, "idle_timeout_seconds", *IDLE_TIMEOUT_RANGE)
        if utils.is_given(quality) and quality is not None:
            check_quality(quality, "quality")
        own_metadata: dict[str, MetadataValue] | None = None
        if utils.is_given(metadata) and metadata is not None:
            own_metadata = checked_metadata(metadata, "metadata")
        if not isinstance(worker_token_ttl, datetime.timedelta) or not (
            datetime.timedelta(0) < worker_token_ttl <= MAX_WORKER_TOKEN_TTL
        ):
            raise ProtofaceValueError(
                f"worker_token_ttl must be a timedelta above 0 and at most 6 hours, got "
                f"{worker_token_ttl!r}; e.g. datetime.timedelta(minutes=10)",
                param="worker_token_ttl",
            )
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or not math.isfinite(poll_interval)
            or poll_interval <= 0
        ):
            raise ProtofaceValueError(
                f"poll_interval must be a number of seconds above 0, got {poll_interval!r}",
                param="poll_interval",
            )
        if not isinstance(audio_fallback, bool):
            raise ProtofaceValueError(
                f"audio_fallback must be True or False, got {audio_fallback!r}",
                param="audio_fallback",
            )

        self._avatar_id = avatar_id
        self._max_duration_seconds = max_duration_seconds
        self._quality = quality
        self._idle_timeout_seconds = idle_timeout_seconds
        self._metadata = own_metadata
        self._avatar_participant_identity = _identity_or_default(
            avatar_participant_identity, "avatar_participant_identity", _AVATAR_AGENT_IDENTITY
        )
        self._avatar_participant_name = _identity_or_default(
            avatar_participant_name, "avatar_participant_name", _AVATAR_AGENT_NAME
        )
        self._worker_token_ttl = worker_token_ttl
        self._poll_interval = float(poll_interval)
        self._audio_fallback = audio_fallback
        self._api = ProtofaceAPI(api_key=api_key, api_url=api_url, conn_options=conn_options)

        self._session_id: str | None = None
        self._starting = False
        # The part of start() that creates the hosted session; aclose() cancels it.
        self._attach_task: asyncio.Task[None] | None = None
        self._closed_while_starting = False
        self._close_lock = asyncio.Lock()
        self._cleanup_tasks: set[asyncio.Task[None]] = set()
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        # Everything one start() .. aclose() run owns; released by _release().
        self._created_session_id: str | None = None
        self._unknown_create: tuple[dict[str, Any], str] | None = None
        self._watched_room: rtc.Room | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._check_now: asyncio.Event | None = None
        self._joined = False
        self._join_settled: asyncio.Event | None = None
        self._join_error: ProtofaceException | None = None
        self._avatar_left_at: float | None = None
        self._datastream_output: DataStreamAudioOutput | None = None
        self._fallback_output: _ParticipantAudioOutput | None = None
        self._fallback_start_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"AvatarSession(avatar_id={self._avatar_id!r}, "
            f"avatar_identity={self._avatar_participant_identity!r}, "
            f"session_id={self._session_id!r}, api_url={self._api.api_url!r})"
        )

    @property
    def avatar_identity(self) -> str:
        """LiveKit identity of the avatar participant."""
        return self._avatar_participant_identity

    @property
    def provider(self) -> str:
        """Avatar provider name, `"protoface"`."""
        return "protoface"

    @property
    def session_id(self) -> str | None:
        """Protoface session id after `start()` succeeds, otherwise `None`."""
        return self._session_id

    async def start(
        self,
        agent_session: AgentSession[Any],
        room: rtc.Room,
        *,
        livekit_url: NotGivenOr[str | None] = NOT_GIVEN,
        livekit_api_key: NotGivenOr[str | None] = NOT_GIVEN,
        livekit_api_secret: NotGivenOr[str | None] = NOT_GIVEN,
    ) -> None:
        """Start the hosted avatar and route the agent's speech to it.

        Everything is checked before anything is created. If a step fails after
        the hosted session was created (a bad answer, the audio output swap,
        cancellation), that session is ended before the error propagates, and
        no background task is left.

        Args:
            agent_session: The agent session whose audio the avatar speaks.
            room: The job's LiveKit room.
            livekit_url: LiveKit server URL the worker joins. Defaults to
                `LIVEKIT_URL`.
            livekit_api_key: LiveKit API key that signs the worker token.
                Defaults to `LIVEKIT_API_KEY`.
            livekit_api_secret: LiveKit API secret that signs the worker token.
                Defaults to `LIVEKIT_API_SECRET`. It never leaves this process.

        Raises:
            RuntimeError: If this `AvatarSession` is already started.
            ProtofaceException: If LiveKit credentials are missing, the agent's
                identity is unknown, Protoface's answer is unusable, or
                `aclose()` was called while `start()` ran.
            ProtofaceValueError: If an argument is refused.
            ProtofaceAPIError: If Protoface refuses the session.
            APIConnectionError: If Protoface cannot be reached after retries.
        """
        if self._starting or self._session_id is not None:
            raise RuntimeError(
                "AvatarSession.start() called twice; create a new AvatarSession "
                "for each agent session"
            )
        self._starting = True
        try:
            await self._start(
                agent_session,
                room,
                livekit_url=livekit_url,
                livekit_api_key=livekit_api_key,
                livekit_api_secret=livekit_api_secret,
            )
        finally:
            self._starting = False

    async def _start(
        self,
        agent_session: AgentSession[Any],
        room: rtc.Room,
        *,
        livekit_url: NotGivenOr[str | None],
        livekit_api_key: NotGivenOr[str | None],
        livekit_api_secret: NotGivenOr[str | None],
    ) -> None:
        # 1. Everything that can be refused is refused before the base class
        #    starts its join watcher and before anything goes over the network.
        url = _resolve(livekit_url, "LIVEKIT_URL")
        key = _resolve(livekit_api_key, "LIVEKIT_API_KEY")
        secret = _resolve(livekit_api_secret, "LIVEKIT_API_SECRET")
        missing = [
            name
            for name, value in (
                ("LIVEKIT_URL", url),
                ("LIVEKIT_API_KEY", key),
                ("LIVEKIT_API_SECRET", secret),
            )
            if not value
        ]
        if missing or url is None or key is None or secret is None:
            raise ProtofaceException(
                f"missing LiveKit settings: {', '.join(missing)}; pass livekit_url, "
                f"livekit_api_key and livekit_api_secret to start() or set the "
                f"environment variables"
            )
        check_url(url, "livekit_url", LIVEKIT_URL_SCHEMES, env_name="LIVEKIT_URL")
        check_nonblank(key, "livekit_api_key")
        check_secret(secret, "livekit_api_secret")
        self._api._add_secret(secret)

        room_name = _room_name(room)
        agent_identity = _agent_identity(room)
        if agent_identity == self._avatar_participant_identity:
            raise ProtofaceValueError(
                f"avatar_participant_identity {agent_identity!r} is the agent's own "
                f"identity; give the avatar a different one",
                param="avatar_participant_identity",
            )
        worker_token = self._mint_worker_token(
            room_name=room_name,
            agent_identity=agent_identity,
            livekit_api_key=key,
            livekit_api_secret=secret,
        )
        # This client only ever serves this avatar session: its later reads of the
        # session (the monitor) redact the token too.
        self._api._add_secret(worker_token)
        body = self._api._session_body(
            avatar_id=self._avatar_id,
            transport={
                "type": "livekit",
                "url": url,
                "room_name": room_name,
                "worker_token": worker_token,
                "worker_identity": self._avatar_participant_identity,
                "audio_source": "data_stream",
            },
            max_duration_seconds=self._max_duration_seconds,
            quality=self._quality,
            idle_timeout_seconds=self._idle_timeout_seconds,
            metadata=self._metadata,
        )

        # The rest runs in a task of its own, so that aclose() can stop it;
        # cancelling start() cancels it too. Should it be cancelled before it
        # ever ran, nothing was started, so there is nothing to clean up.
        self._closed_while_starting = False
        attach = asyncio.create_task(
            self._start_and_attach(agent_session, room, body), name="protoface-start"
        )
        self._attach_task = attach
        try:
            await attach
        except asyncio.CancelledError:
            if self._closed_while_starting and attach.cancelled():
                raise ProtofaceException(
                    "AvatarSession.aclose() was called while start() was running; the "
                    "hosted session it was creating has been ended"
                ) from None
            raise
        finally:
            self._attach_task = None

    async def _start_and_attach(
        self, agent_session: AgentSession[Any], room: rtc.Room, body: dict[str, Any]
    ) -> None:
        self._reset_run_state()
        try:
            await super().start(agent_session, room)
            await self._create_and_attach(agent_session, room, body)
            # A cancel requested while the synchronous tail ran (the audio swap)
            # lands here, and so still ends the session, instead of being
            # delivered after start() has already handed it over.
            await asyncio.sleep(0)
        except BaseException:
            # Includes cancellation: end the hosted session (shielded, so a
            # second cancel cannot orphan it) before re-raising.
            await asyncio.shield(self._spawn_release("start() failed"))
            raise

    def _spawn_release(self, reason: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._release(reason=reason))
        self._cleanup_tasks.add(task)
        task.add_done_callback(self._cleanup_tasks.discard)
        return task

    async def _create_and_attach(
        self, agent_session: AgentSession[Any], room: rtc.Room, body: dict[str, Any]
    ) -> None:
        # 2. Create the hosted session with one idempotency key for this logical
        #    create, so neither our retries nor the recovery replay start a second.
        key = str(uuid.uuid4())
        try:
            session = await self._api._request(
                "POST", "/v1/sessions", json_body=body, idempotency_key=key
            )
        except ProtofaceAPIError as exc:
            if 200 <= exc.status_code < 300:
                # Accepted, but the answer is unreadable: a session exists.
                self._unknown_create = (body, key)
            raise
        except (APIConnectionError, asyncio.CancelledError):
            # The server may have accepted the create before we stopped listening.
            self._unknown_create = (body, key)
            raise
        session_id = _usable_id(session.get("id"))
        if session_id is None:
            self._unknown_create = (body, key)
            raise ProtofaceException(
                "Protoface API response missing session id (a string `id`); the session "
                "it may have created is being looked up and ended"
            )
        self._created_session_id = session_id
        logger.debug(
            "protoface session created",
            extra={"session_id": session_id, "avatar_id": self._avatar_id},
        )

        # 3. Watch the hosted session and the avatar participant.
        self._check_now = asyncio.Event()
        self._join_settled = asyncio.Event()
        if self._joined:  # the base class saw the avatar before the create returned
            self._join_settled.set()
        self._watched_room = room
        room.on("participant_disconnected", self._on_participant_disconnected)
        self._monitor_task = asyncio.create_task(
            self._monitor(session_id), name=f"protoface-monitor-{session_id}"
        )

        # 4. Route the agent's speech to the avatar worker.
        output = DataStreamAudioOutput(
            room=room,
            destination_identity=self._avatar_participant_identity,
            sample_rate=SAMPLE_RATE,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        )
        self._datastream_output = output
        agent_session.output.replace_audio_tail(output)
        self._session_id = session_id

    async def _recover_session_id(self, body: dict[str, Any], key: str) -> str | None:
        """Learn the id of a session whose create outcome is unknown.

        Replaying the create with the same idempotency key returns the session
        the first call created, without creating another (or creates it, and it
        is ended right away). It retries like the create did: giving up on the
        first 503 or dropped connection would leave a billed session running.
        """
        try:
            replay = await self._api._request(
                "POST", "/v1/sessions", json_body=body, idempotency_key=key
            )
        except Exception as exc:
            logger.warning(
                "could not learn which Protoface session a failed start() created (%s); "
                "if one was created it runs until its idle timeout",
                exc,
            )
            return None
        session_id = _usable_id(replay.get("id"))
        if session_id is None:
            logger.error(
                "Protoface answered a session create without a session id; if a session "
                "was created it runs until its idle timeout"
            )
        return session_id

    async def wait_for_join(self, *, timeout: float | None = 30.0) -> None:
        """Wait until the avatar has joined the room and publishes video.

        Args:
            timeout: Seconds to wait; `None` waits without limit.

        Raises:
            AvatarSessionFailedError: (a `ProtofaceException`) as soon as the
                hosted session failed or ended before the avatar joined; it
                carries `session_id`, `status` and `failure_code`.
            ProtofaceException: If the `AvatarSession` was closed before the
                avatar joined.
            asyncio.TimeoutError: If the avatar did not join within `timeout`.
        """
        settled = self._join_settled
        if settled is None:
            # start() has not created a hosted session: base class behaviour.
            await super().wait_for_join(timeout=timeout)
            return
        if timeout is None:
            await settled.wait()
        else:
            await asyncio.wait_for(settled.wait(), timeout=timeout)
        if self._join_error is not None:
            raise self._join_error

    async def aclose(self) -> None:
        """End the hosted session and release every resource.

        Stops the session monitor, ends the hosted session (a failure is logged
        as a warning, never raised), closes the fallback audio output and the
        base class resources. Idempotent; safe when `start()` never ran. When
        `start()` is still running, it is stopped (it raises
        `ProtofaceException`) and whatever it created is ended first.
        """
        attach = self._attach_task
        if attach is not None and not attach.done():
            self._closed_while_starting = True
            attach.cancel()
        async with self._close_lock:
            # Let an interrupted start() and earlier cleanups finish ending what
            # they created (waiting does not cancel them).
            pending = {t for t in (attach, *self._cleanup_tasks) if t is not None}
            if pending:
                await asyncio.wait(pending)
            # Shielded: a cancelled shutdown must still end the billed session.
            await asyncio.shield(self._spawn_release("aclose()"))

    async def _release(self, *, reason: str) -> None:
        # Take everything this run owns before the first await, so a concurrent
        # release finds nothing left to end twice.
        monitor, self._monitor_task = self._monitor_task, None
        room, self._watched_room = self._watched_room, None
        session_id = self._session_id or self._created_session_id
        self._session_id = None
        self._created_session_id = None
        unknown, self._unknown_create = self._unknown_create, None
        output, self._datastream_output = self._datastream_output, None
        fallback_start, self._fallback_start_task = self._fallback_start_task, None
        fallback, self._fallback_output = self._fallback_output, None

        if room is not None:
            room.off("participant_disconnected", self._on_participant_disconnected)
        if self._join_settled is not None and not self._join_settled.is_set():
            self._join_error = ProtofaceException(
                f"AvatarSession closed ({reason}) before the avatar joined the room"
            )
            self._join_settled.set()
        if monitor is not None:
            await utils.aio.cancel_and_wait(monitor)

        if session_id is None and unknown is not None:
            session_id = await self._recover_session_id(*unknown)
        if session_id is not None:
            try:
                await self._api.end_session(session_id)
                logger.debug("protoface session ended", extra={"session_id": session_id})
            except Exception as exc:
                logger.warning(
                    "failed to end protoface session %s: %s",
                    session_id,
                    exc,
                    extra={"session_id": session_id},
                )

        # A DataStreamAudioOutput whose avatar never came still waits for it;
        # it has no close method, so stop that wait here.
        start_task = getattr(output, "_start_atask", None)
        if isinstance(start_task, asyncio.Task) and not start_task.done():
            await utils.aio.cancel_and_wait(start_task)

        if fallback_start is not None and not fallback_start.done():
            await utils.aio.cancel_and_wait(fallback_start)
        if fallback is not None:
            try:
                await fallback.aclose()
                # Closing the output leaves its track published; take it down so
                # a later avatar in this room starts from a clean slate.
                publication = getattr(fallback, "_publication", None)
                if (
                    isinstance(publication, rtc.LocalTrackPublication)
                    and self._room is not None
                    and self._room.isconnected()
                ):
                    await self._room.local_participant.unpublish_track(publication.sid)
            except Exception:
                logger.warning("failed to close the fallback audio output", exc_info=True)

        await BaseAvatarSession.aclose(self)
        await self._api.aclose()

    # -- monitor -------------------------------------------------------------

    async def _wait_avatar_join(self) -> None:
        # The base class watches the room for the avatar's video; that is the
        # authoritative "joined" signal when the room is connected.
        await super()._wait_avatar_join()
        self._mark_joined()

    def _mark_joined(self) -> None:
        if self._joined:
            return
        self._joined = True
        if self._join_settled is not None and not self._join_settled.is_set():
            self._join_settled.set()

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._avatar_participant_identity:
            return
        if self._joined:
            self._avatar_left_at = asyncio.get_running_loop().time()
        # Check the session now rather than at the next poll.
        if self._check_now is not None:
            self._check_now.set()

    async def _monitor(self, session_id: str) -> None:
        """Poll the hosted session (and react to the avatar leaving) until it is over."""
        assert self._check_now is not None
        loop = asyncio.get_running_loop()
        backoff: float | None = None
        failures = 0
        while True:
            if backoff is not None:
                interval = backoff
            elif self._joined and self._avatar_left_at is None:
                interval = self._poll_interval
            else:
                interval = min(self._poll_interval, _JOIN_POLL_INTERVAL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._check_now.wait(), timeout=interval)
            self._check_now.clear()

            try:
                session = await self._api.get_session(session_id)
            except ProtofaceAPIError as exc:
                if 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
                    logger.warning(
                        "stopped watching protoface session %s: %s",
                        session_id,
                        exc.message,
                        extra={"session_id": session_id},
                    )
                    return
                failures += 1
                backoff = min(exc.retry_after or interval * 2, _MAX_POLL_BACKOFF)
                _log_poll_failure(session_id, failures, exc)
                continue
            except (APIError, ProtofaceException) as exc:
                failures += 1
                backoff = min(interval * 2, _MAX_POLL_BACKOFF)
                _log_poll_failure(session_id, failures, exc)
                continue
            backoff = None
            failures = 0

            status = _str_field(session, "status") or "unknown"
            if not self._joined and (session.get("first_frame_at") or status == "running"):
                # Protoface reports the avatar publishing: joined, even if this
                # process has not seen the participant yet.
                self._mark_joined()

            if status in TERMINAL_SESSION_STATUSES:
                if self._joined:
                    await self._avatar_lost(session_id, session, status)
                else:
                    await self._failed_before_join(session_id, session, status)
                return

            left_at = self._avatar_left_at
            if self._joined and left_at is not None:
                if status != "ending" and loop.time() - left_at < _AVATAR_LEFT_GRACE:
                    continue  # give the session a moment to say why
                await self._avatar_lost(session_id, session, status)
                return

    async def _failed_before_join(
        self, session_id: str, session: SessionResource, status: str
    ) -> None:
        failure_code, failure_message = _failure(session)
        detail = failure_code or _end_reason(session) or status
        logger.error(
            "protoface session %s %s before its avatar joined the room (failure code: %s)%s",
            session_id,
            status,
            failure_code,
            f": {failure_message}" if failure_message else "",
            extra={"session_id": session_id, "failure_code": failure_code, "status": status},
        )
        self._join_error = AvatarSessionFailedError(
            f"Protoface session {session_id} {status} before its avatar joined the room "
            f"({detail})" + (f": {failure_message}" if failure_message else ""),
            session_id=session_id,
            status=status,
            failure_code=failure_code,
        )
        if self._join_settled is not None:
            self._join_settled.set()
        if self._audio_fallback:
            # The agent's speech would otherwise wait forever for an avatar
            # that is not coming.
            await self._route_audio_to_room()

    async def _avatar_lost(self, session_id: str, session: SessionResource, status: str) -> None:
        failure_code, _ = _failure(session)
        reason = (
            failure_code
            or _end_reason(session)
            or (
                _REASON_AVATAR_LEFT
                if self._avatar_left_at is not None and status not in TERMINAL_SESSION_STATUSES
                else status
            )
        )
        logger.warning(
            "lost the protoface avatar: session %s is %s (reason: %s)%s",
            session_id,
            status,
            reason,
            "; the agent's audio goes to the room directly" if self._audio_fallback else "",
            extra={"session_id": session_id, "reason": reason, "status": status},
        )
        if self._audio_fallback:
            # Before the event, so a handler's next utterance is already heard.
            await self._route_audio_to_room()
        self.emit(
            "avatar_lost", AvatarLostEvent(session_id=session_id, reason=reason, status=status)
        )

    async def _route_audio_to_room(self) -> None:
        room, agent_session = self._room, self._agent_session
        if room is None or agent_session is None or self._fallback_output is not None:
            return
        output = _ParticipantAudioOutput(
            room,
            sample_rate=FALLBACK_SAMPLE_RATE,
            num_channels=1,
            track_publish_options=rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        self._fallback_output = output
        start = asyncio.create_task(output.start(), name="protoface-fallback-audio")
        self._fallback_start_task = start
        # start() returns once someone subscribes; do not hold the monitor on that.
        await asyncio.wait({start}, timeout=_FALLBACK_START_TIMEOUT)
        if start.done() and not start.cancelled() and start.exception() is not None:
            logger.error(
                "could not publish the agent's audio to the room after losing the avatar: %s",
                start.exception(),
            )
            self._fallback_output = None
            self._fallback_start_task = None
            with contextlib.suppress(Exception):
                await output.aclose()
            return
        if not start.done():
            logger.debug("no one subscribed to the agent's audio yet; it plays once someone does")
        agent_session.output.replace_audio_tail(output)

    # -- worker token ------------------------------------------------------

    def _mint_worker_token(
        self,
        *,
        room_name: str,
        agent_identity: str,
        livekit_api_key: str,
        livekit_api_secret: str,
    ) -> str:
        # Least privilege: join this one room and publish/subscribe/data; no
        # admin, create, list or record grants.
        grants = api.VideoGrants(
            room_join=True,
            room=room_name,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
        )
        return (
            api.AccessToken(api_key=livekit_api_key, api_secret=livekit_api_secret)
            .with_kind("agent")
            .with_identity(self._avatar_participant_identity)
            .with_name(self._avatar_participant_name)
            .with_grants(grants)
            .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity})
            .with_ttl(self._worker_token_ttl)
            .to_jwt()
        )


def _identity_or_default(value: NotGivenOr[str | None], param: str, default: str) -> str:
    if not utils.is_given(value) or value is None:
        return default
    check_nonblank(value, param)
    return value


def _room_name(room: rtc.Room) -> str:
    if room.name:
        return room.name
    # Before ctx.connect() the room has no name yet; the job knows it.
    job_ctx = get_job_context(required=False)
    if job_ctx is not None and job_ctx.job.room.name:
        return job_ctx.job.room.name
    raise ProtofaceException(
        "the room has no name yet: connect it (await ctx.connect()) before "
        "AvatarSession.start(), or start it inside a job"
    )


def _agent_identity(room: rtc.Room) -> str:
    identity: str | None = None
    job_ctx = get_job_context(required=False)
    if job_ctx is not None:
        try:
            identity = job_ctx.local_participant_identity
        except Exception:
            # e.g. a console or fake job without a room token
            identity = None
    if not identity and room.isconnected():
        identity = room.local_participant.identity
    if not identity:
        raise ProtofaceException(
            "failed to get local participant identity: start the avatar inside a job "
            "or with a connected room, so the avatar can publish on the agent's behalf"
        )
    return identity


def _usable_id(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _str_field(session: SessionResource, field: str) -> str | None:
    value = session.get(field)
    return value if isinstance(value, str) else None


def _failure(session: SessionResource) -> tuple[str | None, str | None]:
    failure = session.get("failure")
    if not isinstance(failure, dict):
        return None, None
    code = failure.get("code")
    message = failure.get("message")
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) and message else None,
    )


def _end_reason(session: SessionResource) -> str | None:
    metadata = session.get("metadata")
    if not isinstance(metadata, dict):
        return None
    reason = metadata.get(END_REASON_METADATA_KEY)
    return reason if isinstance(reason, str) and reason else None


def _log_poll_failure(session_id: str, failures: int, exc: Exception) -> None:
    # One blip is noise; a run of them means the avatar's state is unknown.
    log = logger.warning if failures == 3 else logger.debug
    log(
        "could not check protoface session %s (%d in a row): %s",
        session_id,
        failures,
        exc,
        extra={"session_id": session_id},
    )

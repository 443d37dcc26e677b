"""The hosted sessions of one conversation: creating each one, and ending every one.

A `Launcher` creates a session (a fresh worker token and idempotency key each
time, the conversation's `SessionOptions`), gives it a `SessionWatch` and an
audio route to its avatar, and remembers it until it is ended. Whatever it
may have created, it ends: a create whose outcome is unknown (a timeout, a
cancel, an unreadable answer) is replayed with the same key to learn the id.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, utils
from livekit.agents.voice.avatar import DataStreamAudioOutput

from .api import ProtofaceAPI
from .compat import stop_waiting_for_avatar
from .errors import ProtofaceAPIError, ProtofaceException
from .identities import AvatarIdentities
from .log import logger
from .monitor import SessionWatch
from .retry import should_retry
from .tokens import WorkerTokens
from .types import DEFAULT_IDLE_TIMEOUT_SECONDS, SessionOptions, session_int

__all__ = ["RECOVERY_CONN_OPTIONS", "SAMPLE_RATE", "Hosted", "Launcher"]

SAMPLE_RATE = 16000
"""Rate of the agent's audio to the avatar (and to the room, when it falls back)."""

RECOVERY_CONN_OPTIONS = APIConnectOptions(max_retry=6, retry_interval=2.0, timeout=5.0)
"""How hard a session a failed start may have created is looked for, once the
replay that `start()` waits for has failed: about 45 s at most, in the
background (`aclose()` waits for it)."""


@dataclass
class Hosted:
    """One hosted session, its avatar participant and the audio route to it."""

    session_id: str
    identity: str
    watch: SessionWatch
    route: DataStreamAudioOutput
    created_at: float
    cap_seconds: int | None
    idle_timeout_seconds: int
    # What it was created with (its avatar, quality, ...): a switch changes them.
    options: SessionOptions | None = None


@dataclass(eq=False, repr=False)
class Launcher:
    """Creates the conversation's hosted sessions and ends each one exactly once.

    Attributes:
        api: The Protoface client that creates and ends the sessions.
        options: What the next session is created with (`adopt` changes it).
        tokens: Mints each session's worker token.
        livekit_url: The LiveKit server the avatars join.
        room: The agent's room, where every avatar of the conversation joins.
        identities: The participant identity each session's avatar joins as.
        name: The avatars' participant name.
        poll_interval: Seconds between reads of a joined session.
        wait_playback_start: Whether the agent session is told an utterance
            started when the avatar says so.
        created: Every session id created, in order.
    """

    api: ProtofaceAPI
    options: SessionOptions
    _: KW_ONLY
    tokens: WorkerTokens
    livekit_url: str
    room: rtc.Room
    identities: AvatarIdentities
    name: str
    poll_interval: float
    wait_playback_start: bool
    created: list[str] = field(default_factory=list, init=False)
    _unended: set[str] = field(default_factory=set, init=False)
    _cleanups: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    @property
    def agent_identity(self) -> str:
        """The identity of the agent the avatars speak for."""
        return self.tokens.agent_identity

    def identity_for(self, generation: int) -> str:
        """The participant identity of the conversation's `generation`-th session (1-based).

        The first keeps the configured identity; each successor has one of its
        own, so it can join while its predecessor is still in the room; none
        is one that another agent's avatar holds (`identities.py`).
        """
        return self.identities.for_generation(generation)

    def adopt(self, options: SessionOptions) -> None:
        """Create every later session with `options` (after a switch)."""
        self.options = options

    async def launch(self, options: SessionOptions | None = None) -> Hosted:
        """Create the next session and start watching it (it has not joined yet).

        Args:
            options: Create this one with these (a switch) instead of the
                conversation's.
        """
        options = options or self.options
        generation = len(self.created) + 1
        identity = self.identity_for(generation)
        transport: dict[str, Any] = {
            "type": "livekit",
            "url": self.livekit_url,
            "room_name": self.tokens.room_name,
            "worker_token": self.tokens.mint(identity=identity, name=self.name),
            "worker_identity": identity,
            "audio_source": "data_stream",
        }
        # One key per logical create, so neither our retries nor the replay
        # below can start a second session.
        key = str(uuid.uuid4())
        try:
            session = await self.api.create_session(
                options, transport=transport, idempotency_key=key
            )
        except ProtofaceAPIError as exc:
            if 200 <= exc.status_code < 300:  # accepted, but the answer is unreadable
                await self._end_unknown(transport, key, options)
            raise
        except (APIConnectionError, asyncio.CancelledError):
            # The server may have accepted the create before we stopped listening.
            await self._end_unknown(transport, key, options)
            raise
        session_id = _usable_id(session.get("id"))
        if session_id is None:
            await self._end_unknown(transport, key, options)
            raise ProtofaceException(
                "Protoface API response missing session id (a string `id`); the session "
                "it may have created is being looked up and ended"
            )
        self._remember(session_id)
        return self._hosted(session_id, identity, session, options)

    def _hosted(
        self, session_id: str, identity: str, session: dict[str, Any], options: SessionOptions
    ) -> Hosted:
        logger.debug("protoface session created", extra={"session_id": session_id})
        watch = SessionWatch(
            self.api,
            session_id,
            room=self.room,
            identity=identity,
            poll_interval=self.poll_interval,
        )
        watch.start()
        route = DataStreamAudioOutput(
            room=self.room,
            destination_identity=identity,
            sample_rate=SAMPLE_RATE,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
            # Always: the avatar's acknowledgement of each segment is how a
            # worker that died without leaving is noticed within seconds.
            # `wait_playback_start` only decides what the agent session is told.
            wait_playback_start=True,
        )
        return Hosted(
            session_id=session_id,
            identity=identity,
            watch=watch,
            route=route,
            created_at=asyncio.get_running_loop().time(),
            cap_seconds=session_int(session, "max_duration_seconds")
            or options.max_duration_seconds,
            idle_timeout_seconds=session_int(session, "idle_timeout_seconds")
            or options.idle_timeout_seconds
            or DEFAULT_IDLE_TIMEOUT_SECONDS,
            options=options,
        )

    def _remember(self, session_id: str) -> None:
        self.created.append(session_id)
        self._unended.add(session_id)

    async def retire(self, hosted: Hosted, *, end: bool) -> None:
        """Stop watching `hosted` and its route; end its session if `end` (in the background)."""
        await hosted.watch.aclose()
        waiting = stop_waiting_for_avatar(hosted.route)
        if waiting is not None:
            await utils.aio.cancel_and_wait(waiting)
        if end:
            self._background(self.end(hosted.session_id))
        # Otherwise Protoface already ended it (a terminal status was read); it is
        # still ended at close, which is idempotent and costs one request.

    async def end(self, session_id: str) -> None:
        """End `session_id` if this launcher has not yet; a failure is logged, never raised."""
        if session_id not in self._unended:
            return
        self._unended.discard(session_id)
        try:
            await self.api.end_session(session_id)
            logger.debug("protoface session ended", extra={"session_id": session_id})
        except Exception as exc:
            # Kept for the next chance (aclose() tries every session not ended).
            self._unended.add(session_id)
            logger.warning(
                "failed to end protoface session %s: %s",
                session_id,
                exc,
                extra={"session_id": session_id},
            )

    async def aclose(self) -> None:
        """End every session not ended yet (one more try each), after the running cleanups."""
        while self._cleanups:
            await asyncio.wait(set(self._cleanups))
        for session_id in list(self._unended):
            await self.end(session_id)
        self._unended.clear()

    def _background(self, aw: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(aw)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def _end_unknown(
        self, transport: dict[str, Any], key: str, options: SessionOptions
    ) -> None:
        # Shielded: a second cancel must not leave a billed session running.
        await asyncio.shield(self._background(self._recover_and_end(transport, key, options)))

    async def _recover_and_end(
        self,
        transport: dict[str, Any],
        key: str,
        options: SessionOptions,
        *,
        patiently: bool = False,
    ) -> None:
        """Learn the id of a session whose create outcome is unknown, and end it.

        Replaying the create with the same idempotency key returns the session
        the first call created, without creating another (or creates it, and it
        is ended right away). The first replay retries like the create did; if
        it fails for a reason that may pass (an outage, a timeout), it is made
        once more in the background, `patiently` (with `RECOVERY_CONN_OPTIONS`):
        giving up would leave a billed session running until its idle timeout.
        """
        try:
            # The same body as the create, or the key's replay is refused.
            replay = await self.api.create_session(
                options,
                transport=transport,
                idempotency_key=key,
                conn_options=RECOVERY_CONN_OPTIONS if patiently else None,
            )
        except Exception as exc:
            if patiently or not _may_pass(exc):
                _warn_unrecovered(exc)
                return
            logger.warning(
                "could not yet learn which Protoface session a failed start() created "
                "(%s); still trying in the background",
                exc,
            )
            self._background(self._recover_and_end(transport, key, options, patiently=True))
            return
        await self._end_replayed(replay)

    async def _end_replayed(self, replay: dict[str, Any]) -> None:
        session_id = _usable_id(replay.get("id"))
        if session_id is None:
            logger.error(
                "Protoface answered a session create without a session id; if a session "
                "was created it runs until its idle timeout"
            )
            return
        self._remember(session_id)
        await self.end(session_id)


def _may_pass(exc: Exception) -> bool:
    """Whether a replay's failure may pass if tried again later (an outage, not a refusal)."""
    if isinstance(exc, APIConnectionError):
        return True
    return isinstance(exc, ProtofaceAPIError) and should_retry(exc.status_code)


def _warn_unrecovered(exc: Exception) -> None:
    logger.warning(
        "could not learn which Protoface session a failed start() created (%s); "
        "if one was created it runs until its idle timeout",
        exc,
    )


def _usable_id(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None

"""`AvatarSession`: a hosted Protoface avatar for the whole of a LiveKit Agents conversation.

`start()` checks everything, creates the first hosted session and gives the
agent session one audio sink for the whole conversation
(`output.AvatarAudioOutput`). A lifetime task then follows the conversation:

1. wait for the avatar to join (or report why it failed, within seconds);
2. keep it: silence is sent now and then so the hosted idle timeout never
   fires while the agent listens;
3. when it is lost (the room says it left, or the session ended), route the
   agent's speech to the room within seconds, emit `"avatar_lost"` and, when
   the cause is recoverable, bring a replacement (`recovery.py`), switched in
   between utterances (`"avatar_restored"`);
4. before the session cap, start a successor and hand over between
   utterances (`"avatar_handover"`).

`aclose()` (also run at job shutdown and when the agent session closes) ends
every hosted session the conversation started.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Coroutine, Mapping
from typing import Any

from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    AgentSession,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession

from .api import ProtofaceAPI
from .conversation import Conversation, Credentials, Settings
from .errors import ProtofaceException
from .events import (
    AvatarHandoverEvent,
    AvatarLostEvent,
    AvatarRestoredEvent,
    AvatarSwitchedEvent,
    EventTypes,
)
from .hosted import SAMPLE_RATE
from .identities import DEFAULT_AVATAR_IDENTITY
from .log import logger
from .options import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_FOR_AVATAR,
    DEFAULT_WORKER_TOKEN_TTL,
    MAX_WORKER_TOKEN_TTL,
    changed_options,
    check_flag,
    check_options,
    check_wait_for_avatar,
    given,
    identity_or_default,
)
from .recovery import RecoveryPolicy
from .types import DEFAULT_STOCK_AVATAR_ID, END_REASON_METADATA_KEY, MetadataValue, SessionOptions
from .usage import AvatarUsage

__all__ = [
    "DEFAULT_STOCK_AVATAR_ID",
    "DEFAULT_WAIT_FOR_AVATAR",
    "DEFAULT_WORKER_TOKEN_TTL",
    "END_REASON_METADATA_KEY",
    "MAX_WORKER_TOKEN_TTL",
    "AvatarHandoverEvent",
    "AvatarLostEvent",
    "AvatarRestoredEvent",
    "AvatarSession",
    "AvatarSwitchedEvent",
    "AvatarUsage",
    "RecoveryPolicy",
]

FALLBACK_SAMPLE_RATE = SAMPLE_RATE


_AVATAR_AGENT_NAME = "protoface-avatar-agent"


class AvatarSession(BaseAvatarSession[EventTypes]):
    """A Protoface avatar session for LiveKit Agents.

    ```python
    avatar = protoface.AvatarSession(avatar_id="av_stock_001")
    await avatar.start(session, room=ctx.room)
    await session.start(agent=MyAgent(), room=ctx.room)
    ```

    Events:
        `"metrics_collected"` (`AvatarMetrics`) when the avatar joined;
        `"avatar_lost"` (`AvatarLostEvent`) when it is gone after joining;
        `"avatar_restored"` (`AvatarRestoredEvent`) when a replacement speaks
        again; `"avatar_handover"` (`AvatarHandoverEvent`) when a successor took
        over before the session cap; `"avatar_switched"`
        (`AvatarSwitchedEvent`) when `switch()` put a new avatar in place;
        `"avatar_usage"` (`AvatarUsage`) once, when the conversation ended
        (see `usage`).

    Args:
        avatar_id: Protoface avatar id to render. Defaults to the stock
            avatar `av_stock_001`.
        api_url: Protoface API base URL. Defaults to `PROTOFACE_API_URL`,
            then the public API.
        api_key: Protoface API key. Defaults to `PROTOFACE_API_KEY`.
        max_duration_seconds: Ceiling on each hosted session, an int in
            1..3600 (Protoface applies the lower of this and the plan
            limit). With recovery on, a conversation outlives it: a
            successor session takes over before it runs out.
        avatar_participant_identity: LiveKit identity of the avatar
            participant. Defaults to `protoface-avatar-agent` for an agent
            alone in its room, and to `protoface-avatar-agent-for-<agent
            identity>` where another agent is (so two agents' avatars never
            knock each other out); successors join as `<identity>-2`,
            `<identity>-3`, ... An identity another agent's avatar holds is
            refused at `start()`.
        avatar_participant_name: Display name of the avatar participant.
            Defaults to `protoface-avatar-agent`.
        conn_options: Timeout and retry options for Protoface API calls.
        quality: `mock`, `lite`, `standard` or `pro` (drives billing).
        idle_timeout_seconds: The hosted session ends after this many
            seconds without audio from the agent (1..600; API default 30).
            The plugin keeps a live conversation from reaching it; it only
            ends a session whose agent process died.
        metadata: Your own key/value data stored on each session (str keys;
            str, int, float, bool or None values; at most 8 KB as JSON; no
            `_avatar.` keys).
        worker_token_ttl: Lifetime of each LiveKit token minted for an
            avatar worker (more than 0, at most 6 hours). It only has to
            outlive the worker's join.
        poll_interval: Seconds between reads of a joined session (until it
            joins, every 0.25 s; the room reports departures at once).
        audio_fallback: When the avatar is lost, publish the agent's audio
            in the room itself so the conversation goes on audio-only.
        recovery: Bring a replacement avatar after a recoverable loss and
            hand over to a successor before the session cap. `False` turns
            both off; a `RecoveryPolicy` tunes the bounds.
        wait_playback_start: Let the avatar say when it starts playing each
            utterance (the transcript and `playback_latency` follow the
            avatar's real playback) instead of assuming it starts at once.
        wait_for_avatar: Seconds an utterance waits for an avatar that is not
            ready yet (a hosted avatar takes seconds to start) before the
            agent's own audio track speaks it; the avatar then takes over at
            the next utterance boundary. Defaults to 1.0, so the first words
            are heard within about 2 s whatever the avatar's cold start.
            `0` never waits; `None` always waits (the published plugin's
            behaviour). Needs `audio_fallback` (without it, speech waits).

    Raises:
        ProtofaceException: If no API key is provided.
        ProtofaceValueError: If an argument is refused.
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
        recovery: bool | RecoveryPolicy = True,
        wait_playback_start: bool = True,
        wait_for_avatar: float | None = DEFAULT_WAIT_FOR_AVATAR,
    ) -> None:
        """Create a Protoface avatar session; the arguments are described on the class."""
        super().__init__()
        self._options = SessionOptions(
            avatar_id=avatar_id,
            max_duration_seconds=given(max_duration_seconds),
            quality=given(quality),
            idle_timeout_seconds=given(idle_timeout_seconds),
            metadata=given(metadata) or {},
        )
        explicit = identity_or_default(
            avatar_participant_identity, "avatar_participant_identity", None
        )
        # Until start() picks one for the room (`identities.py`): the published default.
        self._identity = explicit or DEFAULT_AVATAR_IDENTITY
        check_options(worker_token_ttl, poll_interval, audio_fallback, recovery)
        check_flag(wait_playback_start, "wait_playback_start")
        self._settings = Settings(
            explicit_identity=explicit,
            name=identity_or_default(avatar_participant_name, "avatar_participant_name", None)
            or _AVATAR_AGENT_NAME,
            worker_token_ttl=worker_token_ttl,
            poll_interval=float(poll_interval),
            audio_fallback=audio_fallback,
            policy=RecoveryPolicy() if recovery is True else (recovery or None),
            wait_playback_start=wait_playback_start,
            wait_for_avatar=check_wait_for_avatar(wait_for_avatar),
        )
        self._api = ProtofaceAPI(api_key=api_key, api_url=api_url, conn_options=conn_options)

        self._starting = False
        # The part of start() that creates the hosted session; aclose() cancels it.
        self._attach_task: asyncio.Task[None] | None = None
        self._closed_while_starting = False
        self._close_lock = asyncio.Lock()
        self._conversation: Conversation | None = None
        self._final_usage: AvatarUsage | None = None  # once the conversation ended
        self._closing: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (
            f"AvatarSession(avatar_id={self.avatar_id!r}, "
            f"avatar_identity={self.avatar_identity!r}, "
            f"session_id={self.session_id!r}, api_url={self._api.api_url!r})"
        )

    @property
    def avatar_identity(self) -> str:
        """LiveKit identity of the avatar participant the agent's speech goes to now."""
        current = self._conversation.current if self._conversation is not None else None
        return current.identity if current is not None else self._identity

    @property
    def provider(self) -> str:
        """Avatar provider name, `"protoface"`."""
        return "protoface"

    @property
    def session_id(self) -> str | None:
        """The Protoface session the agent's speech goes to (the last one, while lost).

        `None` until `start()` succeeds and after `aclose()`.
        """
        current = self._conversation.current if self._conversation is not None else None
        return current.session_id if current is not None else None

    @property
    def usage(self) -> AvatarUsage:
        """What this conversation's avatars did and cost so far (a frozen snapshot).

        Billable seconds are read from Protoface after each session ended, so
        they are complete only once the conversation ended (`aclose()`), and
        final only when `billable_seconds_final` says so (Protoface's usage is
        eventually consistent). The same value is emitted as `"avatar_usage"`
        and logged in one INFO line when the conversation ends.
        """
        if self._conversation is not None:
            return self._conversation.usage()
        return self._final_usage or AvatarUsage()

    @property
    def session_ids(self) -> list[str]:
        """Every hosted session this conversation started, oldest first."""
        conversation = self._conversation
        return list(conversation.launcher.created) if conversation is not None else []

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
        if self._starting or self._conversation is not None:
            raise RuntimeError(
                "AvatarSession.start() called twice; create a new AvatarSession "
                "for each agent session"
            )
        self._starting = True
        try:
            # Everything that can be refused is refused before the base class
            # starts its join watcher and before anything goes over the network.
            conversation = await Conversation.prepare(
                self._api,
                self._options,
                self._settings,
                room,
                Credentials(livekit_url, livekit_api_key, livekit_api_secret),
            )
            self._identity = conversation.identity
            await self._run_attach(self._attach(agent_session, room, conversation))
        finally:
            self._starting = False

    async def _run_attach(self, attaching: Coroutine[Any, Any, None]) -> None:
        # The rest runs in a task of its own, so that aclose() can stop it;
        # cancelling start() cancels it too. Should it be cancelled before it
        # ever ran, nothing was started, so there is nothing to clean up.
        self._closed_while_starting = False
        attach = asyncio.create_task(attaching, name="protoface-start")
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

    async def _attach(
        self, agent_session: AgentSession[Any], room: rtc.Room, conversation: Conversation
    ) -> None:
        self._conversation = conversation
        try:
            await super().start(agent_session, room)
            await conversation.begin(agent_session, room, self.emit)
        except BaseException:
            # Shielded: a second cancel cannot orphan the session.
            await asyncio.shield(self._release())
            raise
        agent_session.on("close", self._on_agent_session_closed)
        agent_session.on("agent_state_changed", conversation.books.agent_state_changed)
        self.on("metrics_collected", conversation.books.metrics_collected)

    def _on_agent_session_closed(self, _: object) -> None:
        # A job that hands the caller over ends the agent session, not the job:
        # the hosted session must not run on, billed, until the job ends.
        logger.debug("agent session closed; ending the protoface avatar")
        self._closing = asyncio.ensure_future(self.aclose())

    @property
    def avatar_id(self) -> str:
        """The avatar the agent's speech goes to now (it changes with `switch()`)."""
        current = self._conversation.current if self._conversation is not None else None
        if current is not None and current.options is not None:
            return current.options.avatar_id
        return self._options.avatar_id

    async def switch(
        self,
        *,
        avatar_id: NotGivenOr[str] = NOT_GIVEN,
        quality: NotGivenOr[str | None] = NOT_GIVEN,
        max_duration_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        idle_timeout_seconds: NotGivenOr[int | None] = NOT_GIVEN,
        metadata: NotGivenOr[Mapping[str, MetadataValue] | None] = NOT_GIVEN,
    ) -> AvatarSwitchedEvent:
        """Change the avatar mid-conversation, without a gap in the video.

        A new hosted session is created with these options (the ones not given
        stay as they are) and joins while the current avatar still speaks; the
        agent's speech moves to it between utterances (none is lost or said
        twice); then the current session is ended. `avatar_identity`,
        `session_id` and `avatar_id` follow, `"avatar_switched"` is emitted, and
        later replacements and handovers use the new options.

        Asked while the avatar is lost and being replaced, or during a
        handover, the switch waits until that is over, then runs. Cancelling
        the call stops the waiting, not a switch already under way.

        Args:
            avatar_id: The Protoface avatar to show now.
            quality: `mock`, `lite`, `standard` or `pro`.
            max_duration_seconds: Ceiling on each hosted session from now on.
            idle_timeout_seconds: Idle timeout of each hosted session from now on.
            metadata: Your data on each hosted session from now on.

        Returns:
            The `AvatarSwitchedEvent` that was emitted.

        Raises:
            ProtofaceValueError: If an option is refused (nothing was started).
            ProtofaceException: If `start()` has not run or `aclose()` did, if
                another switch is under way, or if the new avatar could not be
                started or did not join (the current avatar goes on speaking;
                the cause is chained).
        """
        # What the conversation's sessions are created with now (a switch the
        # caller stopped waiting for may have changed it since).
        conversation = self._conversation
        current = conversation.launcher.options if conversation is not None else self._options
        options = changed_options(
            current,
            avatar_id=avatar_id,
            quality=quality,
            max_duration_seconds=max_duration_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
            metadata=metadata,
        )
        lifetime = conversation.lifetime if conversation is not None else None
        if conversation is None or lifetime is None:
            raise ProtofaceException(
                f"AvatarSession.switch(avatar_id={options.avatar_id!r}) needs a started "
                "avatar: call start() first (and not after aclose())"
            )
        event = await conversation.switch(lifetime, options)
        self._options = options
        return event

    async def wait_for_join(self, *, timeout: float | None = 30.0) -> None:
        """Wait until the avatar has joined the room and publishes video.

        Joined is whichever comes first: the avatar's video publication in
        this agent's room, or Protoface reporting the session `running` (its
        first frame is out). In the second case the publication can reach this
        process's `room` a moment later, so code that reads the avatar's tracks
        from `room.remote_participants` waits for them there.

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
        lifetime = self._conversation.lifetime if self._conversation is not None else None
        if lifetime is None:
            # start() has not created a hosted session: base class behaviour.
            await super().wait_for_join(timeout=timeout)
            return
        await asyncio.wait_for(lifetime.first_join(), timeout=timeout)

    async def aclose(self) -> None:
        """End every hosted session and release every resource.

        Stops watching, ends the hosted sessions (a failure is logged as a
        warning, never raised), closes the fallback audio and the base class
        resources. Idempotent; safe when `start()` never ran. When `start()` is
        still running, it is stopped (it raises `ProtofaceException`) and
        whatever it created is ended first.
        """
        attach = self._attach_task
        if attach is not None and not attach.done():
            self._closed_while_starting = True
            attach.cancel()
        async with self._close_lock:
            if attach is not None:
                # An interrupted start() ends what it created (waiting does not cancel it).
                await asyncio.wait({attach})
            # Shielded: a cancelled shutdown must still end the billed sessions.
            await asyncio.shield(asyncio.ensure_future(self._release()))

    async def _release(self) -> None:
        # Every caller (a failed start(), aclose(), the agent session's close)
        # waits for the same end of the conversation before the API is closed.
        conversation = self._conversation
        agent_session = self._agent_session
        if conversation is not None:
            # The base class removes the participant named by `avatar_identity`
            # from the room at close: the last avatar, never another agent's.
            self._identity = conversation.identity_to_remove(self._identity)
            if agent_session is not None:
                agent_session.off("close", self._on_agent_session_closed)
                agent_session.off("agent_state_changed", conversation.books.agent_state_changed)
            await conversation.end(self._api, self._emit_usage)
            self._final_usage = conversation.usage()
            if self._conversation is conversation:
                self._conversation = None
        await BaseAvatarSession.aclose(self)
        await self._api.aclose()

    def _emit_usage(self, usage: AvatarUsage) -> None:
        self.emit("avatar_usage", usage)

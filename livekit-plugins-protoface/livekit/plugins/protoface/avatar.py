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
import dataclasses
import datetime
import math
from collections.abc import Mapping
from typing import Any

from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    AgentSession,
    APIConnectOptions,
    NotGivenOr,
    utils,
)
from livekit.agents.voice import AgentStateChangedEvent
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession

from .api import ProtofaceAPI
from .errors import ProtofaceException, ProtofaceValueError
from .events import (
    AvatarHandoverEvent,
    AvatarLostEvent,
    AvatarRestoredEvent,
    AvatarSwitchedEvent,
    EventTypes,
)
from .fallback import RoomAudio
from .hosted import SAMPLE_RATE, Hosted, Launcher
from .identities import DEFAULT_AVATAR_IDENTITY, AvatarIdentities, speaks_for
from .lifetime import Lifetime
from .log import logger
from .output import AvatarAudioOutput
from .recovery import RecoveryPolicy
from .telemetry import AvatarTelemetry
from .tokens import worker_tokens_for
from .types import DEFAULT_STOCK_AVATAR_ID, END_REASON_METADATA_KEY, MetadataValue, SessionOptions
from .usage import AvatarUsage, UsageRecorder
from .validation import check_nonblank

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
DEFAULT_WORKER_TOKEN_TTL = datetime.timedelta(minutes=10)
"""Lifetime of the worker's LiveKit token: long enough to join, short if it leaks."""
MAX_WORKER_TOKEN_TTL = datetime.timedelta(hours=6)
DEFAULT_WAIT_FOR_AVATAR = 1.0
"""Seconds an utterance waits for an avatar that is not ready before the agent's track speaks it.

With the agent's own track published as the wait begins, the first words are
heard within about 2 s of the line's start, whatever the avatar's cold start."""
MAX_WAIT_FOR_AVATAR = 600.0
DEFAULT_POLL_INTERVAL = 15.0
"""Seconds between reads of a joined session: the room reports departures itself."""

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
            max_duration_seconds=_given(max_duration_seconds),
            quality=_given(quality),
            idle_timeout_seconds=_given(idle_timeout_seconds),
            metadata=_given(metadata) or {},
        )
        self._explicit_identity: str | None = _identity_or_default(
            avatar_participant_identity, "avatar_participant_identity", None
        )
        # Until start() picks one for the room (`identities.py`): the published default.
        self._identity = self._explicit_identity or DEFAULT_AVATAR_IDENTITY
        self._name = (
            _identity_or_default(avatar_participant_name, "avatar_participant_name", None)
            or _AVATAR_AGENT_NAME
        )
        _check_options(worker_token_ttl, poll_interval, audio_fallback, recovery)
        _check_flag(wait_playback_start, "wait_playback_start")
        self._wait_for_avatar = _check_wait_for_avatar(wait_for_avatar)
        self._worker_token_ttl = worker_token_ttl
        self._poll_interval = float(poll_interval)
        self._audio_fallback = audio_fallback
        self._policy = RecoveryPolicy() if recovery is True else (recovery or None)
        self._wait_playback_start = wait_playback_start
        self._api = ProtofaceAPI(api_key=api_key, api_url=api_url, conn_options=conn_options)

        self._starting = False
        # The part of start() that creates the hosted session; aclose() cancels it.
        self._attach_task: asyncio.Task[None] | None = None
        self._closed_while_starting = False
        self._close_lock = asyncio.Lock()
        self._lifetime: Lifetime | None = None
        self._launcher: Launcher | None = None
        self._closing: asyncio.Future[None] | None = None
        # What the conversation's avatars did and cost (usage.py), once started.
        self._recorder: UsageRecorder | None = None
        self._final_usage: AvatarUsage | None = None

    def __repr__(self) -> str:
        return (
            f"AvatarSession(avatar_id={self.avatar_id!r}, "
            f"avatar_identity={self.avatar_identity!r}, "
            f"session_id={self.session_id!r}, api_url={self._api.api_url!r})"
        )

    @property
    def avatar_identity(self) -> str:
        """LiveKit identity of the avatar participant the agent's speech goes to now."""
        current = self._lifetime.current if self._lifetime is not None else None
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
        current = self._lifetime.current if self._lifetime is not None else None
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
        if self._final_usage is not None:
            return self._final_usage
        recorder = self._recorder
        if recorder is None:
            return AvatarUsage()
        if self._launcher is not None:
            recorder.sessions_started(len(self._launcher.created))
        return recorder.usage()

    @property
    def session_ids(self) -> list[str]:
        """Every hosted session this conversation started, oldest first."""
        return list(self._launcher.created) if self._launcher is not None else []

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
        if self._starting or self._lifetime is not None:
            raise RuntimeError(
                "AvatarSession.start() called twice; create a new AvatarSession "
                "for each agent session"
            )
        self._starting = True
        try:
            # Everything that can be refused is refused before the base class
            # starts its join watcher and before anything goes over the network.
            launcher = self._launcher_for(
                room,
                livekit_url=livekit_url,
                livekit_api_key=livekit_api_key,
                livekit_api_secret=livekit_api_secret,
            )
            await self._run_attach(agent_session, room, launcher)
        finally:
            self._starting = False

    def _launcher_for(
        self,
        room: rtc.Room,
        *,
        livekit_url: NotGivenOr[str | None],
        livekit_api_key: NotGivenOr[str | None],
        livekit_api_secret: NotGivenOr[str | None],
    ) -> Launcher:
        url, tokens = worker_tokens_for(
            room,
            livekit_url=livekit_url,
            livekit_api_key=livekit_api_key,
            livekit_api_secret=livekit_api_secret,
            avatar_identity=self._identity,
            ttl=self._worker_token_ttl,
        )
        identities = AvatarIdentities(room, tokens.agent_identity, self._explicit_identity)
        identities.check_explicit()
        self._identity = identities.base
        return Launcher(
            self._api,
            self._options,
            tokens=tokens,
            livekit_url=url,
            room=room,
            identities=identities,
            name=self._name,
            poll_interval=self._poll_interval,
            wait_playback_start=self._wait_playback_start,
        )

    async def _run_attach(
        self, agent_session: AgentSession[Any], room: rtc.Room, launcher: Launcher
    ) -> None:
        # The rest runs in a task of its own, so that aclose() can stop it;
        # cancelling start() cancels it too. Should it be cancelled before it
        # ever ran, nothing was started, so there is nothing to clean up.
        self._closed_while_starting = False
        attach = asyncio.create_task(
            self._attach(agent_session, room, launcher), name="protoface-start"
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

    async def _attach(
        self, agent_session: AgentSession[Any], room: rtc.Room, launcher: Launcher
    ) -> None:
        self._launcher = launcher
        telemetry = AvatarTelemetry(
            avatar_id=self._options.avatar_id, quality=self._options.quality
        )
        self._recorder = UsageRecorder(telemetry)
        hosted: Hosted | None = None
        try:
            await super().start(agent_session, room)
            hosted = await launcher.launch()
            output = AvatarAudioOutput(
                hosted.route,
                sample_rate=SAMPLE_RATE,
                avatar_route=True,
                wait_for_avatar=self._wait_for_avatar,
            )
            agent_session.output.replace_audio_tail(output)
            # A cancel requested while the synchronous swap ran lands here, and
            # so still ends the session, instead of after start() returned.
            await asyncio.sleep(0)
        except BaseException:
            # Shielded: a second cancel cannot orphan the session.
            await asyncio.shield(self._release_attach(launcher, hosted))
            raise
        self._lifetime = Lifetime(
            self._on_lifetime_event,
            launcher,
            hosted,
            output=output,
            fallback=RoomAudio(room, sample_rate=FALLBACK_SAMPLE_RATE)
            if self._audio_fallback
            else None,
            policy=self._policy,
        )
        self._lifetime.start()
        agent_session.on("close", self._on_agent_session_closed)
        agent_session.on("agent_state_changed", self._on_agent_state_changed)
        self.on("metrics_collected", self._on_metrics_collected)
        self._watch_first_join(self._lifetime)

    def _on_lifetime_event(self, event: EventTypes, payload: object) -> None:
        # The books first, so a handler reading `usage` already sees the event.
        recorder = self._recorder
        if recorder is not None:
            if isinstance(payload, AvatarLostEvent):
                recorder.lost(payload)
            elif isinstance(payload, AvatarRestoredEvent):
                recorder.restored(payload)
            elif isinstance(payload, AvatarHandoverEvent):
                recorder.handed_over(payload)
            elif isinstance(payload, AvatarSwitchedEvent):
                recorder.switched(payload)
        self.emit(event, payload)

    def _watch_first_join(self, lifetime: Lifetime) -> None:
        def settled(joined: asyncio.Future[None]) -> None:
            recorder = self._recorder
            if recorder is None or joined.cancelled():
                return
            exc = joined.exception()
            session_id = lifetime.current.session_id
            if exc is None:
                recorder.joined(session_id)
            else:
                reason = getattr(exc, "failure_code", None) or type(exc).__name__
                recorder.join_failed(session_id, str(reason))

        asyncio.ensure_future(lifetime.first_join()).add_done_callback(settled)

    def _on_agent_state_changed(self, ev: AgentStateChangedEvent) -> None:
        if self._recorder is not None:
            self._recorder.speaking(ev.new_state == "speaking")

    def _on_metrics_collected(self, metrics: object) -> None:
        # The base class reports each utterance's playback latency as an
        # `AvatarMetrics` (type "avatar_metrics"), which livekit-agents does not
        # export by name: read the two public fields.
        latency = getattr(metrics, "playback_latency", None)
        if (
            self._recorder is not None
            and getattr(metrics, "type", None) == "avatar_metrics"
            and isinstance(latency, (int, float))
            and latency > 0
        ):
            self._recorder.playback_latency(float(latency))

    async def _release_attach(self, launcher: Launcher, hosted: Hosted | None) -> None:
        if hosted is not None:
            await launcher.retire(hosted, end=True)
        await launcher.aclose()
        await self._close_books(launcher)
        self._launcher = None
        await BaseAvatarSession.aclose(self)
        await self._api.aclose()

    def _on_agent_session_closed(self, _: object) -> None:
        # A job that hands the caller over ends the agent session, not the job:
        # the hosted session must not run on, billed, until the job ends.
        logger.debug("agent session closed; ending the protoface avatar")
        self._closing = asyncio.ensure_future(self.aclose())

    @property
    def avatar_id(self) -> str:
        """The avatar the agent's speech goes to now (it changes with `switch()`)."""
        current = self._lifetime.current if self._lifetime is not None else None
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
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("avatar_id", avatar_id),
                ("quality", quality),
                ("max_duration_seconds", max_duration_seconds),
                ("idle_timeout_seconds", idle_timeout_seconds),
                ("metadata", metadata),
            )
            if utils.is_given(value)
        }
        if "metadata" in changes and changes["metadata"] is None:
            changes["metadata"] = {}
        # What the conversation's sessions are created with now (a switch the
        # caller stopped waiting for may have changed it since).
        current = self._launcher.options if self._launcher is not None else self._options
        options = dataclasses.replace(current, **changes)  # validates
        lifetime = self._lifetime
        if lifetime is None:
            raise ProtofaceException(
                f"AvatarSession.switch(avatar_id={options.avatar_id!r}) needs a started "
                "avatar: call start() first (and not after aclose())"
            )
        telemetry = self._recorder.telemetry if self._recorder is not None else None
        if telemetry is not None:
            telemetry.switch_started(options.avatar_id, options.quality)
        try:
            event = await lifetime.switch(options)
        except asyncio.CancelledError:
            raise  # the caller stopped waiting; the switch itself goes on
        except BaseException as exc:
            if telemetry is not None:
                telemetry.switch_failed(type(exc).__name__)
            raise
        self._options = options
        if telemetry is not None:
            telemetry.set_quality(options.quality)
        return event

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
        lifetime = self._lifetime
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
        lifetime, self._lifetime = self._lifetime, None
        launcher, self._launcher = self._launcher, None
        if lifetime is not None:
            # The base class removes the participant named by `avatar_identity`
            # from the room at close: the last avatar, never another agent's.
            self._identity = _removable(launcher, lifetime.current.identity)
        agent_session = self._agent_session
        if agent_session is not None:
            agent_session.off("close", self._on_agent_session_closed)
            agent_session.off("agent_state_changed", self._on_agent_state_changed)
        if lifetime is not None:
            await lifetime.aclose()
        if launcher is not None:
            await launcher.aclose()
            await self._close_books(launcher)
        await BaseAvatarSession.aclose(self)
        await self._api.aclose()

    async def _close_books(self, launcher: Launcher) -> None:
        """Read what the ended sessions billed; report the usage once (event, log, telemetry)."""
        recorder = self._recorder
        if recorder is None or self._final_usage is not None:
            return
        try:
            usage = await recorder.finish(self._api, launcher.created)
        except Exception:
            logger.exception("could not total the protoface avatar's usage")
            return
        self._final_usage = usage
        logger.info(
            "protoface avatar usage: %s",
            usage.describe(),
            extra={
                "sessions_started": usage.sessions_started,
                "billable_seconds": usage.billable_seconds,
                "billable_seconds_final": usage.billable_seconds_final,
            },
        )
        self.emit("avatar_usage", usage)


def _removable(launcher: Launcher | None, identity: str) -> str:
    """`identity` if removing it from the room removes our avatar; else one nobody holds."""
    if launcher is None:
        return identity
    participant = launcher.room.remote_participants.get(identity)
    owner = speaks_for(participant) if participant is not None else None
    if owner is None or owner == launcher.agent_identity:
        return identity
    logger.warning(
        "the avatar identity %r now speaks for agent %r; it is not removed from the room",
        identity,
        owner,
    )
    return f"{identity}-released"


def _given(value: NotGivenOr[Any]) -> Any:
    return value if utils.is_given(value) else None


def _identity_or_default(
    value: NotGivenOr[str | None], param: str, default: str | None
) -> str | None:
    if not utils.is_given(value) or value is None:
        return default
    check_nonblank(value, param)
    return value


def _check_flag(value: object, param: str) -> None:
    if not isinstance(value, bool):
        raise ProtofaceValueError(f"{param} must be True or False, got {value!r}", param=param)


def _check_wait_for_avatar(value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= MAX_WAIT_FOR_AVATAR
    ):
        raise ProtofaceValueError(
            f"wait_for_avatar must be a number of seconds from 0 to {MAX_WAIT_FOR_AVATAR:g}, "
            f"or None to always wait for the avatar; got {value!r}",
            param="wait_for_avatar",
        )
    return float(value)


def _check_options(
    worker_token_ttl: object, poll_interval: object, audio_fallback: object, recovery: object
) -> None:
    """The options a caller gets wrong in ways the type checker does not catch."""
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
    _check_flag(audio_fallback, "audio_fallback")
    if not isinstance(recovery, (bool, RecoveryPolicy)):
        raise ProtofaceValueError(
            f"recovery must be True, False or a RecoveryPolicy, got {recovery!r}",
            param="recovery",
        )

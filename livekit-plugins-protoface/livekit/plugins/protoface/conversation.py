"""A started `AvatarSession`'s conversation: its hosted sessions, its avatar, its books.

`AvatarSession` is the public face; once `start()` has checked everything,
this is what it follows: the `Launcher` that creates and ends each hosted
session, the `Lifetime` that keeps an avatar speaking for the agent, and the
`Books` that record what the avatars did and cost.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession, NotGivenOr

from .api import ProtofaceAPI
from .books import Books
from .events import AvatarSwitchedEvent, EventTypes
from .fallback import RoomAudio
from .hosted import SAMPLE_RATE, Hosted, Launcher
from .identities import DEFAULT_AVATAR_IDENTITY, AvatarIdentities, removable_identity
from .lifetime import Lifetime
from .output import AvatarAudioOutput
from .recovery import RecoveryPolicy
from .telemetry import AvatarTelemetry
from .tokens import worker_tokens_for
from .types import SessionOptions
from .usage import AvatarUsage

__all__ = ["Conversation", "Credentials", "Settings"]


@dataclass(frozen=True)
class Settings:
    """What an `AvatarSession` was created with (checked), besides its session options."""

    explicit_identity: str | None
    name: str
    worker_token_ttl: datetime.timedelta
    poll_interval: float
    audio_fallback: bool
    policy: RecoveryPolicy | None
    wait_playback_start: bool
    wait_for_avatar: float | None


@dataclass(frozen=True)
class Credentials:
    """The LiveKit server and key pair `start()` was given (each may come from the environment)."""

    url: NotGivenOr[str | None]
    api_key: NotGivenOr[str | None]
    api_secret: NotGivenOr[str | None]


class Conversation:
    """Creates the hosted sessions of one agent session and follows its avatar to the end."""

    def __init__(self, launcher: Launcher, books: Books, settings: Settings, identity: str) -> None:
        self.launcher = launcher
        self.identity = identity  # the first avatar's, as chosen for the room
        self.books = books
        self.lifetime: Lifetime | None = None
        self._settings = settings
        self._ending: asyncio.Future[None] | None = None

    @classmethod
    async def prepare(
        cls,
        api: ProtofaceAPI,
        options: SessionOptions,
        settings: Settings,
        room: rtc.Room,
        credentials: Credentials,
    ) -> Conversation:
        """Everything checked, nothing created yet: a conversation ready to `begin()`.

        Raises:
            ProtofaceException: LiveKit credentials are missing or the agent's
                identity is unknown.
            ProtofaceValueError: An argument is refused (an avatar identity
                another agent's avatar holds, say).
        """
        url, tokens = worker_tokens_for(
            room,
            livekit_url=credentials.url,
            livekit_api_key=credentials.api_key,
            livekit_api_secret=credentials.api_secret,
            avatar_identity=settings.explicit_identity or DEFAULT_AVATAR_IDENTITY,
            ttl=settings.worker_token_ttl,
        )
        identities = AvatarIdentities(room, tokens.agent_identity, settings.explicit_identity)
        await identities.survey(lambda: tokens.participants(url))
        identity = identities.choose()
        launcher = Launcher(
            api,
            options,
            tokens=tokens,
            livekit_url=url,
            room=room,
            identities=identities,
            name=settings.name,
            poll_interval=settings.poll_interval,
            wait_playback_start=settings.wait_playback_start,
        )
        books = Books(AvatarTelemetry(avatar_id=options.avatar_id, quality=options.quality))
        return cls(launcher, books, settings, identity)

    @property
    def current(self) -> Hosted | None:
        """The session the agent's speech goes to now, once begun."""
        return self.lifetime.current if self.lifetime is not None else None

    def usage(self) -> AvatarUsage:
        """What the conversation's avatars did and cost so far."""
        return self.books.usage(len(self.launcher.created))

    async def begin(
        self,
        agent_session: AgentSession[Any],
        room: rtc.Room,
        emit: Callable[[EventTypes, object], None],
    ) -> None:
        """Create the first session and give the agent session its one audio sink.

        A failure (or a cancel) after the session was created ends it before
        the error propagates.
        """
        hosted: Hosted | None = None
        try:
            hosted = await self.launcher.launch()
            output = AvatarAudioOutput(
                hosted.route,
                sample_rate=SAMPLE_RATE,
                avatar_route=True,
                wait_for_avatar=self._settings.wait_for_avatar,
            )
            agent_session.output.replace_audio_tail(output)
            # A cancel requested while the synchronous swap ran lands here, and
            # so still ends the session, instead of after start() returned.
            await asyncio.sleep(0)
        except BaseException:
            if hosted is not None:
                # Shielded: a second cancel cannot orphan the session.
                await asyncio.shield(self.launcher.retire(hosted, end=True))
            raise
        fallback = (
            RoomAudio(room, sample_rate=SAMPLE_RATE) if self._settings.audio_fallback else None
        )

        def event(kind: EventTypes, payload: object) -> None:
            # The books first, so a handler reading `usage` already sees the event.
            self.books.event(payload)
            emit(kind, payload)

        self.lifetime = Lifetime(
            event,
            self.launcher,
            hosted,
            output=output,
            fallback=fallback,
            policy=self._settings.policy,
        )
        self.lifetime.start()
        self.books.watch_first_join(self.lifetime)

    async def switch(self, lifetime: Lifetime, options: SessionOptions) -> AvatarSwitchedEvent:
        """`lifetime.switch(options)`, traced (see `AvatarSession.switch`)."""
        telemetry = self.books.telemetry
        telemetry.switch_started(options.avatar_id, options.quality)
        try:
            event = await lifetime.switch(options)
        except asyncio.CancelledError:
            raise  # the caller stopped waiting; the switch itself goes on
        except BaseException as exc:
            telemetry.switch_failed(type(exc).__name__)
            raise
        telemetry.set_quality(options.quality)
        return event

    def identity_to_remove(self, fallback: str) -> str:
        """The avatar the base class may remove from the room at close (never another agent's)."""
        current = self.current
        if current is None:
            return fallback
        return removable_identity(
            self.launcher.room, self.launcher.agent_identity, current.identity
        )

    async def end(self, api: ProtofaceAPI, emit_usage: Callable[[AvatarUsage], None]) -> None:
        """Stop following, end every session, and report the usage once.

        Callers at once (a failed start and `aclose()`, say) wait for the same end.
        """
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._end(api, emit_usage))
        await asyncio.shield(self._ending)

    async def _end(self, api: ProtofaceAPI, emit_usage: Callable[[AvatarUsage], None]) -> None:
        lifetime, self.lifetime = self.lifetime, None
        if lifetime is not None:
            await lifetime.aclose()
        await self.launcher.aclose()
        await self.books.close(api, self.launcher.created, emit_usage)

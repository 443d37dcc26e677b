"""An agent in a real room for a test: its participant, its `AgentSession`, its avatar.

    async with agent_in(livekit_server, avatar_viewer.room_name, start=my_start) as agent:
        handle = agent.say(speech(2.0))
        await avatar_viewer.wait_for_mouth_open()

`agent_in` does what a LiveKit Agents job does before the user's code runs (join
the room as an agent participant, with a fresh `AgentSession`), then runs the
user's own start function, the code their entrypoint runs once connected: the
avatar's `start()`, then `session.start()`. Leaving the block closes what it
started, as a job's shutdown does. The agent speaks pre-rendered audio
(`agent.say(frames)`), so no TTS, STT or LLM service is needed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.room_io import RoomOptions

from protoface_emulator.local.livekit_dev import LiveKitServer
from protoface_emulator.testing.audio import play, wav_frames

if TYPE_CHECKING:
    from livekit.plugins.protoface import AvatarSession

__all__ = ["AgentInRoom", "StartAgent", "agent_in", "start_avatar_agent"]

T = TypeVar("T")

StartAgent = Callable[[AgentSession[Any], rtc.Room], Awaitable[T]]
"""The user's start function: given the session and the connected room, start the
avatar and the session, and return what should be closed afterwards (the
`AvatarSession`, typically) or None."""


@dataclass
class AgentInRoom(Generic[T]):
    """The agent's participant, its `AgentSession`, and what its start function returned.

    Attributes:
        room: The agent's connected room.
        session: The agent's session.
        avatar: What the start function returned (the `AvatarSession` for
            `start_avatar_agent`).
    """

    room: rtc.Room
    session: AgentSession[Any]
    avatar: T

    @property
    def identity(self) -> str:
        """The agent participant's identity."""
        return self.room.local_participant.identity

    def say(
        self, audio: Iterable[rtc.AudioFrame] | Path | str, *, text: str = "(pre-rendered)"
    ) -> SpeechHandle:
        """Start speaking pre-rendered audio through the session (and so the avatar).

        Args:
            audio: Frames (e.g. `speech(2.0)`), or the path of a mono 16-bit WAV file.
            text: The transcript to go with it (not added to the chat context).

        Returns:
            The speech handle; `await handle.wait_for_playout()` or use `speak()`.
        """
        frames = wav_frames(audio) if isinstance(audio, (str, Path)) else list(audio)
        return self.session.say(text, audio=play(frames), add_to_chat_ctx=False)

    async def speak(
        self,
        audio: Iterable[rtc.AudioFrame] | Path | str,
        *,
        text: str = "(pre-rendered)",
        timeout: float = 60.0,
    ) -> SpeechHandle:
        """Say `audio` and wait until it played out (or was interrupted).

        Raises:
            AssertionError: It did not play out within `timeout` seconds.
        """
        handle = self.say(audio, text=text)
        try:
            await asyncio.wait_for(handle.wait_for_playout(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"the agent's speech did not play out within {timeout:g} s"
            ) from None
        return handle


async def start_avatar_agent(session: AgentSession[Any], room: rtc.Room) -> AvatarSession:
    """The default start: a Protoface avatar from the environment, then a plain agent.

    `protoface.AvatarSession()` takes the Protoface and LiveKit settings from the
    environment (`PROTOFACE_API_URL`, `PROTOFACE_API_KEY`, `LIVEKIT_URL`,
    `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`), which the `protoface_emulator`
    fixture sets. The agent takes no audio or text input.
    """
    from livekit.plugins import protoface

    avatar = protoface.AvatarSession()
    await avatar.start(session, room)
    try:
        await session.start(
            agent=Agent(instructions="You speak pre-rendered lines."),
            room=room,
            room_options=RoomOptions(audio_input=False, text_input=False),
        )
    except BaseException:
        await avatar.aclose()
        raise
    return avatar


@overload
def agent_in(
    server: LiveKitServer,
    room: str,
    start: None = None,
    *,
    session: AgentSession[Any] | None = None,
    identity: str | None = None,
) -> AbstractAsyncContextManager[AgentInRoom[AvatarSession]]: ...


@overload
def agent_in(
    server: LiveKitServer,
    room: str,
    start: StartAgent[T],
    *,
    session: AgentSession[Any] | None = None,
    identity: str | None = None,
) -> AbstractAsyncContextManager[AgentInRoom[T]]: ...


def agent_in(
    server: LiveKitServer,
    room: str,
    start: StartAgent[Any] | None = None,
    *,
    session: AgentSession[Any] | None = None,
    identity: str | None = None,
) -> AbstractAsyncContextManager[AgentInRoom[Any]]:
    """Join `room` as an agent participant, run `start`, and close it all afterwards.

    Use it as `async with agent_in(livekit_server, room, start) as agent:`.

    Args:
        server: The LiveKit server (the `livekit_server` fixture).
        room: The room to join, e.g. `avatar_viewer.room_name`.
        start: The user's start function, `(session, room) -> avatar`; by default
            `start_avatar_agent`.
        session: The `AgentSession` to use; a fresh one without STT, LLM or TTS by
            default (the agent speaks with `say(frames)`).
        identity: The agent participant's identity; a fresh `agent-…` one by default.

    On the way out: the session is closed, then whatever `start` returned (its
    `aclose()`, as a job's shutdown closes the avatar), then the room left.
    """
    return _agent_in(server, room, start or start_avatar_agent, session, identity)


@asynccontextmanager
async def _agent_in(
    server: LiveKitServer,
    room: str,
    start: StartAgent[Any],
    session: AgentSession[Any] | None,
    identity: str | None,
) -> AsyncIterator[AgentInRoom[Any]]:
    agent_room = rtc.Room()
    me = identity or f"agent-{uuid.uuid4().hex[:6]}"
    await agent_room.connect(server.url, server.token(me, room, kind="agent"))
    agent_session: AgentSession[Any] = session if session is not None else AgentSession()
    started: Any = None
    try:
        started = await start(agent_session, agent_room)
        yield AgentInRoom(agent_room, agent_session, started)
    finally:
        try:
            await agent_session.aclose()
        finally:
            try:
                close = getattr(started, "aclose", None)
                if close is not None:
                    await close()
            finally:
                await agent_room.disconnect()

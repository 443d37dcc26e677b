"""The agent side of the end-to-end tests, on top of the kit users get.

Everything generic (the agent in a room, the viewer, audio, waiting) is in
`protoface_emulator.testing`; this module only adapts it to these tests, which
name the emulator and the LiveKit credentials explicitly instead of through the
environment, and re-exports what they import.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobExecutorType
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.server import Emulator
from protoface_emulator.testing import (
    AgentInRoom,
    AvatarViewer,
    LiveKitServer,
    audio_seconds,
    eventually,
    play,
    viewer_in,
    wav_frames,
)
from protoface_emulator.testing import agent_in as kit_agent_in

__all__ = [
    "SPEECH_WAV",
    "AgentSide",
    "Conversation",
    "EmulatorAt",
    "agent_in",
    "audio_seconds",
    "conversation_in",
    "eventually",
    "load_speech",
    "mean",
    "play",
    "room_name",
    "thread_agent_server",
    "token",
    "viewer_in",
    "watched_agent_in",
]

SPEECH_WAV = Path(__file__).resolve().parents[2] / "examples" / "assets" / "hello.wav"

AgentSide = AgentInRoom[protoface.AvatarSession]
"""The agent's participant, its AgentSession and its Protoface avatar (`.avatar`)."""


def load_speech(path: Path = SPEECH_WAV, *, seconds: float | None = None) -> list[rtc.AudioFrame]:
    """The bundled spoken line as 20 ms frames (optionally only its first `seconds`)."""
    return wav_frames(path, seconds=seconds)


def token(server: LiveKitServer, identity: str, room: str, *, kind: str = "standard") -> str:
    """A LiveKit token for a participant of the test room (the kit mints it)."""
    return server.token(identity, room, kind=kind)  # type: ignore[arg-type]


def room_name(prefix: str) -> str:
    """A fresh room name, so tests sharing one server never meet."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def agent_in(
    server: LiveKitServer,
    emulator: Emulator,
    room: str,
    *,
    avatar_options: dict[str, Any] | None = None,
    start_options: dict[str, Any] | None = None,
    session: AgentSession[Any] | None = None,
    listen_to: str | None = None,
) -> AsyncIterator[AgentSide]:
    """Connect an agent participant, start its avatar on `emulator`, then its AgentSession.

    The order is the one users write: `avatar.start()` before `session.start()`.
    `start_options` override the LiveKit credentials `avatar.start()` gets;
    `session` replaces the kit's plain one; `listen_to` links the session's
    audio input to that participant (none by default).
    """
    room_options = (
        RoomOptions(audio_input=True, text_input=False, participant_identity=listen_to)
        if listen_to is not None
        else RoomOptions(audio_input=False, text_input=False)
    )

    async def start(
        agent_session: AgentSession[Any], agent_room: rtc.Room
    ) -> protoface.AvatarSession:
        avatar = protoface.AvatarSession(
            api_url=emulator.url, api_key=emulator.api_key, **(avatar_options or {})
        )
        credentials: dict[str, Any] = {
            "livekit_url": server.url,
            "livekit_api_key": server.api_key,
            "livekit_api_secret": server.api_secret,
            **(start_options or {}),
        }
        try:
            await avatar.start(agent_session, agent_room, **credentials)
            await agent_session.start(
                agent=Agent(instructions="You speak pre-rendered lines."),
                room=agent_room,
                room_options=room_options,
            )
        except BaseException:
            await avatar.aclose()
            raise
        return avatar

    async with kit_agent_in(server, room, start, session=session) as agent:
        yield agent


class Conversation(NamedTuple):
    """An agent and its avatar in a fresh room, and what the room sees of them."""

    agent: AgentSide
    avatar_view: AvatarViewer  # follows whichever avatar speaks for the agent
    agent_view: AvatarViewer  # the agent's own track: where the room hears it without an avatar
    lost: list[protoface.AvatarLostEvent]  # every `avatar_lost` event, in order


@asynccontextmanager
async def watched_agent_in(
    server: LiveKitServer, emulator: Emulator, prefix: str, **avatar_options: Any
) -> AsyncIterator[tuple[AgentSide, AvatarViewer]]:
    """A viewer, then the agent (`agent_in`), in a new room named after `prefix`.

    `avatar_options` go to the `AvatarSession`; the avatar may not have joined yet.
    The viewer follows whichever avatar speaks for the agent.
    """
    room = room_name(prefix)
    async with (
        viewer_in(server, room) as avatar_view,
        agent_in(server, emulator, room, avatar_options=avatar_options) as agent,
    ):
        yield agent, avatar_view


@asynccontextmanager
async def conversation_in(
    server: LiveKitServer, emulator: Emulator, prefix: str, **avatar_options: Any
) -> AsyncIterator[Conversation]:
    """`watched_agent_in`, then a viewer of the agent's own track; `avatar_lost` recorded."""
    async with (
        watched_agent_in(server, emulator, prefix, **avatar_options) as (agent, avatar_view),
        viewer_in(server, agent.room.name, agent.identity) as agent_view,
    ):
        lost: list[protoface.AvatarLostEvent] = []
        agent.avatar.on("avatar_lost", lost.append)
        yield Conversation(agent, avatar_view, agent_view, lost)


def thread_agent_server(server: LiveKitServer) -> AgentServer:
    """An `AgentServer` for `server` whose jobs run in threads of this process.

    It reports itself idle: livekit-server only dispatches to workers reporting a
    load below its target, and the default load is this machine's CPU, which the
    avatar video the tests watch keeps busy on 2 cores.
    """
    return AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        ws_url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        port=0,
        num_idle_processes=0,
        load_fnc=lambda: 0.0,
    )


def mean(values: Iterator[float] | list[float]) -> float:
    """Mean of `values` (0.0 when empty)."""
    items = list(values)
    return sum(items) / len(items) if items else 0.0


class EmulatorAt:
    """What `agent_in` needs of an emulator (where it is, its key): one run as a process."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self.api_key = api_key

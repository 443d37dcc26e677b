"""The agent side of the end-to-end tests: a real room, a real AgentSession, real audio.

The agent speaks pre-rendered audio (`session.say(..., audio=...)`), so no LLM,
STT or TTS service is involved; everything else is what runs in production.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit import api, rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.audio import wav_frames
from protoface_emulator.livekit_dev import LiveKitServer
from protoface_emulator.server import Emulator
from protoface_emulator.viewer import AvatarViewer

SPEECH_WAV = Path(__file__).resolve().parents[2] / "examples" / "assets" / "hello.wav"


def load_speech(path: Path = SPEECH_WAV, *, seconds: float | None = None) -> list[rtc.AudioFrame]:
    """The bundled spoken line as 20 ms frames (optionally only its first `seconds`)."""
    return wav_frames(path, seconds=seconds)


async def play(frames: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    """Frames as the async iterator `session.say(audio=...)` takes."""
    for frame in frames:
        yield frame


def audio_seconds(frames: list[rtc.AudioFrame]) -> float:
    """Total duration of `frames`."""
    return sum(f.samples_per_channel / f.sample_rate for f in frames)


def token(server: LiveKitServer, identity: str, room: str, *, kind: str = "standard") -> str:
    """A LiveKit token for a participant of the test room."""
    grants = api.VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_kind(kind)  # type: ignore[arg-type]
        .with_grants(grants)
        .to_jwt()
    )


def room_name(prefix: str) -> str:
    """A fresh room name, so tests sharing one server never meet."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class AgentSide:
    """The agent's participant, its AgentSession and its Protoface avatar."""

    room: rtc.Room
    session: AgentSession
    avatar: protoface.AvatarSession

    @property
    def identity(self) -> str:
        return self.room.local_participant.identity


@asynccontextmanager
async def viewer_in(
    server: LiveKitServer, room: str, watch: str, *, keep_every: int = 0
) -> AsyncIterator[AvatarViewer]:
    """A viewer participant in `room` recording what `watch` publishes."""
    viewer = AvatarViewer(avatar_identity=watch, keep_every=keep_every)
    await viewer.connect(server.url, token(server, f"viewer-{uuid.uuid4().hex[:6]}", room))
    try:
        yield viewer
    finally:
        await viewer.aclose()


@asynccontextmanager
async def agent_in(
    server: LiveKitServer,
    emulator: Emulator,
    room: str,
    *,
    avatar_options: dict[str, Any] | None = None,
    start_options: dict[str, Any] | None = None,
) -> AsyncIterator[AgentSide]:
    """Connect an agent participant, start its avatar, then its AgentSession.

    The order is the one users write: `avatar.start()` before `session.start()`.
    """
    agent_room = rtc.Room()
    await agent_room.connect(
        server.url, token(server, f"agent-{uuid.uuid4().hex[:6]}", room, kind="agent")
    )
    session = AgentSession()
    avatar = protoface.AvatarSession(
        api_url=emulator.url, api_key=emulator.api_key, **(avatar_options or {})
    )
    try:
        credentials: dict[str, Any] = {
            "livekit_url": server.url,
            "livekit_api_key": server.api_key,
            "livekit_api_secret": server.api_secret,
            **(start_options or {}),
        }
        await avatar.start(session, agent_room, **credentials)
        await session.start(
            agent=Agent(instructions="You speak pre-rendered lines."),
            room=agent_room,
            room_options=RoomOptions(audio_input=False, text_input=False),
        )
        yield AgentSide(agent_room, session, avatar)
    finally:
        await session.aclose()
        await avatar.aclose()
        await agent_room.disconnect()


async def eventually(
    predicate: Any,
    *,
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> None:
    """Poll `predicate()` (sync or async) until true; fail with `message` after `timeout`.

    `message` may be a callable, evaluated only on failure (to report late state).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(text or f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def mean(values: Iterator[float] | list[float]) -> float:
    """Mean of `values` (0.0 when empty)."""
    items = list(values)
    return sum(items) / len(items) if items else 0.0

"""The avatar lasts the conversation: silences, losses, outages, session caps, closing.

Every test is a real room: livekit-server, the emulator (in-process, or its
command when the test kills it), the plugin's AvatarSession in an agent
participant, and viewers that see and hear what a person in the room would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from livekit import api
from livekit.plugins import protoface

from protoface_emulator.lifecycle import WorkerEvents, WorkerHandle, WorkerSpec
from protoface_emulator.local.launch import EmulatorProcess, start_emulator_process
from protoface_emulator.server import Emulator, default_worker_factory
from protoface_emulator.testing import AvatarViewer, LiveKitServer
from protoface_emulator.testing.audio import tone

from .harness import (
    AgentSide,
    EmulatorAt,
    agent_in,
    eventually,
    load_speech,
    room_name,
    viewer_in,
)

AVATAR = "protoface-avatar-agent"
HEARD = 0.05


class Events:
    """Every lifetime event an AvatarSession emitted, in order."""

    def __init__(self, avatar: protoface.AvatarSession) -> None:
        self.lost: list[protoface.AvatarLostEvent] = []
        self.restored: list[protoface.AvatarRestoredEvent] = []
        self.handovers: list[protoface.AvatarHandoverEvent] = []
        avatar.on("avatar_lost", self.lost.append)
        avatar.on("avatar_restored", self.restored.append)
        avatar.on("avatar_handover", self.handovers.append)

    def __repr__(self) -> str:
        return f"lost={self.lost} restored={self.restored} handovers={self.handovers}"


async def speak(agent: AgentSide, seconds: float, *, timeout: float = 30.0) -> None:
    """The agent says `seconds` of the bundled line and it plays out."""
    await agent.speak(load_speech(seconds=seconds), timeout=timeout)


async def session_status(url: str, key: str, session_id: str) -> str:
    async with protoface.ProtofaceAPI(api_url=url, api_key=key) as client:
        return (await client.get_session(session_id))["status"]


async def statuses(url: str, key: str) -> dict[str, str]:
    async with protoface.ProtofaceAPI(api_url=url, api_key=key) as client:
        return {s["id"]: s["status"] for s in [s async for s in client.list_sessions()]}


def billed(all_statuses: dict[str, str]) -> list[str]:
    """Sessions that are not over (what the plan bills and counts)."""
    return [i for i, s in all_statuses.items() if s not in ("ended", "failed", "canceled")]


@asynccontextmanager
async def viewers(
    server: LiveKitServer, room: str, identities: list[str]
) -> AsyncIterator[dict[str, AvatarViewer]]:
    """One viewer per avatar identity the conversation may use (successors have their own)."""
    async with contextlib.AsyncExitStack() as stack:
        watching = {
            identity: await stack.enter_async_context(viewer_in(server, room, identity))
            for identity in identities
        }
        yield watching


def heard(watching: dict[str, AvatarViewer]) -> float:
    """Seconds of speech heard from any avatar."""
    return sum(v.audio_seconds(min_level=HEARD) for v in watching.values())


# -- 1. silence is not idleness ----------------------------------------------------


@pytest.mark.parametrize(
    ("idle_timeout", "pause"),
    [
        pytest.param(3, 9.0, id="short-idle-timeout"),
        pytest.param(None, 40.0, id="defaults-pause-over-30s"),
    ],
)
async def test_silence_longer_than_the_idle_timeout_keeps_the_avatar(
    livekit_server: LiveKitServer, emulator: Emulator, idle_timeout: int | None, pause: float
) -> None:
    room = room_name("silence")
    options: dict[str, Any] = {} if idle_timeout is None else {"idle_timeout_seconds": idle_timeout}
    async with (
        viewer_in(livekit_server, room, AVATAR) as avatar_view,
        agent_in(livekit_server, emulator, room, avatar_options=options) as agent,
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        events = Events(agent.avatar)
        await agent.avatar.wait_for_join(timeout=30)
        await speak(agent, 1.0)
        await avatar_view.wait_for_audio(0.3, timeout=15)
        first = avatar_view.audio_seconds(min_level=HEARD)
        session_id = agent.avatar.session_id
        assert session_id is not None

        await asyncio.sleep(pause)  # the agent listens; nothing is said

        assert await session_status(emulator.url, emulator.api_key, session_id) == "running"
        await speak(agent, 1.5)
        await avatar_view.wait_until(
            lambda: avatar_view.audio_seconds(min_level=HEARD) > first + 0.5,
            timeout=15,
            what="the avatar to speak the line after the pause",
        )
        assert agent_view.audio_seconds() == 0  # not the agent's own track
        assert agent.avatar.session_id == session_id
        assert not events.lost
        assert len(emulator.requests.matching("POST /v1/sessions")) == 1


# -- 2. room events are authoritative ------------------------------------------------


async def _remove(server: LiveKitServer, room: str, identity: str) -> None:
    async with api.LiveKitAPI(server.http_url, server.api_key, server.api_secret) as lk:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))


async def test_avatar_leaving_mid_utterance_settles_it_and_the_room_hears_the_agent(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("left")
    async with (
        agent_in(livekit_server, emulator, room, avatar_options={"recovery": False}) as agent,
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        events = Events(agent.avatar)
        await agent.avatar.wait_for_join(timeout=30)
        handle = agent.say(load_speech())  # the whole line: several seconds
        await asyncio.sleep(0.8)  # the avatar is speaking it
        await _remove(livekit_server, room, AVATAR)
        removed_at = time.monotonic()

        # The utterance in flight settles instead of waiting for an avatar that is gone.
        await asyncio.wait_for(handle.wait_for_playout(), timeout=20)
        await eventually(lambda: bool(events.lost), timeout=15, message=lambda: repr(events))
        assert events.lost[0].reason == "worker_lost"
        lost_after = time.monotonic() - removed_at

        await speak(agent, 1.5)
        await agent_view.wait_for_audio(0.5, timeout=15)
        assert lost_after < 20  # bounded; the benchmark measures the real figure


# -- 3. self-healing ---------------------------------------------------------------


async def test_removed_avatar_is_replaced_and_speaks_again(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("heal")
    successor = f"{AVATAR}-2"
    async with (
        viewers(livekit_server, room, [AVATAR, successor]) as watching,
        agent_in(livekit_server, emulator, room) as agent,
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        events = Events(agent.avatar)
        await agent.avatar.wait_for_join(timeout=30)
        first_id = agent.avatar.session_id
        await speak(agent, 1.0)
        await _remove(livekit_server, room, AVATAR)

        await eventually(lambda: bool(events.restored), timeout=45, message=lambda: repr(events))
        assert [e.reason for e in events.lost] == ["worker_lost"]
        restored = events.restored[0]
        assert restored.previous_session_id == first_id
        assert restored.avatar_identity == successor == agent.avatar.avatar_identity
        assert agent.avatar.session_id == restored.session_id != first_id

        own_before = agent_view.audio_seconds(min_level=HEARD)
        await speak(agent, 1.5)
        await watching[successor].wait_for_audio(0.5, timeout=15)
        await watching[successor].wait_for_mouth_open(timeout=15)
        # Back on the avatar: the agent's own track stays quiet.
        assert agent_view.audio_seconds(min_level=HEARD) - own_before < 0.2
        now = await statuses(emulator.url, emulator.api_key)
        assert billed(now) == [restored.session_id]


async def test_a_session_ended_by_its_owner_is_not_replaced(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("owner")
    async with (
        agent_in(livekit_server, emulator, room) as agent,
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        events = Events(agent.avatar)
        await agent.avatar.wait_for_join(timeout=30)
        assert agent.avatar.session_id is not None
        async with protoface.ProtofaceAPI(api_url=emulator.url, api_key=emulator.api_key) as c:
            await c.end_session(agent.avatar.session_id)
        await eventually(lambda: bool(events.lost), timeout=15, message=lambda: repr(events))
        assert events.lost[0].reason == "end_requested"
        await speak(agent, 1.0)  # goes to the room; and no replacement is started
        await agent_view.wait_for_audio(0.3, timeout=15)
        assert len(emulator.requests.matching("POST /v1/sessions")) == 1
        assert not events.restored


async def test_protoface_killed_then_back_on_the_same_port(
    livekit_server: LiveKitServer, emulator_command: list[EmulatorProcess]
) -> None:
    """SIGKILL takes the API and every worker at once; the same port comes back empty."""
    # A generous join bound: on a busy machine a worker can take well over 15 s.
    args = ["--log-level", "warning", "--join-timeout", "90"]
    first = start_emulator_process(args=args)
    emulator_command.append(first)
    port = first.url.rsplit(":", 1)[1]
    room = room_name("outage")
    fake = EmulatorAt(first.url, first.api_key)
    successor = f"{AVATAR}-2"
    async with (
        viewers(livekit_server, room, [AVATAR, successor]) as watching,
        agent_in(livekit_server, fake, room) as agent,  # type: ignore[arg-type]
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        events = Events(agent.avatar)
        await agent.avatar.wait_for_join(timeout=90)
        await speak(agent, 1.0)
        first.process.kill()
        first.process.wait(timeout=10)

        await eventually(lambda: bool(events.lost), timeout=30, message=lambda: repr(events))
        assert events.lost[0].reason == "protoface_unreachable"
        await speak(agent, 1.5)
        await agent_view.wait_for_audio(0.5, timeout=15)  # audio-only meanwhile

        again = start_emulator_process(api_key=first.api_key, args=[*args, "--port", port])
        emulator_command.append(again)
        await eventually(lambda: bool(events.restored), timeout=90, message=lambda: repr(events))
        assert events.restored[0].avatar_identity == successor
        await speak(agent, 1.5)
        await watching[successor].wait_for_audio(0.5, timeout=15)


# -- 4. calls longer than the cap ----------------------------------------------------


async def test_a_call_longer_than_the_cap_hands_over_without_losing_a_line(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("cap")
    cap = 12
    # Each session lives cap - lead = 9 s of the ~26 s call: up to 4 successors.
    identities = [AVATAR, *(f"{AVATAR}-{n}" for n in range(2, 7))]
    options = {"max_duration_seconds": cap}
    async with (
        viewers(livekit_server, room, identities) as watching,
        agent_in(livekit_server, emulator, room, avatar_options=options) as agent,
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        events = Events(agent.avatar)
        await agent.avatar.wait_for_join(timeout=30)
        lines, line = 0, 1.0
        started = time.monotonic()
        while time.monotonic() - started < 2.2 * cap:
            # A steady tone: every frame of it is loud, so what is heard is what was said.
            await agent.speak(tone(line), timeout=30)
            lines += 1
            await asyncio.sleep(1.0)
        await eventually(
            lambda: heard(watching) >= 0.9 * lines * line,
            timeout=15,
            message=lambda: f"{heard(watching):.1f} s heard of {lines} lines; {events!r}",
        )
        assert len(events.handovers) >= 2, repr(events)
        assert not events.lost, repr(events)
        assert agent_view.audio_seconds(min_level=HEARD) == 0  # every line through an avatar
        last = events.handovers[-1]
        assert agent.avatar.session_id == last.session_id
        assert agent.avatar.avatar_identity == last.avatar_identity
        predecessors = {e.previous_session_id for e in events.handovers}

        async def predecessors_ended() -> bool:
            running = billed(await statuses(emulator.url, emulator.api_key))
            return not predecessors & set(running)

        await eventually(predecessors_ended, timeout=15, message="a replaced session still runs")
        now = await statuses(emulator.url, emulator.api_key)
        # The next handover may already be under way: its successor is the one extra.
        running = billed(now)
        assert last.session_id in running and len(running) <= 2, (running, events)
        assert len(now) == len(agent.avatar.session_ids)
        assert len(events.handovers) + 1 <= len(now) <= len(events.handovers) + 2


# -- 5. the avatar leaves with the conversation --------------------------------------


async def test_closing_the_agent_session_ends_the_hosted_session(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("close")
    async with agent_in(livekit_server, emulator, room) as agent:
        await agent.avatar.wait_for_join(timeout=30)
        session_id = agent.avatar.session_id
        assert session_id is not None
        await agent.session.aclose()  # the avatar itself is not closed by the test

        async def ended() -> bool:
            return await session_status(emulator.url, emulator.api_key, session_id) == "ended"

        await eventually(ended, timeout=20, message="the hosted session still runs")
        await eventually(
            lambda: AVATAR not in agent.room.remote_participants,
            timeout=20,
            message="the avatar stayed in the room",
        )


# -- 6. cheap to watch -----------------------------------------------------------------


async def test_steady_state_reads_the_api_at_most_every_10_s(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("cheap")
    async with agent_in(livekit_server, emulator, room) as agent:
        await agent.avatar.wait_for_join(timeout=30)
        await speak(agent, 1.0)
        before = len(emulator.requests)
        await asyncio.sleep(25)
        during = emulator.requests.all()[before:]
        assert len(during) <= 3, [f"{r.method} {r.path}" for r in during]


# -- 7. the transcript follows the avatar's playback ---------------------------------


class _AudioArrivals:
    """The emulator's real worker, noting when each session first hears the agent."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = default_worker_factory()

    def __call__(self, spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
        arrivals = self.times

        class Noting:
            def __getattr__(self, name: str) -> Any:
                return getattr(events, name)

            def on_audio(self) -> None:
                arrivals.append(asyncio.get_running_loop().time())
                events.on_audio()

        return self._start(spec, Noting())


@pytest.mark.parametrize("wait_playback_start", [True, False])
async def test_playback_start_comes_from_the_avatar_by_default(
    livekit_server: LiveKitServer, wait_playback_start: bool
) -> None:
    """Same event loop for both sides, so the order of events is the order they happened.

    With `wait_playback_start` (the default) the agent's `playback_started`
    comes after the avatar worker received the audio (the worker reports it);
    without it, the agent assumes playback starts the moment it sends the first
    frame, before the avatar has anything.
    """
    arrivals = _AudioArrivals()
    room = room_name("playback")
    options = {"wait_playback_start": wait_playback_start}
    async with (
        Emulator(worker_factory=arrivals) as emu,
        agent_in(livekit_server, emu, room, avatar_options=options) as agent,
        viewer_in(livekit_server, room, AVATAR),
    ):
        started: list[float] = []
        output = agent.session.output.audio
        assert output is not None
        output.on("playback_started", lambda _: started.append(asyncio.get_running_loop().time()))
        await agent.avatar.wait_for_join(timeout=30)
        await speak(agent, 1.0)
        assert started and arrivals.times
        if wait_playback_start:
            assert started[0] > arrivals.times[0]
        else:
            assert started[0] < arrivals.times[0]

"""Never worse than the same agent without an avatar: hard deaths, pause and resume.

Every test is a real room: livekit-server, the emulator (its worker processes
frozen or killed, or the whole emulator process killed, as a crashed or
unplugged avatar machine would be), the plugin's AvatarSession in an agent
participant, and viewers that see and hear what a person in the room would.

The bounds the plugin keeps (the room hears the agent within 3 s of a line's
start after a hard death, the avatar silent within 250 ms of a pause, ...) are
measured by `benchmarks/run` (the parity section); these tests pin the
behaviours in conditions that fail without them, with generous deadlines: a
loss is announced while LiveKit still holds the dead avatar's participant
(without the watchdog it is announced only once LiveKit drops it), a line said
after the death is heard whole from the agent's own track, and a paused line
is heard once, whole, from the avatar.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.io import AudioOutput, PlaybackFinishedEvent
from livekit.plugins import protoface

from protoface_emulator.hosting import ProcessPool
from protoface_emulator.local.launch import EmulatorProcess, start_emulator_process
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer
from protoface_emulator.testing.audio import tone

from .harness import (
    AgentSide,
    EmulatorAt,
    agent_in,
    conversation_in,
    eventually,
    room_name,
    viewer_in,
    watched_agent_in,
)

AVATAR = "protoface-avatar-agent"
HEARD = 0.05


class Losses:
    """`avatar_lost` events, each with whether LiveKit still held the dead avatar then."""

    def __init__(self, agent: AgentSide) -> None:
        self.events: list[protoface.AvatarLostEvent] = []
        self.ghost_present: list[bool] = []
        self.restored: list[protoface.AvatarRestoredEvent] = []
        self._room = agent.room
        agent.avatar.on("avatar_lost", self._on_lost)
        agent.avatar.on("avatar_restored", self.restored.append)

    def _on_lost(self, event: protoface.AvatarLostEvent) -> None:
        self.events.append(event)
        self.ghost_present.append(AVATAR in self._room.remote_participants)

    def __repr__(self) -> str:
        return f"lost={self.events} ghost_present={self.ghost_present} restored={self.restored}"


@asynccontextmanager
async def pooled_emulator() -> AsyncIterator[tuple[Emulator, ProcessPool]]:
    """An emulator whose avatars render in two worker processes the test can freeze or kill."""
    pool = ProcessPool(2, log_level="warning")
    async with Emulator(worker_factory=pool, join_timeout=90) as emu:
        yield emu, pool


class Scene(NamedTuple):
    """An agent whose avatar renders in a pool the test can freeze or kill, and who watches it."""

    pool: ProcessPool
    avatar_view: AvatarViewer  # follows whichever avatar speaks for the agent
    agent: AgentSide
    agent_view: AvatarViewer  # the agent's own track: where the room hears it without an avatar
    losses: Losses


@asynccontextmanager
async def pooled_conversation(
    livekit_server: LiveKitServer, prefix: str, **avatar_options: Any
) -> AsyncIterator[Scene]:
    """A `Scene` in a new room (`conversation_in`) whose avatar has joined.

    Frozen workers are thawed on the way out.
    """
    async with (
        pooled_emulator() as (emu, pool),
        conversation_in(livekit_server, emu, prefix, **avatar_options) as talk,
    ):
        agent, avatar_view, agent_view, _ = talk
        losses = Losses(agent)
        await agent.avatar.wait_for_join(timeout=90)
        assert agent.avatar.session_id is not None
        try:
            yield Scene(pool, avatar_view, agent, agent_view, losses)
        finally:
            pool.thaw()


async def _hear_a_line_after_the_death(
    agent: AgentSide, agent_view: AvatarViewer, losses: Losses, seconds: float = 3.0
) -> None:
    """The agent says a line after its avatar died: it plays out, heard whole in the room."""
    handle = agent.say(tone(seconds))
    await asyncio.wait_for(handle.wait_for_playout(), 30)
    await eventually(lambda: bool(losses.events), timeout=15, message=lambda: repr(losses))
    # Nobody heard it from the dead avatar: all of it comes from the agent's own track.
    await agent_view.wait_until(
        lambda: agent_view.audio_seconds(min_level=HEARD) >= seconds - 0.3,
        timeout=15,
        what=f"{seconds - 0.3:g} s of the line from the agent's own track",
    )


async def test_a_frozen_worker_is_lost_while_its_ghost_is_still_in_the_room(
    livekit_server: LiveKitServer,
) -> None:
    """The worker stops answering (its process frozen): the next line is heard, then replaced."""
    async with pooled_conversation(livekit_server, "frozen") as scene:
        pool, avatar_view, agent, agent_view, losses = scene
        await agent.speak(tone(1.0))
        await avatar_view.wait_for_audio(0.5, timeout=30)
        assert agent.avatar.session_id is not None
        assert pool.hang(agent.avatar.session_id) == 1

        await _hear_a_line_after_the_death(agent, agent_view, losses)
        assert losses.events[0].reason == "avatar_unresponsive"  # the API still says running
        assert losses.ghost_present[0], "lost only once LiveKit dropped the dead participant"

        # Recovery brings a replacement, as for any other loss.
        await eventually(lambda: bool(losses.restored), timeout=90, message=lambda: repr(losses))
        assert losses.restored[0].avatar_identity == f"{AVATAR}-2"
        before = avatar_view.audio_seconds(min_level=HEARD, identity=f"{AVATAR}-2")
        await agent.speak(tone(1.5))
        await avatar_view.wait_until(
            lambda: (
                avatar_view.audio_seconds(min_level=HEARD, identity=f"{AVATAR}-2") >= before + 1.0
            ),
            timeout=20,
            what="the replacement speaking",
        )


async def test_a_killed_worker_is_named_as_crashed_before_livekit_drops_it(
    livekit_server: LiveKitServer,
) -> None:
    async with pooled_conversation(livekit_server, "killed-worker", recovery=False) as scene:
        pool, _, agent, agent_view, losses = scene
        await agent.speak(tone(1.0))
        assert agent.avatar.session_id is not None
        assert pool.kill(agent.avatar.session_id) == 1

        await _hear_a_line_after_the_death(agent, agent_view, losses)
        assert losses.events[0].reason == "worker_crashed"
        assert losses.ghost_present[0], "lost only once LiveKit dropped the dead participant"


async def test_a_worker_frozen_mid_line_hands_the_rest_of_the_line_to_the_room(
    livekit_server: LiveKitServer,
) -> None:
    """Its media stop while it speaks: the rest of the line plays from the agent long before
    the line would have ended on the avatar (and before LiveKit drops the ghost)."""
    line = 12.0
    async with pooled_conversation(livekit_server, "frozen-mid-line", recovery=False) as scene:
        pool, avatar_view, agent, agent_view, losses = scene
        assert agent.avatar.session_id is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        handle = agent.say(tone(line))
        await avatar_view.wait_for_audio(1.5, timeout=30)
        pool.hang(agent.avatar.session_id)
        await agent_view.wait_until(
            lambda: agent_view.audio_seconds(min_level=HEARD) > 0.5,
            timeout=30,
            what="the rest of the line from the agent's own track",
        )
        own_from = min(s.received_at for s in agent_view.audio if s.level > HEARD)
        assert own_from - started < line, "the room waited for the line to end on the avatar"
        await asyncio.wait_for(handle.wait_for_playout(), 30)
        assert losses.events and losses.ghost_present[0], repr(losses)
        heard = avatar_view.audio_seconds(min_level=HEARD) + agent_view.audio_seconds(
            min_level=HEARD
        )
        assert line - 1.0 <= heard <= line + 1.5, heard  # the line, about once


async def test_a_frozen_worker_is_noticed_while_the_agent_is_silent(
    livekit_server: LiveKitServer,
) -> None:
    """Keep-alives are segments too: one the avatar never acknowledges is a loss."""
    # keep-alives every 2 s, so the loss comes well before LiveKit's timeout
    async with pooled_conversation(
        livekit_server, "frozen-silent", recovery=False, idle_timeout_seconds=6
    ) as scene:
        pool, _, agent, _, losses = scene
        await agent.speak(tone(0.5))
        assert agent.avatar.session_id is not None
        pool.hang(agent.avatar.session_id)
        await eventually(lambda: bool(losses.events), timeout=30, message=lambda: repr(losses))
        assert losses.events[0].reason == "avatar_unresponsive"
        assert losses.ghost_present[0]


async def test_the_whole_emulator_killed_mid_conversation(
    livekit_server: LiveKitServer, emulator_command: list[EmulatorProcess]
) -> None:
    """SIGKILL takes the API and the in-process avatar at once: no leave, no answer."""
    args = ["--log-level", "warning", "--join-timeout", "90", "--worker-processes", "0"]
    process = start_emulator_process(args=args)
    emulator_command.append(process)
    room = room_name("emulator-killed")
    at = EmulatorAt(process.url, process.api_key)
    async with (
        agent_in(livekit_server, at, room, avatar_options={"recovery": False}) as agent,  # type: ignore[arg-type]
        viewer_in(livekit_server, room, agent.identity) as agent_view,
    ):
        losses = Losses(agent)
        await agent.avatar.wait_for_join(timeout=90)
        await agent.speak(tone(1.0))
        process.process.kill()
        process.process.wait(timeout=10)
        await asyncio.sleep(1.0)  # the agent is quiet a moment, as in a conversation

        await _hear_a_line_after_the_death(agent, agent_view, losses)
        assert losses.events[0].reason == "protoface_unreachable"
        assert losses.ghost_present[0], "lost only once LiveKit dropped the dead participant"


# -- no false alarms -----------------------------------------------------------------


def _burn(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


async def test_a_stall_and_a_saturated_machine_are_not_a_death(
    livekit_server: LiveKitServer,
) -> None:
    """A worker stalled for a second, then every core busy: slow, alive, never declared lost."""
    async with pooled_conversation(livekit_server, "slow-alive") as scene:
        pool, avatar_view, agent, _, losses = scene
        await agent.speak(tone(0.5))
        assert agent.avatar.session_id is not None

        # A one-second stall of the avatar's worker just as a line starts.
        handle = agent.say(tone(1.5))
        pool.hang(agent.avatar.session_id)
        await asyncio.sleep(1.0)
        pool.thaw()
        await asyncio.wait_for(handle.wait_for_playout(), 30)

        # Every core busy while the agent says three more lines.
        context = multiprocessing.get_context("spawn")
        burners = [
            context.Process(target=_burn, args=(time.time() + 20,), daemon=True)
            for _ in range(multiprocessing.cpu_count() + 1)
        ]
        for burner in burners:
            burner.start()
        try:
            for _ in range(3):
                await agent.speak(tone(1.5), timeout=60)
        finally:
            for burner in burners:
                burner.terminate()
                burner.join(5)
        await avatar_view.wait_until(
            lambda: avatar_view.audio_seconds(min_level=HEARD) >= 0.5 + 1.5 * 4 - 1.0,
            timeout=20,
            what="every line from the avatar",
        )
        assert losses.events == [], repr(losses)
        assert agent.avatar.avatar_identity == AVATAR


# -- pause and resume ------------------------------------------------------------------


async def test_pause_silences_the_avatar_and_resume_plays_the_rest_once(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    """At the output: `pause()` stops the avatar; `resume()` goes on from where it stopped."""
    line = 6.0
    async with watched_agent_in(livekit_server, emulator, "pause") as (agent, viewer):
        await agent.avatar.wait_for_join(timeout=30)
        await viewer.wait_first_video(timeout=30)
        output = agent.session.output.audio
        assert output is not None and output.can_pause
        finished: list[PlaybackFinishedEvent] = []
        output.on("playback_finished", finished.append)
        loop = asyncio.get_running_loop()

        handle = agent.say(tone(line))
        await viewer.wait_for_audio(1.5, timeout=30)
        output.pause()
        paused_at = loop.time()

        def quiet_since(moment: float) -> bool:
            recent = [v for v in viewer.video if v.received_at > moment][-5:]
            loud = viewer.audio_seconds(min_level=HEARD, since=loop.time() - 0.3)
            return len(recent) == 5 and not any(v.mouth_open for v in recent) and loud == 0.0

        await viewer.wait_until(lambda: quiet_since(paused_at), timeout=10, what="pause silence")
        silent_from = loop.time()
        await viewer.wait_until(
            lambda: len(viewer.video_between(silent_from, loop.time())) >= 15,
            timeout=30,
            what="15 frames while paused",
        )
        assert viewer.audio_seconds(min_level=HEARD, since=silent_from) == 0.0
        assert finished == [] and not handle.done()  # paused, not over

        output.resume()
        await asyncio.wait_for(handle.wait_for_playout(), 30)
        assert not handle.interrupted
        assert len(finished) == 1 and abs(finished[0].playback_position - line) < 0.2
        await viewer.wait_until(
            lambda: viewer.audio_seconds(min_level=HEARD) >= line - 0.2,
            timeout=15,
            what="the whole line heard",
        )
        # Nothing repeated: the viewer hears the line once (and no more arrives).
        settled_at = loop.time()
        await viewer.wait_until(
            lambda: len(viewer.video_between(settled_at, loop.time())) >= 20,
            timeout=30,
            what="20 frames after the line",
        )
        # Repeated by at most 200 ms, plus the viewer's own count's error at the
        # two cuts (a 10 ms frame either way at each edge of the pause).
        assert viewer.audio_seconds(min_level=HEARD) <= line + 0.2 + 0.1


async def _next_line_heard(
    agent: AgentSide, viewer: AvatarViewer, line: float, more: float, what: str
) -> None:
    """The agent says a `line`-second tone: the viewer hears `more` seconds of speech more."""
    before = viewer.audio_seconds(min_level=HEARD)
    await agent.speak(tone(line), timeout=30)
    await viewer.wait_until(
        lambda: viewer.audio_seconds(min_level=HEARD) >= before + more, timeout=15, what=what
    )


async def test_a_storm_of_interruptions_settles_every_line_and_the_next_is_heard_whole(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    """Twelve lines interrupted one after another: none hangs, and the avatar still speaks."""
    async with watched_agent_in(livekit_server, emulator, "storm") as (agent, viewer):
        await agent.avatar.wait_for_join(timeout=30)
        await viewer.wait_first_video(timeout=30)
        handles = []
        for _ in range(12):
            handle = agent.say(tone(3.0))
            await asyncio.sleep(0.3)
            handle.interrupt()
            handles.append(handle)
        await eventually(
            lambda: all(h.done() for h in handles),
            timeout=30,
            message=lambda: f"{sum(not h.done() for h in handles)} of 12 lines unsettled",
        )
        assert all(h.interrupted for h in handles)
        await _next_line_heard(agent, viewer, 2.0, 1.8, "the next line, whole, from the avatar")


async def test_an_interruption_while_paused_ends_the_line_where_it_was_heard(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    async with watched_agent_in(livekit_server, emulator, "pause-interrupt") as (agent, viewer):
        await agent.avatar.wait_for_join(timeout=30)
        output = agent.session.output.audio
        assert output is not None
        handle = agent.say(tone(6.0))
        await viewer.wait_for_audio(1.0, timeout=30)
        output.pause()
        await asyncio.sleep(0.5)
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 10)
        assert handle.interrupted
        heard = viewer.audio_seconds(min_level=HEARD)
        assert heard < 3.0, heard
        # The next line is not held by the pause that came before it.
        await _next_line_heard(agent, viewer, 1.0, 0.8, "the next line")


async def _lose_the_avatar_while_paused(
    scene: Scene, line: float
) -> tuple[AudioOutput, SpeechHandle]:
    """The agent says a `line`-second tone; a second of it heard, its output pauses and the
    avatar's worker hangs until the avatar is lost. The output and the line's handle."""
    pool, avatar_view, agent, _, losses = scene
    output = agent.session.output.audio
    assert output is not None and agent.avatar.session_id is not None
    handle = agent.say(tone(line))
    await avatar_view.wait_for_audio(1.0, timeout=30)
    output.pause()
    pool.hang(agent.avatar.session_id)
    await eventually(lambda: bool(losses.events), timeout=30, message=lambda: repr(losses))
    return output, handle


async def test_a_pause_on_a_dead_avatar_resumes_in_the_room(
    livekit_server: LiveKitServer,
) -> None:
    """Lost while paused: the rest of the line waits for resume, then plays from the agent."""
    async with pooled_conversation(livekit_server, "pause-dead", recovery=False) as scene:
        _, avatar_view, _, agent_view, _ = scene
        output, handle = await _lose_the_avatar_while_paused(scene, 5.0)
        assert agent_view.audio_seconds(min_level=HEARD) == 0.0  # still paused
        output.resume()
        await asyncio.wait_for(handle.wait_for_playout(), 30)
        before = avatar_view.audio_seconds(min_level=HEARD)
        await agent_view.wait_until(
            lambda: agent_view.audio_seconds(min_level=HEARD) + before >= 5.0 - 0.5,
            timeout=15,
            what="the rest of the line from the agent's own track",
        )
        # Where the dead avatar stopped is estimated from when it was paused.
        assert agent_view.audio_seconds(min_level=HEARD) + before <= 5.0 + 0.5


async def test_replaced_while_paused_the_line_ends_in_the_room_and_the_next_is_the_replacements(
    livekit_server: LiveKitServer,
) -> None:
    """Recovery on: the paused line ends in the room, and the replacement takes the next one."""
    async with pooled_conversation(livekit_server, "pause-replaced") as scene:
        _, avatar_view, agent, agent_view, losses = scene
        output, handle = await _lose_the_avatar_while_paused(scene, 4.0)
        assert not handle.done()  # still paused
        output.resume()  # as livekit-agents does when no words followed
        await asyncio.wait_for(handle.wait_for_playout(), 30)
        await eventually(lambda: bool(losses.restored), timeout=90, message=lambda: repr(losses))
        first = avatar_view.audio_seconds(min_level=HEARD)
        await agent_view.wait_until(
            lambda: agent_view.audio_seconds(min_level=HEARD) + first >= 4.0 - 0.5,
            timeout=15,
            what="the rest of the paused line, from the agent's own track",
        )
        successor = f"{AVATAR}-2"
        await agent.speak(tone(1.5), timeout=30)
        await avatar_view.wait_until(
            lambda: avatar_view.audio_seconds(min_level=HEARD, identity=successor) >= 1.2,
            timeout=20,
            what="the next line from the replacement",
        )

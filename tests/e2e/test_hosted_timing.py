"""A hosted service's timing: a cold start, a long answer, a LiveKit stall.

The emulator is told to be as slow as a hosted Protoface (`Timing`); the
measure is the same agent without an avatar: what the room hears, and when,
in order. Numbers (time to first word, time to face) are in
`benchmarks/hosted_timing.py`; these tests pin what must hold whatever they are.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.plugins import protoface

from protoface_emulator.avatar.face import audio_level
from protoface_emulator.hosting.timing import Timing
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer

from .harness import audio_seconds, conversation_in, load_speech, play, watched_agent_in

HEARD = 0.05  # level above which a frame counts as speech
SHORT_IDLE = {"idle_timeout_seconds": 4}  # a long answer is 2.5 times longer


def first_heard(viewer: AvatarViewer) -> float | None:
    """When (`time.monotonic()`) the viewer first received speech, if it did."""
    return next((s.received_at for s in viewer.audio if s.level > HEARD), None)


def heard(viewer: AvatarViewer, since: float | None = None) -> float:
    """Seconds of speech the viewer received (since `since`)."""
    return viewer.audio_seconds(min_level=HEARD, since=since)


def spoken(frames: list[rtc.AudioFrame]) -> float:
    """Seconds of `frames` a viewer would count as speech (the same level rule)."""
    return sum(f.duration for f in frames if audio_level(np.frombuffer(f.data, np.int16)) > HEARD)


def nearly_all(frames: list[rtc.AudioFrame]) -> float:
    """Seconds of speech that count as `frames` heard whole: 90 % of `spoken(frames)`.

    Opus coding moves frames near the level threshold to either side of it, so a
    line heard whole counts a few tens of ms more or less than it was sent.
    """
    return spoken(frames) * 0.9


def long_line(seconds: float) -> list[rtc.AudioFrame]:
    """The bundled line repeated until it lasts at least `seconds`."""
    line = load_speech()
    frames = list(line)
    while audio_seconds(frames) < seconds:
        frames += line
    return frames


@pytest.mark.protoface_timing(Timing(cold_start=5.0))
async def test_the_first_words_do_not_wait_for_a_cold_starting_avatar(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    async with conversation_in(livekit_server, emulator, "cold") as scene:
        agent, faces, own_track, _ = scene
        greeting = load_speech(seconds=3.0)
        handle = agent.session.say("greeting", audio=play(greeting), add_to_chat_ctx=False)
        await asyncio.wait_for(handle.wait_for_playout(), timeout=30)
        assert not handle.interrupted, "the greeting was cut short"
        spoken_at = first_heard(own_track)
        assert spoken_at is not None, f"the greeting was not heard: {own_track.describe()}"

        face_at = await faces.wait_first_video(timeout=30)
        # Heard from the agent's own track before any face existed: it did not wait for one.
        assert spoken_at < face_at, (spoken_at, face_at)
        assert heard(own_track) > 2.0, own_track.describe()
        # Never twice: the avatar, once there, does not say the greeting again.
        assert heard(faces) < 0.2, faces.describe()

        # Once the face shows, it speaks the next line; the agent's own track stays quiet.
        await agent.avatar.wait_for_join(timeout=30)
        before = time.monotonic()
        line = load_speech(seconds=2.0)
        handle = agent.session.say("next", audio=play(line))
        await asyncio.wait_for(handle.wait_for_playout(), timeout=30)
        await faces.wait_for_audio(nearly_all(line), timeout=20, since=before)
        assert heard(own_track, since=before) < 0.2, own_track.describe()
        assert len(agent.avatar.session_ids) == 1  # one billed session throughout


@pytest.mark.protoface_timing(Timing(cold_start=2.0))
async def test_always_waiting_keeps_the_published_behaviour(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    """`wait_for_avatar=None` is the published behaviour: the greeting waits for the face."""
    async with conversation_in(
        livekit_server, emulator, "always-wait", wait_for_avatar=None
    ) as scene:
        agent, faces, own_track, _ = scene
        line = load_speech(seconds=2.0)
        handle = agent.session.say("hello", audio=play(line))
        await asyncio.wait_for(handle.wait_for_playout(), timeout=30)
        await faces.wait_for_audio(nearly_all(line), timeout=20)
        assert heard(own_track) == 0.0, own_track.describe()


@pytest.mark.protoface_timing(Timing(cold_start=3.0))
async def test_a_line_said_before_the_face_shows_is_heard_once_when_waiting_is_off(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    async with conversation_in(livekit_server, emulator, "no-wait", wait_for_avatar=0) as scene:
        agent, faces, own_track, _ = scene
        line = load_speech(seconds=4.0)
        handle = agent.session.say("hello", audio=play(line), add_to_chat_ctx=False)
        await asyncio.wait_for(handle.wait_for_playout(), timeout=30)
        await own_track.wait_for_audio(nearly_all(line), timeout=20)
        assert heard(faces) < 0.2, faces.describe()  # not said again by the face


async def test_an_answer_longer_than_the_idle_timeout_is_heard_whole_from_one_avatar(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    async with conversation_in(livekit_server, emulator, "long-answer", **SHORT_IDLE) as scene:
        agent, faces, own_track, lost = scene
        await agent.avatar.wait_for_join(timeout=30)
        await faces.wait_first_video(timeout=30)
        identity = agent.avatar.avatar_identity
        answer = long_line(10.0)  # 2.5x the idle timeout, handed over at once
        handle = agent.session.say("a long answer", audio=play(answer), add_to_chat_ctx=False)
        await asyncio.wait_for(handle.wait_for_playout(), timeout=60)
        assert not handle.interrupted
        assert lost == [], [(e.reason, e.session_id) for e in lost]
        assert agent.avatar.session_ids == [agent.avatar.session_id]
        await faces.wait_for_audio(nearly_all(answer), timeout=20, identity=identity)
        assert heard(own_track) == 0.0, own_track.describe()

        # Barge-in still stops it: the rest of a second long answer is never heard.
        before = time.monotonic()
        handle = agent.session.say("another", audio=play(answer), add_to_chat_ctx=False)
        await faces.wait_for_audio(1.0, timeout=20, since=before)
        handle.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), timeout=15)
        assert handle.interrupted
        stopped = time.monotonic()

        def quiet() -> bool:  # what was in flight has arrived; nothing follows
            now = time.monotonic()
            return heard(faces, since=now - 0.5) == 0.0 and bool(
                faces.video_between(now - 0.1, now)
            )

        await faces.wait_until(quiet, timeout=10, what="silence after the barge-in")
        quiet_from = time.monotonic()
        await faces.wait_until(
            lambda: len(faces.video_between(quiet_from, time.monotonic())) >= 20,
            timeout=30,
            what="20 frames after the avatar fell silent",
        )
        assert heard(faces, since=quiet_from) < 0.1, faces.describe()
        assert heard(faces, since=stopped) < audio_seconds(answer) / 2
        assert lost == []


async def test_a_switch_waiting_for_a_long_answer_does_not_idle_out(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    """The new avatar joins while a long answer plays and waits for its end, kept alive."""
    lost: list[protoface.AvatarLostEvent] = []
    async with watched_agent_in(
        livekit_server, emulator, "switch-long", idle_timeout_seconds=3
    ) as (agent, faces):
        agent.avatar.on("avatar_lost", lost.append)
        await agent.avatar.wait_for_join(timeout=30)
        first = agent.avatar.session_id
        answer = long_line(12.0)
        handle = agent.session.say("a long answer", audio=play(answer), add_to_chat_ctx=False)
        await faces.wait_for_audio(0.5, timeout=20)
        switched = await asyncio.wait_for(agent.avatar.switch(avatar_id="av_stock_002"), 60)
        await asyncio.wait_for(handle.wait_for_playout(), timeout=60)
        assert not handle.interrupted
        assert switched.previous_session_id == first
        assert lost == [], [(e.reason, e.session_id) for e in lost]
        before = time.monotonic()
        line = load_speech(seconds=2.0)
        handle = agent.session.say("on the new face", audio=play(line))
        await asyncio.wait_for(handle.wait_for_playout(), timeout=30)
        await faces.wait_for_audio(
            nearly_all(line), timeout=20, since=before, identity=switched.avatar_identity
        )


async def test_a_livekit_stall_is_not_taken_for_the_avatars_death(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    async with conversation_in(livekit_server, emulator, "stall") as scene:
        agent, faces, own_track, lost = scene
        await agent.avatar.wait_for_join(timeout=30)
        await faces.wait_first_video(timeout=30)
        identity = agent.avatar.avatar_identity
        line = long_line(10.0)
        handle = agent.session.say("a long line", audio=play(line), add_to_chat_ctx=False)
        await faces.wait_for_audio(2.5, timeout=20)
        await livekit_server.stall(3.0)  # everyone, for 3 s, 3 s into the line
        await asyncio.wait_for(handle.wait_for_playout(), timeout=60)
        assert lost == [], [(e.reason, e.session_id) for e in lost]

        # The conversation goes on with the same avatar, as it would without one.
        before = time.monotonic()
        line = load_speech(seconds=2.0)
        handle = agent.session.say("after", audio=play(line))
        await asyncio.wait_for(handle.wait_for_playout(), timeout=30)
        await faces.wait_for_audio(nearly_all(line), timeout=30, since=before, identity=identity)
        assert heard(own_track, since=before) < 0.2, own_track.describe()
        assert agent.avatar.session_ids == [agent.avatar.session_id]
        assert lost == []

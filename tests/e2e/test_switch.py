"""`AvatarSession.switch()`: a new face mid-conversation, no video gap, no line lost or doubled.

A real room (livekit-server), the emulator's real workers, which draw each
avatar's own face: a `FaceWatch` in the room tells from the pixels which face
is on screen, and viewers of each avatar participant count the speech heard
from it. The video gap around the switch is measured and printed (timings
are benchmarks' business; the test pins that the new face was on screen before
the old one left).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from livekit.plugins import protoface

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer
from protoface_emulator.testing.faces import FaceWatch

from .harness import AgentSide, agent_in, eventually, load_speech, room_name, token, viewer_in

AVATAR = "protoface-avatar-agent"
SUCCESSOR = f"{AVATAR}-2"
HEARD = 0.05


@asynccontextmanager
async def _watch(server: LiveKitServer, room: str) -> AsyncIterator[FaceWatch]:
    """A `FaceWatch` in `room` for the block."""
    watch = FaceWatch()
    await watch.connect(server.url, token(server, "face-watch", room))
    try:
        yield watch
    finally:
        await watch.aclose()


async def _speak(agent: AgentSide, seconds: float) -> None:
    await agent.speak(load_speech(seconds=seconds), timeout=30)


async def test_switch_changes_the_face_without_a_gap_and_keeps_every_line_once(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("switch")
    switched: list[protoface.AvatarSwitchedEvent] = []
    async with (
        _watch(livekit_server, room) as watch,
        viewer_in(livekit_server, room, AVATAR) as old_view,
        viewer_in(livekit_server, room, SUCCESSOR) as new_view,
        agent_in(livekit_server, emulator, room, avatar_options={"quality": "lite"}) as agent,
    ):
        avatar = agent.avatar
        avatar.on("avatar_switched", switched.append)
        await avatar.wait_for_join(timeout=60)
        await watch.wait_for_face("av_stock_001", timeout=60)
        first_session = avatar.session_id
        await _speak(agent, 1.0)

        # A long line is under way when the switch is asked: it finishes on Ada.
        line = agent.say(load_speech(seconds=3.0))
        await old_view.wait_for_audio(0.3, timeout=30)
        asked = time.monotonic()
        event = await asyncio.wait_for(avatar.switch(avatar_id="av_stock_002"), timeout=90)
        done = time.monotonic()
        await asyncio.wait_for(line.wait_for_playout(), timeout=30)
        assert line.done() and not line.interrupted
        heard_new_before = new_view.audio_seconds(min_level=HEARD)

        after = time.monotonic()
        await _speak(agent, 1.5)
        await new_view.wait_for_audio(0.5, timeout=30, since=after)
        await watch.wait_for_face("av_stock_002", timeout=30)
        await eventually(
            lambda: watch.faces(since=time.monotonic() - 0.5)[-3:] == ["av_stock_002"] * 3,
            timeout=30,
            message=watch.describe,
        )

        # Events and properties tell the truth.
        assert switched == [event]
        assert event.previous_session_id == first_session
        assert event.avatar_id == "av_stock_002" and event.previous_avatar_id == "av_stock_001"
        assert event.session_id == avatar.session_id != first_session
        assert event.avatar_identity == SUCCESSOR == avatar.avatar_identity
        assert avatar.avatar_id == "av_stock_002"
        old_status = emulator.store.get_session(first_session or "").status
        await eventually(
            lambda: emulator.store.get_session(first_session or "").status == "ended",
            timeout=30,
            message=lambda: f"the old session is {old_status}",
        )

        # Every line heard once: the long one entirely from Ada, the next only from Bram.
        assert heard_new_before < 0.1, "no part of the line under way went to the new avatar"
        # The old avatar stays a moment after the switch (so viewers see no
        # gap) and the long line's last frames reach the viewer just after
        # its playout ended; past that, nothing of the next line from it.
        old_after = old_view.audio_seconds(min_level=HEARD, since=after + 0.5)
        assert old_after < 0.1, "the next line was heard from the old avatar too"
        assert new_view.audio_seconds(min_level=HEARD, since=after) > 0.5

        # The faces: Ada until the switch, Bram after; the new face was on
        # screen before the old one left (no gap by construction).
        assert set(watch.faces(until=asked)) - {None} == {"av_stock_001"}
        bram_first = watch.first_seen("av_stock_002")
        ada_last = watch.last_seen("av_stock_001")
        assert bram_first is not None and ada_last is not None
        assert bram_first < ada_last, "the new face came up before the old one left"
        # From the switch() call until now: the old avatar has left by now.
        gap = watch.largest_gap(since=asked)
        print(
            f"\nswitch: {done - asked:.2f} s from switch() to the new avatar speaking; "
            f"largest video gap at the viewer {gap * 1000:.0f} ms; overlap of the two "
            f"faces {(ada_last - bram_first) * 1000:.0f} ms"
        )
        session_ids = avatar.session_ids
        await avatar.aclose()
        assert avatar.usage.switches == 1 and avatar.usage.sessions_started == 2
        assert len(session_ids) == 2


async def test_a_failed_switch_keeps_the_current_avatar_and_a_second_one_is_refused(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("switch-fail")
    async with (
        viewer_in(livekit_server, room, AVATAR) as old_view,
        agent_in(livekit_server, emulator, room, avatar_options={"quality": "lite"}) as agent,
    ):
        avatar = agent.avatar
        switched: list[protoface.AvatarSwitchedEvent] = []
        avatar.on("avatar_switched", switched.append)
        await avatar.wait_for_join(timeout=60)
        before = (avatar.session_id, avatar.avatar_identity, avatar.avatar_id)

        with pytest.raises(protoface.ProtofaceException, match="av_missing") as failed:
            await avatar.switch(avatar_id="av_missing")
        assert "goes on speaking" in str(failed.value)
        assert isinstance(failed.value.__cause__, Exception)
        assert (avatar.session_id, avatar.avatar_identity, avatar.avatar_id) == before
        assert not switched

        with pytest.raises(protoface.ProtofaceValueError, match="quality"):
            await avatar.switch(quality="ultra")

        # One at a time: a second switch while one runs is refused, clearly.
        first = asyncio.ensure_future(avatar.switch(avatar_id="av_stock_003"))
        await asyncio.sleep(0)  # the first is asked
        with pytest.raises(protoface.ProtofaceException, match="under way"):
            await avatar.switch(avatar_id="av_stock_002")
        event = await asyncio.wait_for(first, timeout=90)
        assert event.avatar_id == "av_stock_003" == avatar.avatar_id

        # The agent still speaks through an avatar after all that.
        since = time.monotonic()
        await _speak(agent, 1.0)
        assert old_view.audio_seconds(min_level=HEARD, since=since) == 0
        await avatar.aclose()
        usage = avatar.usage
        # The refused avatar never got a session; the failed one never billed.
        assert usage.switches == 1 and usage.sessions_started == 2


async def test_a_switch_asked_during_a_loss_waits_for_the_replacement_then_runs(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    from livekit import api

    room = room_name("switch-loss")
    async with (
        _watch(livekit_server, room) as watch,
        agent_in(livekit_server, emulator, room, avatar_options={"quality": "lite"}) as agent,
    ):
        avatar = agent.avatar
        order: list[str] = []
        for name in ("avatar_lost", "avatar_restored", "avatar_switched"):
            avatar.on(name, lambda _ev, name=name: order.append(name))
        await avatar.wait_for_join(timeout=60)
        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=AVATAR)
            )
        await eventually(lambda: "avatar_lost" in order, timeout=30, message=lambda: f"{order}")
        event = await asyncio.wait_for(avatar.switch(avatar_id="av_stock_003"), timeout=120)
        # Either the replacement came first and the switch after it, or the
        # switch's avatar was the replacement; never a switch lost in between.
        assert order[0] == "avatar_lost" and order[-1] == "avatar_switched", order
        assert avatar.avatar_id == "av_stock_003" == event.avatar_id
        await watch.wait_for_face("av_stock_003", timeout=60)
        await _speak(agent, 1.0)


async def test_a_switch_asked_during_a_handover_runs_after_it(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("switch-handover")
    # cap 12 s: the successor is started 3 s before it, 9 s after the first session.
    options = {"quality": "lite", "max_duration_seconds": 12}
    async with agent_in(livekit_server, emulator, room, avatar_options=options) as agent:
        avatar = agent.avatar
        order: list[str] = []
        for name in ("avatar_handover", "avatar_switched", "avatar_lost"):
            avatar.on(name, lambda _ev, name=name: order.append(name))
        await avatar.wait_for_join(timeout=60)
        # The handover is under way once its successor's session exists.
        await eventually(
            lambda: len(avatar.session_ids) == 2, timeout=60, message=lambda: f"{order}"
        )
        assert "avatar_handover" not in order, "asked too late to overlap the handover"
        event = await asyncio.wait_for(avatar.switch(avatar_id="av_stock_003"), timeout=120)
        assert order == ["avatar_handover", "avatar_switched"], order
        assert len(avatar.session_ids) == 3
        assert event.previous_session_id == avatar.session_ids[1]
        assert avatar.avatar_id == "av_stock_003" and avatar.session_id == event.session_id
        await _speak(agent, 1.0)

"""The avatar worker in a real room, against a real `livekit-server --dev`.

An "agent" participant streams speech to the worker with livekit-agents'
`DataStreamAudioOutput`, exactly as an `AgentSession` does through the plugin; a
viewer (`protoface_emulator.testing.AvatarViewer`) watches and listens to what the
worker publishes. The server comes from the kit's `livekit_server` fixture:
skipped when the binary is missing, failed under CI=true. Assertions about what
the viewer receives wait for it with generous deadlines, never after a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from livekit import api, rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import DataStreamAudioOutput

from protoface_emulator.avatar.notices import RPC_PLAYBACK_FINISHED, RPC_PLAYBACK_STARTED
from protoface_emulator.avatar.options import WorkerOptions
from protoface_emulator.avatar.worker import make_worker_factory
from protoface_emulator.lifecycle import (
    FAILURE_LIVEKIT_AUTH,
    FAILURE_LIVEKIT_UNREACHABLE,
    FAILURE_WORKER_LOST,
    WorkerHandle,
    WorkerSpec,
)
from protoface_emulator.local.livekit_dev import ParticipantKind
from protoface_emulator.testing import AvatarViewer, LiveKitServer, eventually

pytestmark = pytest.mark.e2e

AGENT_RATE = 16000
FACTORY = make_worker_factory(WorkerOptions())


def token(
    server: LiveKitServer,
    identity: str,
    room: str,
    *,
    kind: ParticipantKind = "standard",
    attributes: dict[str, str] | None = None,
    secret: str | None = None,
) -> str:
    """A LiveKit token for a participant of `room` (signed with `secret` when given)."""
    return server.token(identity, room, kind=kind, attributes=attributes, api_secret=secret)


def speech(seconds: float) -> npt.NDArray[np.int16]:
    """Voiced, syllable-like audio that never drops to silence."""
    t = np.arange(int(AGENT_RATE * seconds)) / AGENT_RATE
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3 * t))
    voice = np.sin(2 * np.pi * 180 * t) + 0.3 * np.sin(2 * np.pi * 360 * t)
    return (0.2 * envelope * voice * 32767).astype(np.int16)


class RecordingEvents:
    """A `WorkerEvents` sink that keeps what the worker reported."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.frames = 0
        self.first_frame = asyncio.Event()
        self.failed = asyncio.Event()

    def on_connecting(self) -> None:
        self.calls.append(("connecting",))

    def on_first_frame(self) -> None:
        self.calls.append(("first_frame",))
        self.first_frame.set()

    def on_audio(self) -> None:
        self.calls.append(("audio",))

    def on_frames(self, count: int) -> None:
        self.frames += count

    def on_failed(self, code: str, message: str) -> None:
        self.calls.append(("failed", code, message))
        self.failed.set()

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def failure(self) -> tuple[str, str]:
        failures = [c for c in self.calls if c[0] == "failed"]
        assert len(failures) == 1, self.calls
        return failures[0][1], failures[0][2]


@dataclass
class Scene:
    """A room with an agent, a viewer and an avatar worker."""

    server: LiveKitServer
    room: str
    agent: rtc.Room
    viewer: AvatarViewer
    worker: WorkerHandle
    events: RecordingEvents
    output: DataStreamAudioOutput
    worker_identity: str

    async def say(self, samples: npt.NDArray[np.int16]) -> None:
        """Stream `samples` to the avatar as one segment, faster than real time."""
        step = AGENT_RATE // 10
        for i in range(0, len(samples), step):
            chunk = samples[i : i + step]
            await self.output.capture_frame(
                rtc.AudioFrame(chunk.tobytes(), AGENT_RATE, 1, len(chunk))
            )
        self.output.flush()

    async def first_utterance_heard_back(self) -> None:
        """Wait for the avatar's video, then play one second of speech and wait for
        the agent to hear back it finished: the agent's output is set up."""
        await asyncio.wait_for(self.events.first_frame.wait(), timeout=15)
        await self.viewer.wait_first_video(timeout=10)
        await self.say(speech(1.0))
        first = await asyncio.wait_for(self.output.wait_for_playout(), timeout=30)
        assert not first.interrupted

    async def participants(self) -> list[str]:
        """Identities in the room, as the server sees them."""
        async with self.server.api() as lk:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=self.room))
        return [p.identity for p in listed.participants]


@asynccontextmanager
async def scene(server: LiveKitServer) -> AsyncIterator[Scene]:
    room = f"worker-{uuid.uuid4().hex[:8]}"
    agent_identity = f"agent-{uuid.uuid4().hex[:6]}"
    worker_identity = f"avatar-{uuid.uuid4().hex[:6]}"
    agent = rtc.Room()
    await agent.connect(server.url, token(server, agent_identity, room, kind="agent"))
    viewer = AvatarViewer(avatar_identity=worker_identity)
    await viewer.connect(server.url, token(server, "viewer", room))
    events = RecordingEvents()
    spec = WorkerSpec(
        session_id=f"sess_{uuid.uuid4().hex[:8]}",
        url=server.url,
        room_name=room,
        identity=worker_identity,
        token=token(
            server,
            worker_identity,
            room,
            attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity},
        ),
    )
    worker = FACTORY(spec, events)
    output = DataStreamAudioOutput(
        agent,
        destination_identity=worker_identity,
        sample_rate=AGENT_RATE,
        wait_remote_track=rtc.TrackKind.KIND_VIDEO,
    )
    try:
        yield Scene(server, room, agent, viewer, worker, events, output, worker_identity)
    finally:
        await worker.aclose()
        await viewer.aclose()
        await agent.disconnect()


async def test_viewer_sees_the_mouth_move_only_while_the_agent_speaks(
    livekit_server: LiveKitServer,
) -> None:
    async with scene(livekit_server) as s:
        await asyncio.wait_for(s.events.first_frame.wait(), timeout=15)
        await s.viewer.wait_first_video(timeout=10)
        # The worker publishes for the agent.
        avatar = s.agent.remote_participants[s.worker_identity]
        assert (
            avatar.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) == s.agent.local_participant.identity
        )
        kinds = {p.kind for p in avatar.track_publications.values()}
        assert kinds == {rtc.TrackKind.KIND_VIDEO, rtc.TrackKind.KIND_AUDIO}

        loop = asyncio.get_running_loop()
        silent_from = loop.time()
        await s.viewer.wait_until(
            lambda: len(s.viewer.video_between(silent_from, loop.time())) >= 20,
            timeout=30,
            what="20 frames of the idle face",
        )
        silent_to = loop.time()

        spoken = speech(2.0)
        await s.say(spoken)
        speak_from = loop.time()
        finished = await asyncio.wait_for(s.output.wait_for_playout(), timeout=30)
        speak_to = loop.time()
        # The viewer hears the speech from the worker's own audio track.
        await s.viewer.wait_for_audio(1.5, timeout=30)

        # The agent learns the whole segment played, not interrupted.
        assert not finished.interrupted
        assert finished.playback_position == pytest.approx(2.0, abs=0.15)

        silent = s.viewer.video_between(silent_from, silent_to)
        speaking = s.viewer.video_between(speak_from, speak_to)
        assert len(silent) > 10 and len(speaking) > 20, (len(silent), len(speaking))
        silent_motion = float(np.mean([v.mouth_motion for v in silent]))
        speaking_motion = float(np.mean([v.mouth_motion for v in speaking]))
        assert silent_motion < 1.0, silent_motion
        assert speaking_motion > 5 * max(silent_motion, 0.2), (speaking_motion, silent_motion)
        assert not any(v.mouth_open for v in silent)
        assert sum(v.mouth_open for v in speaking) > len(speaking) // 2

    names = s.events.names()
    assert names[:2] == ["connecting", "first_frame"]
    assert "audio" in names and "failed" not in names
    assert s.events.frames > 20 * 3  # frames were counted, published at ~20 fps


async def test_clear_buffer_silences_the_avatar_and_reports_the_interruption(
    livekit_server: LiveKitServer,
) -> None:
    async with scene(livekit_server) as s:
        await asyncio.wait_for(s.events.first_frame.wait(), timeout=15)
        await s.viewer.wait_first_video(timeout=10)
        loop = asyncio.get_running_loop()

        spoken = 12.0
        await s.say(speech(spoken))
        await s.viewer.wait_for_mouth_open(timeout=30)
        cleared_at = loop.time()
        s.output.clear_buffer()
        finished = await asyncio.wait_for(s.output.wait_for_playout(), timeout=15)
        assert finished.interrupted
        assert 0.0 < finished.playback_position < spoken / 2, finished.playback_position

        # Uncleared, the avatar would go on speaking for most of the 12 s: it falls
        # silent and shuts its mouth well before that, then stays so.
        def loud_since(moment: float) -> float:
            return sum(
                a.duration for a in s.viewer.audio if a.received_at >= moment and a.level > 0.05
            )

        def quiet() -> bool:
            recent = s.viewer.video[-10:]
            return (
                len(recent) == 10
                and recent[0].received_at > cleared_at
                and not any(v.mouth_open for v in recent)
                and loud_since(loop.time() - 0.5) == 0.0
            )

        await s.viewer.wait_until(quiet, timeout=spoken / 2, what="silence after the clear")
        quiet_from = loop.time()
        await s.viewer.wait_until(
            lambda: len(s.viewer.video_between(quiet_from, loop.time())) >= 20,
            timeout=30,
            what="20 frames after the avatar fell silent",
        )
        after = s.viewer.video_between(quiet_from, loop.time())
        assert not any(v.mouth_open for v in after), "the mouth opened again after the clear"
        assert loud_since(quiet_from) < 0.1, "the avatar spoke again after the clear"

        # The next utterance plays out in full.
        await s.say(speech(1.0))
        again = await asyncio.wait_for(s.output.wait_for_playout(), timeout=30)
        assert not again.interrupted
        assert again.playback_position == pytest.approx(1.0, abs=0.15)
    assert "failed" not in s.events.names()


async def test_a_playback_notice_the_agent_never_takes_does_not_end_the_avatar(
    livekit_server: LiveKitServer, caplog: pytest.LogCaptureFixture
) -> None:
    """livekit-agents' receiver closes its audio after three failed notices, and the
    avatar left the call with it (seen on a saturated machine as `worker_crashed`:
    "RpcError: Connection timeout"). Here the agent stops handling
    `lk.playback_finished`: the notice is given up, and the avatar keeps speaking."""
    caplog.set_level(logging.WARNING, logger="protoface_emulator.notices")
    async with scene(livekit_server) as s:
        await s.first_utterance_heard_back()

        # lk.playback_started is optional: an agent without it gets no warning.
        s.agent.local_participant.unregister_rpc_method(RPC_PLAYBACK_STARTED)
        s.agent.local_participant.unregister_rpc_method(RPC_PLAYBACK_FINISHED)
        await s.say(speech(1.0))

        def gave_up() -> bool:
            return any(RPC_PLAYBACK_FINISHED in r.getMessage() for r in caplog.records)

        await eventually(gave_up, timeout=30, message="the avatar never gave the notice up")
        assert "failed" not in s.events.names(), s.events.calls

        # Still in the call, still lip-syncing.
        loop = asyncio.get_running_loop()
        again_from = loop.time()
        await s.say(speech(1.5))
        await s.viewer.wait_for_mouth_open(timeout=30, since=again_from)
        await s.viewer.wait_until(
            lambda: (
                sum(
                    a.duration
                    for a in s.viewer.audio
                    if a.received_at >= again_from and a.level > 0.05
                )
                >= 1.0
            ),
            timeout=30,
            what="a second of the third utterance",
        )
        assert s.worker_identity in await s.participants()
    assert "failed" not in s.events.names(), s.events.calls
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any(RPC_PLAYBACK_STARTED in m for m in warned), warned
    assert sum(RPC_PLAYBACK_FINISHED in m for m in warned) == 1, warned  # once, not per utterance


async def test_a_playback_notice_is_retried_until_the_agent_takes_it(
    livekit_server: LiveKitServer,
) -> None:
    """An agent that fails `lk.playback_finished` four times, then answers: the fifth
    attempt delivers it, with the segment's position (livekit-agents' receiver
    gives up after three and takes the avatar out of the call)."""
    async with scene(livekit_server) as s:
        await s.first_utterance_heard_back()

        payloads: list[str] = []
        delivered = asyncio.Event()

        def flaky(data: rtc.RpcInvocationData) -> str:
            payloads.append(data.payload)
            if len(payloads) <= 4:
                raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR, "busy")
            delivered.set()
            return "ok"

        s.agent.local_participant.unregister_rpc_method(RPC_PLAYBACK_FINISHED)
        s.agent.local_participant.register_rpc_method(RPC_PLAYBACK_FINISHED, flaky)
        await s.say(speech(1.0))
        await asyncio.wait_for(delivered.wait(), timeout=30)
        assert len(payloads) == 5 and len(set(payloads)) == 1, payloads
        notice = json.loads(payloads[-1])
        assert notice["interrupted"] is False
        assert notice["playback_position"] == pytest.approx(1.0, abs=0.15)
    assert "failed" not in s.events.names(), s.events.calls


async def test_aclose_takes_the_worker_out_of_the_room_and_is_idempotent(
    livekit_server: LiveKitServer,
) -> None:
    async with scene(livekit_server) as s:
        await asyncio.wait_for(s.events.first_frame.wait(), timeout=15)
        assert s.worker_identity in await s.participants()
        await asyncio.wait_for(s.worker.aclose(), timeout=10)
        await s.worker.aclose()

        async def gone() -> bool:
            return s.worker_identity not in await s.participants()

        await eventually(gone, timeout=30, message="the worker is still in the room")
    assert "failed" not in s.events.names()


async def test_closing_while_connecting_leaves_no_participant_behind(
    livekit_server: LiveKitServer,
) -> None:
    room = f"worker-{uuid.uuid4().hex[:8]}"
    events = RecordingEvents()
    spec = WorkerSpec(
        "sess_early",
        livekit_server.url,
        room,
        "avatar-early",
        token=token(livekit_server, "avatar-early", room),
    )
    worker = FACTORY(spec, events)
    await asyncio.sleep(0)  # connecting has begun
    await asyncio.wait_for(worker.aclose(), timeout=10)
    # Nothing to wait for here: the check is that no participant shows up late, so
    # give a native connect that outlived aclose() time to land (a busy machine can
    # only make this pass when it should fail, never the reverse).
    await asyncio.sleep(1.0)
    async with livekit_server.api() as lk:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    assert [p.identity for p in listed.participants] == []
    assert "failed" not in events.names()


async def test_removal_by_the_server_api_is_reported_as_worker_lost(
    livekit_server: LiveKitServer,
) -> None:
    async with scene(livekit_server) as s:
        await asyncio.wait_for(s.events.first_frame.wait(), timeout=15)
        async with livekit_server.api() as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room=s.room, identity=s.worker_identity)
            )
        await asyncio.wait_for(s.events.failed.wait(), timeout=10)
        code, message = s.events.failure()
        assert code == FAILURE_WORKER_LOST
        assert "PARTICIPANT_REMOVED" in message


async def test_a_token_signed_with_another_secret_fails_as_auth_error_quickly(
    livekit_server: LiveKitServer,
) -> None:
    room = f"worker-{uuid.uuid4().hex[:8]}"
    bad = token(livekit_server, "avatar-bad", room, secret="not-the-secret-of-this-livekit-server")
    events = RecordingEvents()
    worker = FACTORY(
        WorkerSpec("sess_bad", livekit_server.url, room, "avatar-bad", token=bad), events
    )
    try:
        await asyncio.wait_for(events.failed.wait(), timeout=10)
        code, message = events.failure()
        assert code == FAILURE_LIVEKIT_AUTH
        assert "401" in message
        assert bad not in message and bad.split(".")[2] not in message, "the token leaked"
        assert events.names() == ["connecting", "failed"]
    finally:
        await worker.aclose()


async def test_a_url_where_nothing_listens_fails_as_unreachable_quickly(
    livekit_server: LiveKitServer,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    room = f"worker-{uuid.uuid4().hex[:8]}"
    events = RecordingEvents()
    spec = WorkerSpec(
        "sess_unreachable",
        f"ws://127.0.0.1:{port}",
        room,
        "avatar-x",
        token=token(livekit_server, "avatar-x", room),
    )
    worker = FACTORY(spec, events)
    try:
        await asyncio.wait_for(events.failed.wait(), timeout=10)
        code, _ = events.failure()
        assert code == FAILURE_LIVEKIT_UNREACHABLE
    finally:
        await worker.aclose()


async def test_track_audio_source_lip_syncs_a_participants_microphone(
    livekit_server: LiveKitServer,
) -> None:
    room = f"worker-{uuid.uuid4().hex[:8]}"
    speaker = rtc.Room()
    await speaker.connect(livekit_server.url, token(livekit_server, "speaker", room))
    viewer = AvatarViewer(avatar_identity="avatar-track")
    await viewer.connect(livekit_server.url, token(livekit_server, "viewer", room))
    source = rtc.AudioSource(AGENT_RATE, 1)
    await speaker.local_participant.publish_track(
        rtc.LocalAudioTrack.create_audio_track("mic", source),
        rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
    )
    events = RecordingEvents()
    spec = WorkerSpec(
        "sess_track",
        livekit_server.url,
        room,
        "avatar-track",
        audio_source="track",
        subscribe_to_identity="speaker",
        token=token(livekit_server, "avatar-track", room),
    )
    worker = FACTORY(spec, events)
    try:

        async def talk(samples: npt.NDArray[np.int16]) -> None:
            step = AGENT_RATE // 100
            for i in range(0, len(samples), step):
                chunk = samples[i : i + step]
                await source.capture_frame(
                    rtc.AudioFrame(chunk.tobytes(), AGENT_RATE, 1, len(chunk))
                )

        # The worker publishes once it hears something; keep talking until it shows.
        for _ in range(10):
            await talk(speech(1.0))
            if viewer.video and any(v.mouth_open for v in viewer.video):
                break
        assert any(v.mouth_open for v in viewer.video), "the mouth never followed the track"
        # Silence: the mouth closes and stays closed (the flaky version of this
        # asserted one second after the speaker fell silent; a busy machine can
        # deliver that second's frames late).
        await talk(np.zeros(AGENT_RATE, dtype=np.int16))
        await viewer.wait_for_mouth_closed(frames=10, timeout=30)
        assert "failed" not in events.names()
    finally:
        await worker.aclose()
        await viewer.aclose()
        await speaker.disconnect()

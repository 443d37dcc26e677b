"""The avatar worker without a LiveKit server: frame generation and receiver wiring.

`FaceVideoGenerator` is driven directly, and through livekit-agents' real
`AvatarRunner` with a stand-in receiver and a stand-in room, to pin the playback
protocol the agent relies on (started / finished / interrupted with a position).
The real-room behaviour is in `test_worker_room.py`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd, AvatarRunner

from protoface_emulator.avatar.face import FaceRenderer, mouth_box
from protoface_emulator.avatar.generator import FaceVideoGenerator
from protoface_emulator.avatar.options import (
    ENV_VIDEO_FPS,
    ENV_VIDEO_HEIGHT,
    ENV_VIDEO_WIDTH,
    WorkerOptions,
)
from protoface_emulator.avatar.worker import make_worker_factory, start_worker
from protoface_emulator.lifecycle import FAILURE_LIVEKIT_UNREACHABLE, WorkerSpec

OPTIONS = WorkerOptions()  # 320x320 @ 20 fps, 24 kHz mono
RATE = OPTIONS.audio_sample_rate
PERIOD = int(RATE / OPTIONS.video_fps)  # samples per video frame

Item = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd


def speech(seconds: float, rate: int = RATE) -> npt.NDArray[np.int16]:
    """Voiced, syllable-like audio that never drops to silence."""
    t = np.arange(int(rate * seconds)) / rate
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3 * t))
    return (0.25 * envelope * np.sin(2 * np.pi * 200 * t) * 32767).astype(np.int16)


def frames_of(
    samples: npt.NDArray[np.int16], rate: int = RATE, ms: int = 100, channels: int = 1
) -> list[rtc.AudioFrame]:
    """`samples` cut into frames as DataStreamAudioReceiver delivers them (100 ms)."""
    step = rate * ms // 1000 * channels
    return [
        rtc.AudioFrame(
            samples[i : i + step].tobytes(), rate, channels, len(samples[i : i + step]) // channels
        )
        for i in range(0, len(samples), step)
    ]


async def push(
    gen: FaceVideoGenerator, samples: npt.NDArray[np.int16], *, end: bool = True
) -> None:
    for frame in frames_of(samples):
        await gen.push_audio(frame)
    if end:
        await gen.push_audio(AudioSegmentEnd())


async def take(it: AsyncIterator[Item], count: int) -> list[Item]:
    return [await it.__anext__() for _ in range(count)]


async def take_until_end(it: AsyncIterator[Item], limit: int = 10_000) -> list[Item]:
    items: list[Item] = []
    while len(items) < limit:
        items.append(await it.__anext__())
        if isinstance(items[-1], AudioSegmentEnd):
            return items
    raise AssertionError("no AudioSegmentEnd")


def mouth(frame: rtc.VideoFrame) -> npt.NDArray[np.int16]:
    """The mouth box of a yielded (I420) frame, as RGB."""
    converted = frame.convert(rtc.VideoBufferType.RGBA)
    rgba = np.frombuffer(converted.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)
    x0, y0, x1, y1 = mouth_box(frame.width, frame.height)
    return rgba[y0:y1, x0:x1, :3].astype(np.int16)


def samples_of(items: list[Item]) -> npt.NDArray[np.int16]:
    audio = [np.frombuffer(i.data, dtype=np.int16) for i in items if isinstance(i, rtc.AudioFrame)]
    return np.concatenate(audio) if audio else np.zeros(0, dtype=np.int16)


def videos(items: list[Item]) -> list[rtc.VideoFrame]:
    return [i for i in items if isinstance(i, rtc.VideoFrame)]


def closed_mouth() -> npt.NDArray[np.int16]:
    w, h = OPTIONS.video_width, OPTIONS.video_height
    i420 = FaceRenderer(w, h, OPTIONS.video_fps).render_i420(0.0)
    return mouth(rtc.VideoFrame(w, h, rtc.VideoBufferType.I420, i420))


CLOSED = closed_mouth()


def is_open(frame: rtc.VideoFrame) -> bool:
    return float(np.abs(mouth(frame) - CLOSED).mean()) > 5.0


# --- FaceVideoGenerator on its own ---------------------------------------------------


async def test_idle_generator_yields_closed_mouth_video_only() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    items = await take(gen.__aiter__(), 40)
    assert all(isinstance(i, rtc.VideoFrame) for i in items)
    frames = videos(items)
    assert all((f.width, f.height) == (320, 320) for f in frames)
    assert all(f.type == rtc.VideoBufferType.I420 for f in frames)
    assert all(np.array_equal(mouth(f), CLOSED) for f in frames)


async def test_idle_frames_are_paced_so_no_stale_frames_queue_up_ahead_of_speech() -> None:
    """A consumer that takes frames as fast as it can gets idle frames at the frame
    rate, not thousands: otherwise its queue fills with closed-mouth frames that
    viewers must see before the first frame of speech."""
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    loop = asyncio.get_running_loop()
    began = loop.time()
    idle = 0
    while loop.time() - began < 0.5:
        await it.__anext__()
        idle += 1
    assert idle <= 0.5 * OPTIONS.video_fps + 3, idle


async def test_audio_arriving_while_idle_shows_in_the_next_frame() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    await take(it, 2)
    waiting = asyncio.ensure_future(it.__anext__())  # parked in the idle wait
    await asyncio.sleep(0.01)
    await push(gen, speech(0.3))
    # The idle wait ends as the audio lands: the frame it was waiting to draw
    # already speaks.
    first = await asyncio.wait_for(waiting, timeout=1)
    assert isinstance(first, rtc.VideoFrame) and is_open(first)


async def test_speech_opens_the_mouth_and_passes_the_audio_through_in_order() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    audio = speech(1.0)
    await push(gen, audio)
    items = await take_until_end(gen.__aiter__())

    assert np.array_equal(samples_of(items), audio), "same samples, same order, none added"
    # One video frame per frame period of audio, each followed by that period's audio.
    assert len(videos(items)) == 20
    for video, sound in zip(items[0:-1:2], items[1:-1:2], strict=True):
        assert isinstance(video, rtc.VideoFrame)
        assert isinstance(sound, rtc.AudioFrame)
        assert sound.samples_per_channel == PERIOD and sound.sample_rate == RATE
    assert all(is_open(f) for f in videos(items))
    assert isinstance(items[-1], AudioSegmentEnd)


async def test_mouth_closes_again_after_the_segment_and_frames_go_on_at_the_frame_rate() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    await push(gen, speech(0.5))
    await take_until_end(it)
    after = videos(await take(it, 30))
    assert len(after) == 30, "idle frames carry no audio"
    assert np.array_equal(mouth(after[-1]), CLOSED)
    assert all(np.array_equal(mouth(f), CLOSED) for f in after[10:])


async def test_each_segment_ends_right_after_its_own_audio() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    first, second = speech(0.3), speech(0.45)
    await push(gen, first)
    await push(gen, second)
    it = gen.__aiter__()
    a = await take_until_end(it)
    b = await take_until_end(it)
    assert np.array_equal(samples_of(a), first)
    assert np.array_equal(samples_of(b), second)
    # 0.45 s is 9 frame periods: the last one is short, not padded with silence.
    assert len(videos(b)) == 9


async def test_clear_buffer_drops_pending_audio_and_shuts_the_mouth_at_once() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    await push(gen, speech(3.0), end=False)
    before = await take(it, 10)
    assert any(is_open(f) for f in videos(before))
    assert gen.queued_duration > 2.0

    assert gen.clear_buffer() is None  # no synchronizer attached: nothing to await
    assert gen.queued_duration == 0.0
    # The receiver then ends the cleared segment; that end must not come out.
    await gen.push_audio(AudioSegmentEnd())
    after = await take(it, 30)
    assert all(isinstance(i, rtc.VideoFrame) for i in after), "no audio, no segment end"
    assert all(np.array_equal(mouth(f), CLOSED) for f in videos(after))


async def test_clear_while_a_frame_is_consumed_drops_that_frames_audio() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    await push(gen, speech(1.0), end=False)
    video = await it.__anext__()
    assert isinstance(video, rtc.VideoFrame)
    gen.clear_buffer()  # as the runner would, while it pushes `video`
    assert all(isinstance(i, rtc.VideoFrame) for i in await take(it, 5))


async def test_stale_end_after_a_clear_does_not_end_the_next_segment() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    await push(gen, speech(2.0), end=False)
    await take(it, 4)
    gen.clear_buffer()
    await gen.push_audio(AudioSegmentEnd())  # the cleared segment's end, arriving late
    nxt = speech(0.5)
    await push(gen, nxt)
    items = await take_until_end(it)
    assert np.array_equal(samples_of(items), nxt), "the whole next segment plays"
    assert sum(isinstance(i, AudioSegmentEnd) for i in items) == 1


async def test_a_segment_end_after_a_completed_segment_is_kept() -> None:
    # A clear after the whole segment arrived: its end was queued and is dropped
    # with it, and no further end comes; the following segment ends normally.
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    await push(gen, speech(1.0))
    await take(it, 4)
    gen.clear_buffer()
    await push(gen, speech(0.2))
    items = await take_until_end(it)
    assert len(samples_of(items)) == int(0.2 * RATE)


async def test_partial_period_waits_for_more_audio_while_the_segment_is_open() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    it = gen.__aiter__()
    audio = speech(0.03)  # less than one 50 ms period
    for frame in frames_of(audio, ms=30):
        await gen.push_audio(frame)
    assert all(isinstance(i, rtc.VideoFrame) for i in await take(it, 3)), "waits, no underrun"
    await gen.push_audio(AudioSegmentEnd())
    items = await take_until_end(it)
    assert np.array_equal(samples_of(items), audio), "the tail plays once the segment ends"


async def test_audio_at_another_rate_is_resampled_to_the_published_rate() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    audio16k = speech(1.0, rate=16000)
    for frame in frames_of(audio16k, rate=16000):
        await gen.push_audio(frame)
    await gen.push_audio(AudioSegmentEnd())
    items = await take_until_end(gen.__aiter__())
    out = [i for i in items if isinstance(i, rtc.AudioFrame)]
    assert all(f.sample_rate == RATE and f.num_channels == 1 for f in out)
    assert abs(len(samples_of(items)) - RATE) < RATE * 0.02
    assert all(is_open(f) for f in videos(items)[2:-2])


async def test_stereo_audio_is_mixed_down_for_a_mono_avatar() -> None:
    gen = FaceVideoGenerator(OPTIONS)
    mono = speech(0.5)
    stereo = np.repeat(mono, 2)
    for frame in frames_of(stereo, channels=2):
        await gen.push_audio(frame)
    await gen.push_audio(AudioSegmentEnd())
    items = await take_until_end(gen.__aiter__())
    assert np.array_equal(samples_of(items), mono)


async def test_callbacks_report_audio_and_published_frames() -> None:
    audio_calls: list[None] = []
    published: list[int] = []
    gen = FaceVideoGenerator(
        OPTIONS, on_audio=lambda: audio_calls.append(None), on_frame_published=published.append
    )
    it = gen.__aiter__()
    await take(it, 3)
    # A frame counts once the consumer comes back for more, i.e. has pushed it on.
    assert published == [1, 2]
    await push(gen, speech(0.3))
    assert len(audio_calls) == 3  # one per received frame; the worker rate-limits
    await take_until_end(it)
    assert gen.frames_published == published[-1] == 2 + 1 + 6


# --- through livekit-agents' AvatarRunner: the playback protocol --------------------


class StandInReceiver(AudioReceiver):
    """Delivers audio like DataStreamAudioReceiver and records the notifications."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[rtc.AudioFrame | AudioSegmentEnd] = asyncio.Queue()
        self.notes: list[tuple[Any, ...]] = []
        self.finished = asyncio.Event()
        self.segment_open = False

    def send(self, samples: npt.NDArray[np.int16], *, end: bool = True) -> None:
        for frame in frames_of(samples):
            self.queue.put_nowait(frame)
        self.segment_open = not end
        if end:
            self.queue.put_nowait(AudioSegmentEnd())

    def clear(self) -> None:
        """What DataStreamAudioReceiver does on the agent's lk.clear_buffer RPC."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.emit("clear_buffer")
        if self.segment_open:  # the open stream ends, and its end is still sent
            self.queue.put_nowait(AudioSegmentEnd())
            self.segment_open = False

    def notify_playback_started(self) -> None:
        self.notes.append(("started",))

    def notify_playback_finished(self, playback_position: float, interrupted: bool) -> None:
        self.notes.append(("finished", round(playback_position, 2), interrupted))
        self.finished.set()

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        return self._items()

    async def _items(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        while True:
            yield await self.queue.get()

    async def wait_finished(self) -> tuple[Any, ...]:
        await asyncio.wait_for(self.finished.wait(), timeout=10)
        self.finished.clear()
        return [n for n in self.notes if n[0] == "finished"][-1]


class _StandInPublication:
    async def wait_for_subscription(self) -> None:
        return None


class _StandInParticipant:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish_track(self, track: rtc.LocalTrack, options: Any) -> _StandInPublication:
        self.published.append(track.name)
        return _StandInPublication()


class _StandInRoom(rtc.EventEmitter[str]):
    """Just enough of rtc.Room for AvatarRunner: connected, publishes nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self.local_participant = _StandInParticipant()

    def isconnected(self) -> bool:
        return True


async def _runner() -> tuple[AvatarRunner, StandInReceiver, FaceVideoGenerator, _StandInRoom]:
    room = _StandInRoom()
    receiver = StandInReceiver()
    gen = FaceVideoGenerator(OPTIONS)
    runner = AvatarRunner(
        cast(rtc.Room, room),
        audio_recv=receiver,
        video_gen=gen,
        options=OPTIONS.avatar_options(),
    )
    gen.attach_synchronizer(runner.av_sync)
    await runner.start()
    return runner, receiver, gen, room


async def test_runner_reports_started_then_finished_with_the_played_duration() -> None:
    runner, receiver, gen, room = await _runner()
    try:
        receiver.send(speech(1.0))
        finished = await receiver.wait_finished()
        assert receiver.notes[0] == ("started",)
        assert finished == ("finished", 1.0, False)
        assert room.local_participant.published == ["avatar_audio", "avatar_video"]
        assert gen.frames_published >= 20
    finally:
        await runner.aclose()


async def test_runner_reports_an_interruption_once_and_the_next_segment_normally() -> None:
    runner, receiver, gen, _ = await _runner()
    try:
        receiver.send(speech(4.0), end=False)
        await asyncio.sleep(0.6)
        receiver.clear()
        interrupted = await receiver.wait_finished()
        assert interrupted[2] is True
        assert 0.2 < interrupted[1] < 2.0, "position: what was played before the clear"
        assert gen.queued_duration == 0.0

        receiver.send(speech(0.5))
        finished = await receiver.wait_finished()
        assert finished == ("finished", 0.5, False), receiver.notes
        assert [n[0] for n in receiver.notes] == ["started", "finished", "started", "finished"]
    finally:
        await runner.aclose()


# --- options and the worker without a server ---------------------------------------


def test_options_default_to_a_small_face_for_two_cores() -> None:
    assert (OPTIONS.video_width, OPTIONS.video_height, OPTIONS.video_fps) == (320, 320, 20.0)
    avatar = OPTIONS.avatar_options()
    assert (avatar.video_width, avatar.video_height, avatar.video_fps) == (320, 320, 20.0)
    assert (avatar.audio_sample_rate, avatar.audio_channels) == (24000, 1)


def test_options_read_size_and_rate_from_the_environment() -> None:
    options = WorkerOptions.from_env(
        {ENV_VIDEO_WIDTH: "384", ENV_VIDEO_HEIGHT: "256", ENV_VIDEO_FPS: "25"}
    )
    assert (options.video_width, options.video_height, options.video_fps) == (384, 256, 25.0)
    assert WorkerOptions.from_env({}) == WorkerOptions()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({ENV_VIDEO_WIDTH: "big"}, ENV_VIDEO_WIDTH),
        ({ENV_VIDEO_HEIGHT: "321"}, "even"),
        ({ENV_VIDEO_FPS: "500"}, "video_fps"),
    ],
)
def test_bad_environment_values_are_named_in_the_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerOptions.from_env(env)


class RecordingEvents:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.failed = asyncio.Event()

    def on_connecting(self) -> None:
        self.calls.append(("connecting",))

    def on_first_frame(self) -> None:
        self.calls.append(("first_frame",))

    def on_audio(self) -> None:
        self.calls.append(("audio",))

    def on_frames(self, count: int) -> None:
        self.calls.append(("frames", count))

    def on_failed(self, code: str, message: str) -> None:
        self.calls.append(("failed", code, message))
        self.failed.set()


async def test_nothing_listening_fails_as_unreachable_and_close_is_idempotent() -> None:
    events = RecordingEvents()
    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2lnbmF0dXJl"
    spec = WorkerSpec(
        session_id="sess_unit",
        url=f"ws://127.0.0.1:{_free_port_tcp()}",
        room_name="room",
        identity="avatar",
        token=secret,
    )
    handle = make_worker_factory(WorkerOptions(connect_timeout=8))(spec, events)
    await asyncio.wait_for(events.failed.wait(), timeout=20)
    assert events.calls[0] == ("connecting",)
    failed = events.calls[-1]
    assert failed[:2] == ("failed", FAILURE_LIVEKIT_UNREACHABLE)
    assert spec.url in failed[2] and secret not in failed[2]
    await handle.aclose()
    await handle.aclose()


async def test_close_right_after_start_reports_no_failure() -> None:
    events = RecordingEvents()
    spec = WorkerSpec("sess_unit2", f"ws://127.0.0.1:{_free_port_tcp()}", "room", "avatar")
    handle = start_worker(spec, events)
    await handle.aclose()
    await asyncio.sleep(0.2)
    assert not events.failed.is_set()
    await handle.aclose()


def _free_port_tcp() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""The audio router: keep-alives stay invisible, switches respect utterances, nothing hangs.

Stand-in sinks: the routes below are in-memory `AudioOutput`s that record what
they get and report playback when the test says so, because what is pinned
here is the router's accounting, which a real room cannot make deterministic.
Real rooms prove the same behaviours end to end (tests/e2e/test_lifetime.py).
"""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities, PlaybackFinishedEvent

from livekit.plugins.protoface.output import AvatarAudioOutput, DiscardAudio

RATE = 16000


class Sink(AudioOutput):
    """Records segments; the test finishes them (as an avatar worker would, by RPC)."""

    def __init__(self) -> None:
        super().__init__(label="sink", capabilities=AudioOutputCapabilities(pause=False))
        self.segments: list[int] = []  # frames per segment
        self._open = False

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._open:
            self._open = True
            self.segments.append(0)
            self.on_playback_started(created_at=0.0)
        self.segments[-1] += 1

    def flush(self) -> None:
        super().flush()
        self._open = False

    def clear_buffer(self) -> None:
        pass

    def finish(self, *, interrupted: bool = False) -> None:
        self.on_playback_finished(playback_position=0.1, interrupted=interrupted)


def frame() -> rtc.AudioFrame:
    samples = RATE // 50
    return rtc.AudioFrame(bytes(samples * 2), RATE, 1, samples)


def router(sink: AudioOutput) -> tuple[AvatarAudioOutput, list[PlaybackFinishedEvent]]:
    output = AvatarAudioOutput(sink, sample_rate=RATE, avatar_route=True)
    output.mark_route_ready(sink)
    finished: list[PlaybackFinishedEvent] = []
    output.on("playback_finished", finished.append)
    return output, finished


async def utterance(output: AvatarAudioOutput, frames: int = 3) -> None:
    for _ in range(frames):
        await output.capture_frame(frame())
    output.flush()


async def test_keep_alives_never_reach_the_agents_playback_accounting() -> None:
    sink = Sink()
    output, finished = router(sink)
    started: list[object] = []
    output.on("playback_started", started.append)

    assert await output.keep_alive()
    await utterance(output)
    sink.finish()  # the keep-alive's
    assert finished == [] and len(started) == 1  # only the utterance started
    sink.finish()  # the utterance's
    assert len(finished) == 1
    assert await asyncio.wait_for(output.wait_for_playout(), 1)
    assert sink.segments == [1, 3]


async def test_no_keep_alive_while_the_agent_speaks() -> None:
    sink = Sink()
    output, _ = router(sink)
    await output.capture_frame(frame())
    assert not await output.keep_alive()
    output.flush()
    assert not await output.keep_alive()  # still playing
    sink.finish()
    assert await output.keep_alive()


async def test_a_boundary_switch_waits_for_the_utterance_to_finish() -> None:
    first, second = Sink(), Sink()
    output, finished = router(first)
    await utterance(output)
    output.switch(second, at_boundary=True, avatar=True, ready=True)
    assert output.route is first  # never mid-sentence
    first.finish()
    assert output.route is second and len(finished) == 1
    await utterance(output)
    assert second.segments == [3]


async def test_switching_now_settles_what_the_old_route_never_will() -> None:
    lost, room = Sink(), Sink()
    output, finished = router(lost)
    await utterance(output)
    output.switch(room, at_boundary=False, avatar=False, ready=True)
    assert [e.interrupted for e in finished] == [True]
    await asyncio.wait_for(output.wait_for_playout(), 1)


async def test_switching_mid_utterance_sends_the_rest_to_the_new_route() -> None:
    lost, room = Sink(), Sink()
    output, finished = router(lost)
    await output.capture_frame(frame())
    output.switch(room, at_boundary=False, avatar=False, ready=True)
    await output.capture_frame(frame())
    output.flush()
    assert lost.segments == [1] and room.segments == [1]
    room.finish()
    assert len(finished) == 1  # one utterance, finished once


async def test_a_capture_stuck_behind_a_missing_avatar_moves_on_when_the_route_switches() -> None:
    class NeverReady(Sink):
        async def capture_frame(self, frame: rtc.AudioFrame) -> None:
            await asyncio.Event().wait()

    stuck, room = NeverReady(), Sink()
    output = AvatarAudioOutput(stuck, sample_rate=RATE, avatar_route=True)  # not ready
    capture = asyncio.ensure_future(output.capture_frame(frame()))
    await asyncio.sleep(0.05)
    assert not capture.done()
    output.switch(room, at_boundary=False, avatar=False, ready=True)
    await asyncio.wait_for(capture, 1)
    assert room.segments == [1]


async def test_discard_audio_settles_each_utterance_when_flushed() -> None:
    output, finished = router(DiscardAudio())
    await utterance(output)
    assert [e.interrupted for e in finished] == [True]

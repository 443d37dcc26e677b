"""The audio router: keep-alives stay invisible, switches respect utterances, nothing hangs.

Stand-in sinks: the routes below are in-memory `AudioOutput`s that record what
they get and report playback when the test says so, because what is pinned
here is the router's accounting, which a real room cannot make deterministic.
Real rooms prove the same behaviours end to end (tests/e2e/test_lifetime.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for `condition` (the router replays in a task of its own)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


def router(
    sink: AudioOutput, *, ack_timeout: float = 2.0
) -> tuple[AvatarAudioOutput, list[PlaybackFinishedEvent]]:
    output = AvatarAudioOutput(sink, sample_rate=RATE, avatar_route=True, ack_timeout=ack_timeout)
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


async def test_switching_now_replays_what_the_old_route_never_played() -> None:
    lost, room = Sink(), Sink()
    output, finished = router(lost)
    await utterance(output)
    output.switch(room, at_boundary=False, avatar=False, ready=True)
    await wait_until(lambda: room.segments == [3])  # nobody heard it: all of it again
    assert finished == []
    room.finish()
    assert [e.interrupted for e in finished] == [False]
    await asyncio.wait_for(output.wait_for_playout(), 1)


async def test_switching_mid_utterance_sends_all_of_it_to_the_new_route() -> None:
    lost, room = Sink(), Sink()
    output, finished = router(lost)
    await output.capture_frame(frame())
    output.switch(room, at_boundary=False, avatar=False, ready=True)
    await output.capture_frame(frame())
    output.flush()
    await wait_until(lambda: room.segments == [2])
    assert lost.segments == [1]
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


def watched(
    sink: AudioOutput, *, ack_timeout: float
) -> tuple[AvatarAudioOutput, list[PlaybackFinishedEvent], list[str]]:
    """A router whose avatar is watched: what went unanswered is listed."""
    output, finished = router(sink, ack_timeout=ack_timeout)
    unanswered: list[str] = []
    output.watch_avatar(
        report_start=True,
        on_unanswered=lambda _, what: unanswered.append(what),
        on_suspect=lambda: None,
    )
    return output, finished, unanswered


class Avatar(Sink):
    """Like an avatar worker: acknowledges when told, reports where a clear stopped it."""

    def __init__(self, *, acknowledge: bool = True) -> None:
        super().__init__()
        self.acknowledge = acknowledge
        self.frames: list[list[rtc.AudioFrame]] = []
        self.clears = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await AudioOutput.capture_frame(self, frame)
        if not self._open:
            self._open = True
            self.segments.append(0)
            self.frames.append([])
            if self.acknowledge:
                self.on_playback_started(created_at=0.0)
        self.segments[-1] += 1
        self.frames[-1].append(frame)

    def clear_buffer(self) -> None:
        self.clears += 1

    def finish_at(self, position: float, *, interrupted: bool) -> None:
        self.on_playback_finished(playback_position=position, interrupted=interrupted)


def seconds(frames: list[rtc.AudioFrame]) -> float:
    return sum(f.duration for f in frames)


async def test_pause_stops_the_avatar_and_resume_sends_the_rest_from_where_it_stopped() -> None:
    avatar = Avatar()
    output, finished = router(avatar)
    assert output.can_pause  # livekit-agents resumes false interruptions only then
    await utterance(output, frames=50)  # 1 s
    output.pause()
    assert avatar.clears == 1  # lk.clear_buffer: the avatar falls silent
    avatar.finish_at(0.3, interrupted=True)  # it had played 0.3 s
    assert finished == []  # paused, not over
    output.resume()
    await wait_until(lambda: len(avatar.segments) == 2)
    await wait_until(lambda: abs(seconds(avatar.frames[1]) - 0.7) < 1e-6)
    avatar.finish_at(0.7, interrupted=False)
    assert len(finished) == 1
    assert not finished[0].interrupted
    assert abs(finished[0].playback_position - 1.0) < 1e-6  # all of it, once


async def test_frames_captured_while_paused_wait_for_resume() -> None:
    avatar = Avatar()
    output, finished = router(avatar)
    await output.capture_frame(frame())
    output.pause()
    avatar.finish_at(0.0, interrupted=True)

    async def rest() -> None:
        for _ in range(4):
            await output.capture_frame(frame())
        output.flush()

    # The session's next frame waits in capture_frame while paused, as speech does.
    capturing = asyncio.ensure_future(rest())
    await asyncio.sleep(0.05)
    assert not capturing.done()
    assert avatar.segments == [1]  # nothing sent while paused
    output.resume()
    await asyncio.wait_for(capturing, 5)
    await wait_until(lambda: avatar.segments == [1, 5])  # the whole utterance: none was heard
    avatar.finish_at(0.1, interrupted=False)
    assert [e.playback_position for e in finished] == [0.1]


async def test_an_interruption_while_paused_settles_at_the_position_heard() -> None:
    avatar = Avatar()
    output, finished = router(avatar)
    await utterance(output, frames=50)
    output.pause()
    avatar.finish_at(0.4, interrupted=True)
    output.clear_buffer()  # the user really spoke
    assert [(e.interrupted, round(e.playback_position, 3)) for e in finished] == [(True, 0.4)]
    await asyncio.wait_for(output.wait_for_playout(), 1)
    await utterance(output, frames=2)  # the next line plays unpaused
    assert avatar.segments == [50, 2]


async def test_a_resume_before_the_avatar_answered_the_pause_waits_for_its_position() -> None:
    avatar = Avatar()
    output, _ = router(avatar)
    await utterance(output, frames=50)
    output.pause()
    output.resume()
    await asyncio.sleep(0.05)
    assert avatar.segments == [50]  # where to go on from is not known yet
    avatar.finish_at(0.5, interrupted=True)
    await wait_until(lambda: len(avatar.segments) == 2)
    await wait_until(lambda: abs(seconds(avatar.frames[1]) - 0.5) < 1e-6)


async def test_an_avatar_that_never_acknowledges_is_reported_once() -> None:
    avatar = Avatar(acknowledge=False)
    output, _, unanswered = watched(avatar, ack_timeout=0.1)  # the rule, not the default bound
    await utterance(output)
    await wait_until(lambda: bool(unanswered))
    await utterance(output)
    await asyncio.sleep(0.3)
    assert len(unanswered) == 1 and "lk.playback_started" in unanswered[0]


async def test_a_late_but_alive_avatar_is_not_reported() -> None:
    avatar = Avatar(acknowledge=False)
    output, finished, unanswered = watched(avatar, ack_timeout=0.3)
    await utterance(output)
    await asyncio.sleep(0.1)
    avatar.on_playback_started(created_at=0.0)  # late, within the bound
    avatar.finish()
    await asyncio.sleep(0.4)
    assert unanswered == [] and len(finished) == 1


async def test_an_avatar_that_never_sends_started_is_judged_by_its_finishes_alone() -> None:
    avatar = Avatar(acknowledge=False)
    output, finished, unanswered = watched(avatar, ack_timeout=0.2)
    assert await output.keep_alive()
    avatar.finish()  # played, never said it started: it does not send lk.playback_started
    await utterance(output)
    await asyncio.sleep(0.4)
    assert unanswered == []  # a missing acknowledgement says nothing now
    avatar.finish()
    assert len(finished) == 1


async def test_an_avatar_is_sent_no_more_than_the_lead_ahead_of_its_playback() -> None:
    """A long utterance handed over at once reaches the avatar paced, so it keeps receiving."""
    sink = Sink()
    output, finished = router(sink)
    output.pace(0.2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for _ in range(40):  # 0.8 s of speech, captured as fast as the caller can
        await output.capture_frame(frame())
    output.flush()
    took = loop.time() - began
    # Without pacing every frame is forwarded at once; paced, the last one waits
    # until only `lead` seconds are unplayed.
    assert took >= 0.8 - 0.2 - 0.05, took
    assert sink.segments == [40]
    sink.finish()
    assert len(finished) == 1

"""The playground's bundled agent: it says your own words back through a Protoface avatar.

    protoface-emulator playground        # runs it (python -m livekit.agents start FILE --dev)

It needs no speech-to-text, language model, text-to-speech or model download:
it listens to each person in the room with a small energy-based turn detector,
records what they say, and when they pause, has the avatar say that recording
back (`session.say(text, audio=...)`). Speaking over the avatar interrupts it.
So the page shows the whole loop — microphone, turn-taking, the agent's speech,
the avatar's lip-sync, interruption — with nothing but the installed packages.

Environment (`protoface-emulator playground` sets all of it): `LIVEKIT_URL`,
`LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`, `PROTOFACE_API_URL`,
`PROTOFACE_API_KEY`.

What the agent tells the page, as attributes of its own participant:

- `protoface.avatar_state`: `joining`, `listening`, `speaking`, `lost` or
  `restored` (see `AVATAR_STATES`);
- `playground.turns`: JSON counters `{"heard", "echoed", "interrupted"}`.

The transcript of each echo (a short description, since nothing transcribes
the words) goes out on the standard `lk.transcription` text stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    AgentStateChangedEvent,
    JobContext,
)
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

log = logging.getLogger("playground.echo")

ATTR_AVATAR_STATE = "protoface.avatar_state"
ATTR_TURNS = "playground.turns"
AvatarState = Literal["joining", "listening", "speaking", "lost", "restored"]
AVATAR_STATES: tuple[AvatarState, ...] = ("joining", "listening", "speaking", "lost", "restored")

SAMPLE_RATE = 16000
FRAME_SECONDS = 0.02
MAX_UTTERANCE_SECONDS = 20.0
# When no audio arrives for this long (a muted or stopped microphone sends
# nothing), the detector is fed silence for the gap.
SILENCE_TICK_SECONDS = 0.1


@dataclass
class TurnDetector:
    """Finds where a person starts and stops talking, from audio levels alone.

    A frame is voiced when its RMS level (dBFS) is above both `min_level_db`
    and the tracked noise floor plus `margin_db`. Talking starts after
    `start_seconds` of consecutive voiced audio and ends after `end_seconds`
    of consecutive unvoiced audio; `feed()` reports each edge once. Someone who
    never pauses gets an answer too: after `max_turn_seconds` of talking, `feed()`
    reports "cut" (the turn so far is over, talking goes on, and the next turn
    starts at once, without a "start" that would interrupt the answer).

    Attributes:
        min_level_db: Levels at or below this never count as voice.
        margin_db: How far above the noise floor a voiced frame must be.
        start_seconds: Voiced audio needed to start a turn.
        end_seconds: The pause that ends a turn.
        max_turn_seconds: The longest turn before a "cut".
    """

    min_level_db: float = -48.0
    margin_db: float = 12.0
    start_seconds: float = 0.12
    end_seconds: float = 0.7
    max_turn_seconds: float = 8.0
    talking: bool = False
    _turn: float = 0.0
    _floor_db: float = -70.0
    _voiced: float = 0.0
    _unvoiced: float = 0.0

    def feed(self, level_db: float, seconds: float) -> Literal["start", "end", "cut"] | None:
        """Take the level of `seconds` of audio; returns "start", "end" or "cut" on an edge."""
        if level_db < self._floor_db:
            self._floor_db = max(level_db, -90.0)
        else:  # the floor rises slowly, so speech never becomes the floor
            self._floor_db += 1.0 * seconds
        voiced = level_db > max(self.min_level_db, self._floor_db + self.margin_db)
        if voiced:
            self._voiced += seconds
            self._unvoiced = 0.0
        else:
            self._unvoiced += seconds
            self._voiced = 0.0
        if not self.talking:
            if self._voiced >= self.start_seconds:
                self.talking = True
                self._turn = self._voiced
                return "start"
            return None
        self._turn += seconds
        if self._unvoiced >= self.end_seconds:
            self.talking = False
            return "end"
        if self._turn >= self.max_turn_seconds:
            self._turn = 0.0
            return "cut"
        return None


def level_db(frame: rtc.AudioFrame) -> float:
    """The RMS level of a 16-bit frame in dBFS (-100 for digital silence)."""
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
    if samples.size == 0:
        return -100.0
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20.0 * math.log10(rms) if rms > 1e-5 else -100.0


def silent_frame(seconds: float) -> rtc.AudioFrame:
    """A frame of digital silence lasting `seconds`."""
    samples = max(1, int(seconds * SAMPLE_RATE))
    return rtc.AudioFrame(bytes(samples * 2), SAMPLE_RATE, 1, samples)


@dataclass
class Utterance:
    """What a person said in one turn, as frames."""

    frames: list[rtc.AudioFrame] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Its duration."""
        return sum(f.samples_per_channel / f.sample_rate for f in self.frames)


class Recorder:
    """Keeps a short pre-roll and records a turn from its start to its end."""

    def __init__(self, preroll_seconds: float = 0.3) -> None:
        self._preroll: deque[rtc.AudioFrame] = deque(maxlen=int(preroll_seconds / FRAME_SECONDS))
        self._current: Utterance | None = None

    def add(self, frame: rtc.AudioFrame) -> None:
        """Record `frame` (into the turn if one is open, else into the pre-roll)."""
        if self._current is None:
            self._preroll.append(frame)
        elif self._current.seconds < MAX_UTTERANCE_SECONDS:
            self._current.frames.append(frame)

    def start(self) -> None:
        """Open a turn, beginning with the pre-roll."""
        self._current = Utterance(frames=list(self._preroll))
        self._preroll.clear()

    def finish(self, trailing_seconds: float) -> Utterance:
        """Close the turn, dropping all but 0.2 s of its trailing pause."""
        utterance = self._current or Utterance()
        self._current = None
        drop = max(0, int((trailing_seconds - 0.2) / FRAME_SECONDS))
        if drop and len(utterance.frames) > drop:
            utterance.frames = utterance.frames[:-drop]
        return utterance


def is_person(participant: rtc.RemoteParticipant) -> bool:
    """Whether `participant` is a person (not an agent, not an avatar acting for one)."""
    if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
        return False
    return ATTRIBUTE_PUBLISH_ON_BEHALF not in participant.attributes


async def _play(frames: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame


class EchoAgent:
    """Turn-taking and state for one room: echo each turn, stop when talked over."""

    def __init__(self, room: rtc.Room, session: AgentSession[None]) -> None:
        self._room = room
        self._session = session
        self._speeches: set[SpeechHandle] = set()
        self._turns = {"heard": 0, "echoed": 0, "interrupted": 0}
        self._avatar_state: AvatarState = "joining"
        self._avatar_gone = False
        self._listeners: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, str] = {}
        self._publisher: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- what the page sees ----------------------------------------------------------

    @property
    def avatar_state(self) -> AvatarState:
        """The state last published as `protoface.avatar_state`."""
        return self._avatar_state

    def set_avatar_state(self, state: AvatarState) -> None:
        """Publish `state` as the `protoface.avatar_state` attribute."""
        if state == self._avatar_state and state != "joining":
            return
        self._avatar_state = state
        log.info("avatar state: %s", state)
        self._publish({ATTR_AVATAR_STATE: state})

    def _publish_turns(self) -> None:
        self._publish({ATTR_TURNS: json.dumps(self._turns)})

    def _publish(self, attributes: dict[str, str]) -> None:
        # One writer at a time, always sending the latest values: concurrent
        # set_attributes calls could land out of order and leave a stale state.
        self._pending.update(attributes)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            if not self._room.isconnected():
                return
            try:
                await self._room.local_participant.set_attributes(batch)
            except Exception as exc:  # the room is closing; nothing to tell anyone
                log.debug("could not publish %s: %s", sorted(batch), exc)
                return

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_agent_state(self, event: AgentStateChangedEvent) -> None:
        """Follow the session: the avatar speaks while the agent does."""
        if self._avatar_gone or self._avatar_state == "joining":
            return
        if event.new_state == "speaking":
            self.set_avatar_state("speaking")
        elif self._avatar_state == "speaking":
            self.set_avatar_state("listening")

    def on_avatar_lost(self, event: protoface.AvatarLostEvent) -> None:
        """The avatar went away; the plugin goes on with audio only."""
        log.warning("avatar lost: %s", event.reason)
        self._avatar_gone = True
        self.set_avatar_state("lost")

    def on_avatar_failed(self) -> None:
        """The hosted session failed before the avatar joined."""
        self._avatar_gone = True
        self.set_avatar_state("lost")

    def on_avatar_restored(self, event: protoface.AvatarRestoredEvent) -> None:
        """A replacement avatar speaks for the agent again."""
        log.info("avatar restored: %s replaces %s", event.session_id, event.previous_session_id)
        self._avatar_gone = False
        self.set_avatar_state("restored")

    def on_avatar_joined(self) -> None:
        """The avatar is in the room: start listening."""
        if not self._avatar_gone:
            self.set_avatar_state("listening")

    # -- turn-taking -----------------------------------------------------------------

    def person_started(self) -> None:
        """Someone started talking: stop the avatar if it is speaking (or about to)."""
        playing = [speech for speech in self._speeches if not speech.done()]
        if playing:
            log.info("talked over: interrupting the echo")
            for speech in playing:
                speech.interrupt()
            self._turns["interrupted"] += 1
            self._publish_turns()

    def person_finished(self, utterance: Utterance) -> None:
        """Someone paused: say what they said back to them."""
        if utterance.seconds < 0.3:
            return
        self._turns["heard"] += 1
        self._publish_turns()
        text = f"(your {utterance.seconds:.1f} s of speech, echoed back)"
        log.info("echoing %.1f s", utterance.seconds)
        speech = self._session.say(text, audio=_play(utterance.frames), add_to_chat_ctx=False)
        self._speeches.add(speech)
        self._spawn(self._count_echo(speech))

    async def _count_echo(self, speech: SpeechHandle) -> None:
        try:
            await speech.wait_for_playout()
        finally:
            self._speeches.discard(speech)
        if not speech.interrupted:
            self._turns["echoed"] += 1
            self._publish_turns()

    def listen(self, track: rtc.Track, participant: rtc.RemoteParticipant) -> None:
        """Listen to `participant`'s microphone `track` until it goes away.

        Only people: the avatar's audio (published on the agent's behalf) and other
        agents are never echoed.
        """
        if not is_person(participant):
            return
        running = self._listeners.get(track.sid)
        if running is not None and not running.done():
            return
        log.info("listening to %s", participant.identity)
        self._listeners[track.sid] = asyncio.create_task(self._listen(track))

    def stop_listening(self, track: rtc.Track) -> None:
        """Stop listening to `track`."""
        task = self._listeners.pop(track.sid, None)
        if task is not None:
            task.cancel()

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=SAMPLE_RATE, num_channels=1)
        frames: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in stream:
                    frames.put_nowait(event.frame)
            finally:
                frames.put_nowait(None)

        pumping = asyncio.create_task(pump())
        detector = TurnDetector()
        recorder = Recorder()
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(frames.get(), timeout=SILENCE_TICK_SECONDS)
                except asyncio.TimeoutError:
                    frame = silent_frame(loop.time() - last)
                if frame is None:
                    return
                last = loop.time()
                seconds = frame.samples_per_channel / frame.sample_rate
                recorder.add(frame)
                edge = detector.feed(level_db(frame), seconds)
                if edge == "start":
                    recorder.start()
                    self.person_started()
                elif edge == "end":
                    self.person_finished(recorder.finish(detector.end_seconds))
                elif edge == "cut":
                    self.person_finished(recorder.finish(0.0))
                    recorder.start()
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
            await stream.aclose()

    async def aclose(self) -> None:
        """Stop every listener."""
        for task in self._listeners.values():
            task.cancel()
        await asyncio.gather(*self._listeners.values(), return_exceptions=True)


server = AgentServer(
    host="127.0.0.1",
    num_idle_processes=1,  # a warm process, so a new tab's agent starts at once
    # livekit-server dispatches only to workers reporting a load below its target,
    # and this busy machine renders avatar video: report the worker idle.
    load_fnc=lambda: 0.0,
)


def _follow_room(ctx: JobContext, echo: EchoAgent) -> None:
    """Listen to each person's audio as it comes and goes; end the job when all have left."""

    @ctx.room.on("track_subscribed")
    def _on_track(
        track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            echo.listen(track, participant)

    @ctx.room.on("track_unsubscribed")
    def _on_untrack(
        track: rtc.Track, _pub: rtc.RemoteTrackPublication, _participant: rtc.RemoteParticipant
    ) -> None:
        echo.stop_listening(track)

    @ctx.room.on("participant_disconnected")
    def _on_left(participant: rtc.RemoteParticipant) -> None:
        # Nobody to talk to: end the job, which ends the billed hosted session.
        people = [p for p in ctx.room.remote_participants.values() if is_person(p)]
        if is_person(participant) and not people:
            log.info("the last person left; ending the job")
            ctx.shutdown(reason="the last person left")


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """Start the avatar, then echo every person in the room."""
    await ctx.connect()
    # Turns are the agent's own (TurnDetector): the session detects none.
    session: AgentSession[None] = AgentSession(
        turn_handling={
            "turn_detection": "manual",
            "interruption": {"resume_false_interruption": False},
        }
    )
    echo = EchoAgent(ctx.room, session)
    echo.set_avatar_state("joining")

    avatar = protoface.AvatarSession()  # PROTOFACE_API_URL / _KEY from the environment
    avatar.on("avatar_lost", echo.on_avatar_lost)
    avatar.on("avatar_restored", echo.on_avatar_restored)
    session.on("agent_state_changed", echo.on_agent_state)

    _follow_room(ctx, echo)

    async def _close() -> None:
        await echo.aclose()

    ctx.add_shutdown_callback(_close)

    await avatar.start(session, room=ctx.room)
    await session.start(
        agent=Agent(instructions="You repeat what people say."),
        room=ctx.room,
        # The agent hears people itself (TurnDetector), not through the session.
        room_options=RoomOptions(audio_input=False, text_input=False),
    )
    for participant in ctx.room.remote_participants.values():
        for publication in participant.track_publications.values():
            if publication.track is not None and publication.kind == rtc.TrackKind.KIND_AUDIO:
                echo.listen(publication.track, participant)
    try:
        await avatar.wait_for_join(timeout=60)
    except protoface.AvatarSessionFailedError as exc:
        log.error("the avatar could not join: %s", exc.failure_code)
        echo.on_avatar_failed()
        return
    echo.on_avatar_joined()

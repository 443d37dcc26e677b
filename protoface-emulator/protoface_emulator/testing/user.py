"""A user in the room, for tests of how an agent (and its avatar) handles being talked over.

`user_in(server, room)` joins a participant with a microphone track that sends
silence until told otherwise: `user.noise(0.8)` is a cough or a door (sound,
no words), `user.say(frames)` plays recorded speech. An agent session linked to
this participant hears it as it would hear a caller.

Deciding that sound is speech, and which words it holds, is the job of a VAD
and an STT, which need models or services a test may not have. Two small
stand-ins make the agent session's own turn handling run without them:

- `LevelVAD`: speech is audio above a level. It sees `noise()` and `say()`.
- `NoWordsSTT`: hears no words in anything, which is what makes an
  interruption "false" for livekit-agents (`resume_false_interruption`).

    session = listening_session()  # LevelVAD, NoWordsSTT, VAD turn handling
    async with user_in(livekit_server, room) as user:
        ...  # start the agent with RoomOptions(participant_identity=user.identity)
        user.noise(0.8)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession, APIConnectOptions, stt, utils, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from protoface_emulator.local.livekit_dev import LiveKitServer

__all__ = ["LevelVAD", "NoWordsSTT", "UserInRoom", "listening_session", "user_in"]

_RATE = 16000
_FRAME = _RATE // 50


class UserInRoom:
    """A user participant whose microphone sends silence unless told otherwise."""

    def __init__(self) -> None:
        """Not connected yet; use `user_in`."""
        self.room = rtc.Room()
        self.source = rtc.AudioSource(_RATE, 1)
        self._queue: list[bytes] = []
        self._rng = np.random.default_rng(7)

    @property
    def identity(self) -> str:
        """The user's participant identity (link the agent session to it)."""
        return self.room.local_participant.identity

    def noise(self, seconds: float, *, level: float = 0.4) -> None:
        """Make a sound with no words in it for `seconds` (from now, after what is queued)."""
        if seconds <= 0 or not 0 < level <= 1:
            raise ValueError(
                f"noise needs seconds > 0 and 0 < level <= 1, got seconds={seconds!r}, "
                f"level={level!r}"
            )
        for _ in range(round(seconds * 50)):
            samples = self._rng.uniform(-level, level, _FRAME) * 32767
            self._queue.append(samples.astype(np.int16).tobytes())

    def say(self, frames: Iterable[rtc.AudioFrame]) -> None:
        """Play recorded mono 16 kHz speech (20 ms frames, e.g. the kit's `speech()`)."""
        for frame in frames:
            if frame.sample_rate != _RATE or frame.num_channels != 1:
                raise ValueError(
                    f"the user's microphone takes mono {_RATE} Hz frames, got "
                    f"{frame.num_channels} channel(s) at {frame.sample_rate} Hz"
                )
            self._queue.append(bytes(frame.data))

    @property
    def busy(self) -> bool:
        """Whether queued sound is still being sent."""
        return bool(self._queue)

    async def _run(self) -> None:
        silence = bytes(_FRAME * 2)
        while True:
            data = self._queue.pop(0) if self._queue else silence
            samples = len(data) // 2
            await self.source.capture_frame(rtc.AudioFrame(data, _RATE, 1, samples))


@contextlib.asynccontextmanager
async def user_in(
    server: LiveKitServer, room: str, *, identity: str | None = None
) -> AsyncIterator[UserInRoom]:
    """Join `room` as a user with a microphone; leave after the block."""
    user = UserInRoom()
    me = identity or f"user-{uuid.uuid4().hex[:6]}"
    await user.room.connect(server.url, server.token(me, room))
    track = rtc.LocalAudioTrack.create_audio_track("microphone", user.source)
    await user.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    task = asyncio.create_task(user._run(), name="protoface-test-user-microphone")
    try:
        yield user
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await user.room.disconnect()


class LevelVAD(vad.VAD):
    """A VAD that calls anything louder than `threshold` speech (a stand-in for a model VAD).

    Args:
        threshold: RMS level (0..1) above which a frame is speech.
        min_speech: Seconds of speech before speech is said to start.
        min_silence: Seconds of silence before speech is said to end.
    """

    def __init__(
        self, threshold: float = 0.05, *, min_speech: float = 0.06, min_silence: float = 0.3
    ) -> None:
        """Configure the thresholds; see the class docstring."""
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.02))
        self.threshold = threshold
        self.min_speech = min_speech
        self.min_silence = min_silence

    @property
    def model(self) -> str:
        """`level`."""
        return "level"

    @property
    def provider(self) -> str:
        """`protoface-emulator`."""
        return "protoface-emulator"

    def stream(self) -> vad.VADStream:
        """A stream of VAD events for pushed frames."""
        return _LevelStream(self)


class _LevelStream(vad.VADStream):
    def __init__(self, owner: LevelVAD) -> None:
        super().__init__(owner)
        self._owner = owner

    async def _main_task(self) -> None:
        speaking = False
        speech = silence = 0.0
        samples = 0
        heard: list[rtc.AudioFrame] = []  # the speech so far (the STT transcribes it)
        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):
                continue
            data = np.frombuffer(item.data, dtype=np.int16).astype(np.float32) / 32768.0
            level = float(np.sqrt(np.mean(data**2))) if data.size else 0.0
            samples += item.samples_per_channel
            if level > self._owner.threshold:
                speech += item.duration
                silence = 0.0
            else:
                silence += item.duration
            if speech > 0:
                heard.append(item)
            if not speaking and silence == 0.0 and speech >= self._owner.min_speech:
                speaking = True
                self._send(vad.VADEventType.START_OF_SPEECH, samples, speech, silence, heard)
            self._send(vad.VADEventType.INFERENCE_DONE, samples, speech, silence, [item], speaking)
            if speaking and silence >= self._owner.min_silence:
                speaking = False
                self._send(vad.VADEventType.END_OF_SPEECH, samples, speech, silence, heard)
            if not speaking and silence >= self._owner.min_silence:
                speech = 0.0
                heard = []

    def _send(
        self,
        kind: vad.VADEventType,
        samples: int,
        speech: float,
        silence: float,
        frames: list[rtc.AudioFrame],
        speaking: bool | None = None,
    ) -> None:
        if speaking is None:
            speaking = kind == vad.VADEventType.START_OF_SPEECH
        self._event_ch.send_nowait(
            vad.VADEvent(
                type=kind,
                samples_index=samples,
                timestamp=time.time(),
                speech_duration=speech,
                silence_duration=silence,
                frames=list(frames),
                speaking=speaking,
                raw_accumulated_silence=silence,
                raw_accumulated_speech=speech,
                probability=1.0 if speaking else 0.0,
            )
        )


class NoWordsSTT(stt.STT[Any]):
    """An STT that hears no words in anything (a stand-in for an STT service).

    `calls` counts the recognitions it was asked for.
    """

    def __init__(self) -> None:
        """A non-streaming STT (the agent session segments audio with its VAD)."""
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.calls = 0

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        self.calls += 1
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text="")],
        )


def listening_session(
    *, false_interruption_timeout: float = 1.0, min_interruption: float = 0.3
) -> AgentSession[Any]:
    """An `AgentSession` that hears the user through `LevelVAD` and `NoWordsSTT`.

    Interruptions follow the VAD, and livekit-agents resumes a false one
    (`resume_false_interruption`) after `false_interruption_timeout` seconds
    without words; AEC warm-up is off, so the first seconds interrupt too.
    """
    return AgentSession(
        vad=LevelVAD(),
        stt=NoWordsSTT(),
        turn_handling={
            "turn_detection": "vad",
            "interruption": {
                "mode": "vad",
                "resume_false_interruption": True,
                "false_interruption_timeout": false_interruption_timeout,
                "min_duration": min_interruption,
            },
        },
        aec_warmup_duration=None,
    )

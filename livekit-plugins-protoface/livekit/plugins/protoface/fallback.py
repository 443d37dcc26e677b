"""The agent's own audio track in the room, for when no avatar speaks for it.

(And `DiscardAudio`, where speech goes instead when the fallback is off.)

Published on first need (the avatar lost, or never coming) and kept until the
conversation ends, so a second loss is heard at once: the listeners are
already subscribed. While an avatar speaks, the track stays silent.
"""

from __future__ import annotations

import asyncio
import contextlib

from livekit import rtc
from livekit.agents import utils
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities

from .compat import ParticipantAudioOutput, published_track_sid
from .log import logger

__all__ = ["DiscardAudio", "RoomAudio"]

_PUBLISH_TIMEOUT = 5.0  # publishing can hang on a dying room; report instead of waiting
_CLOSE_TIMEOUT = 3.0


class RoomAudio:
    """Publishes the agent's audio in its room, for the audio router to fall back to."""

    def __init__(self, room: rtc.Room, *, sample_rate: int) -> None:
        self._room = room
        self._sample_rate = sample_rate
        self._output: ParticipantAudioOutput | None = None
        self._start_task: asyncio.Task[None] | None = None
        # Made ready early (an avatar late to answer) and asked for again on
        # the loss: one track, however many ask at once.
        self._publishing = asyncio.Lock()

    async def output(self) -> AudioOutput | None:
        """The published sink, publishing it first if needed; None if that failed.

        Returns once the track is published or `_PUBLISH_TIMEOUT` passed; audio
        captured before anyone subscribes waits for a subscriber, as it does
        for an agent without an avatar.
        """
        async with self._publishing:
            return await self._publish()

    async def _publish(self) -> AudioOutput | None:
        if self._output is not None:
            return self._output
        output = ParticipantAudioOutput(
            self._room,
            sample_rate=self._sample_rate,
            num_channels=1,
            track_publish_options=rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        start = asyncio.create_task(output.start(), name="protoface-fallback-audio")
        await asyncio.wait({start}, timeout=_PUBLISH_TIMEOUT)
        if start.done() and not start.cancelled() and start.exception() is not None:
            logger.error(
                "could not publish the agent's audio to the room after losing the avatar: %s",
                start.exception(),
            )
            with contextlib.suppress(Exception):
                await output.aclose()
            return None
        if not start.done():
            logger.debug("no one subscribed to the agent's audio yet; it plays once someone does")
        self._output, self._start_task = output, start
        return output

    async def aclose(self) -> None:
        """Stop the sink and take its track down (a later avatar starts from a clean room)."""
        output, self._output = self._output, None
        start, self._start_task = self._start_task, None
        if start is not None and not start.done():
            await utils.aio.cancel_and_wait(start)
        if output is None:
            return
        try:
            # Bounded: at job shutdown the room may be going away under us, and a
            # native call on it can then wait forever; shutdown must not.
            await asyncio.wait_for(output.aclose(), _CLOSE_TIMEOUT)
            sid = published_track_sid(output)
            if sid is not None and self._room.isconnected():
                await asyncio.wait_for(
                    self._room.local_participant.unpublish_track(sid), _CLOSE_TIMEOUT
                )
        except asyncio.TimeoutError:
            logger.debug("closing the fallback audio output timed out; the room is going away")
        except Exception:
            logger.warning("failed to close the fallback audio output", exc_info=True)


class DiscardAudio(AudioOutput):
    """A sink that plays nothing: each utterance is over (interrupted) as soon as it is flushed.

    Where speech goes when the avatar is lost and `audio_fallback=False`: the
    agent session's `wait_for_playout()` must not wait for an avatar that is gone.
    """

    def __init__(self) -> None:
        """A sink that drops every frame."""
        super().__init__(
            label="ProtofaceDiscard", capabilities=AudioOutputCapabilities(pause=False)
        )
        self._open = False
        self._pending = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Drop `frame`."""
        if not self._open:
            self._open = True
            self._pending += 1
        await super().capture_frame(frame)

    def flush(self) -> None:
        """End the utterance: it is reported finished, interrupted, at once."""
        super().flush()
        if self._open:
            self._open = False
            self._finish()

    def clear_buffer(self) -> None:
        """Nothing plays: an utterance still open is over now."""
        if self._open:
            self._open = False
            self._finish()

    def _finish(self) -> None:
        while self._pending > 0:
            self._pending -= 1
            self.on_playback_finished(playback_position=0.0, interrupted=True)

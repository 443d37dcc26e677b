"""The agent's speech over data streams, with playback notices that cannot end the avatar.

livekit-agents' `DataStreamAudioReceiver` receives the agent's audio and sends the
agent `lk.playback_started` / `lk.playback_finished` RPCs. When one of those still
fails after its three quick retries (an agent too busy to acknowledge within the
SDK's bound, as on a saturated machine, or one that never registered the method),
it closes its audio channel: the runner stops and the avatar leaves the call. A
call should not lose its avatar because one notice was late.

`AgentAudioReceiver` takes the audio from a `DataStreamAudioReceiver` and sends
the notices itself, in order, each retried with backoff for up to `patience`
seconds; one the agent never takes is dropped with a warning, and the avatar goes
on. An agent that has left, or that does not handle the method, is not retried;
`lk.playback_started` is optional (an agent that does not wait for playback to
start never registers it), so once refused it is not sent to that agent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from livekit import rtc
from livekit.agents.utils import wait_for_participant
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd, DataStreamAudioReceiver

__all__ = ["NOTICE_PATIENCE", "RPC_PLAYBACK_FINISHED", "RPC_PLAYBACK_STARTED", "AgentAudioReceiver"]

logger = logging.getLogger("protoface_emulator.notices")

# The wire names of the notices, as the agent's `DataStreamAudioOutput` registers them.
RPC_PLAYBACK_STARTED: Final = "lk.playback_started"
RPC_PLAYBACK_FINISHED: Final = "lk.playback_finished"

NOTICE_PATIENCE: Final = 30.0
"""Seconds a notice is retried before it is dropped."""

_FIRST_RETRY = 0.1
_MAX_RETRY = 2.0
_UNSUPPORTED: Final = rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD
# Errors that another attempt cannot mend.
_FINAL_CODES: Final = frozenset({_UNSUPPORTED, rtc.RpcError.ErrorCode.RECIPIENT_DISCONNECTED})


class AgentAudioReceiver(AudioReceiver):
    """The agent's audio over LiveKit data streams, with notices sent by `_send_notices`.

    Args:
        room: The avatar's connected room.
        sender_identity: The agent to listen to; `None` for the first agent to join.
        patience: Seconds each notice is retried before it is dropped.
        ack_delay: Seconds to wait before each `lk.playback_started`, to be as
            late as a hosted avatar (`timing.py`); later notices wait behind it.

    A segment's end reaches the runner when its last frame is handed to the
    room's audio source, which may still hold a moment of it (`playout_ahead`,
    set once the avatar publishes): its `lk.playback_finished` is sent when
    that has been played out, so the agent is told the truth about when the
    listener heard the end.
    """

    def __init__(
        self,
        room: rtc.Room,
        sender_identity: str | None,
        *,
        patience: float = NOTICE_PATIENCE,
        ack_delay: float = 0.0,
    ) -> None:
        super().__init__()
        if patience <= 0:
            raise ValueError(f"patience must be a positive number of seconds, got {patience!r}")
        self._room = room
        self._sender_identity = sender_identity
        self._patience = patience
        self._ack_delay = ack_delay
        self._audio: DataStreamAudioReceiver | None = None
        # (method, payload, when it may be sent: time.monotonic())
        self._notices: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
        self.playout_ahead: Callable[[], float] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        # The agent does not handle lk.playback_started (it is optional: an agent
        # that does not wait for playback to start never registers it).
        self._no_started = False

    async def start(self) -> None:
        """Wait for the agent, then receive its audio and send its notices."""
        agent = await wait_for_participant(
            room=self._room,
            identity=self._sender_identity,
            kind=None if self._sender_identity else rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
        )
        audio = DataStreamAudioReceiver(self._room, sender_identity=agent.identity)
        audio.on("clear_buffer", lambda: self.emit("clear_buffer"))
        await audio.start()
        self._audio = audio
        self._sender = asyncio.create_task(
            self._send_notices(agent.identity), name="protoface-playback-notices"
        )

    def notify_playback_started(self) -> None:
        """Queue `lk.playback_started` for the agent, unless it does not take them."""
        if not self._no_started:
            self._notices.put_nowait((RPC_PLAYBACK_STARTED, "", 0.0))

    def notify_playback_finished(self, playback_position: float, interrupted: bool) -> None:
        """Queue `lk.playback_finished` (position and whether it was interrupted)."""
        payload = json.dumps({"playback_position": playback_position, "interrupted": interrupted})
        ahead = self.playout_ahead() if self.playout_ahead is not None and not interrupted else 0.0
        self._notices.put_nowait((RPC_PLAYBACK_FINISHED, payload, time.monotonic() + ahead))

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        """The agent's audio frames and segment ends."""
        if self._audio is None:
            raise RuntimeError("AgentAudioReceiver is not started (or already closed)")
        return self._audio.__aiter__()

    async def aclose(self) -> None:
        """Stop sending notices and receiving audio; idempotent."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        audio, self._audio = self._audio, None
        if audio is not None:
            await audio.aclose()

    async def _send_notices(self, agent: str) -> None:
        while True:
            method, payload, due = await self._notices.get()
            if method == RPC_PLAYBACK_STARTED and self._ack_delay > 0:
                # Here, not when queued: the finish of a short segment must not overtake it.
                await asyncio.sleep(self._ack_delay)
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await self._send(agent, method, payload)

    async def _send(self, agent: str, method: str, payload: str) -> None:
        """Deliver one notice, or give it up (logged) once it cannot be delivered."""
        give_up_at = time.monotonic() + self._patience
        delay = _FIRST_RETRY
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._room.local_participant.perform_rpc(
                    destination_identity=agent, method=method, payload=payload
                )
                return
            except rtc.RpcError as exc:
                if method == RPC_PLAYBACK_STARTED and exc.code == _UNSUPPORTED:
                    self._no_started = True
                    logger.debug("agent %s does not take %s; not sent again", agent, method)
                    return
                final = exc.code in _FINAL_CODES
                if final or time.monotonic() + delay > give_up_at:
                    self._give_up(agent, method, attempts, exc)
                    return
                logger.debug("%s to %s failed (%s); retrying", method, agent, exc.message)
            await asyncio.sleep(delay)
            delay = min(2 * delay, _MAX_RETRY)

    def _give_up(self, agent: str, method: str, attempts: int, exc: rtc.RpcError) -> None:
        # Once per method at warning level: an agent without the handler would
        # otherwise log one per utterance.
        level = logging.DEBUG if method in self._warned else logging.WARNING
        self._warned.add(method)
        logger.log(
            level,
            "agent %s did not take %s after %d attempt(s) (%s); the avatar goes on without it",
            agent,
            method,
            attempts,
            exc.message,
        )

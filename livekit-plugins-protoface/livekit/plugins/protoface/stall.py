"""Telling "the avatar stopped" from "everything stopped".

An avatar that leaves something unanswered and whose media stop is taken for
dead (`lifetime.py`). But when LiveKit itself stalls (the server paused, the
network between the agent and LiveKit gone for a few seconds), every answer
and every byte of media stops for everyone, the avatar's included, and the
avatar is no more dead than the agent. An agent without an avatar just goes
on once the stall is over; so must one with an avatar.

What the agent can see decides, not a longer timeout:

1. its own connection: a room that is not connected is a stall;
2. everyone else's media: if the other participants' tracks still arrive,
   LiveKit delivers, and the avatar's silence is its own;
3. with nobody else to judge by, LiveKit's own HTTP endpoint: a server that
   does not answer within a second stalls (a paused process still accepts the
   connection, and never answers).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection

import aiohttp
from livekit import rtc

from .log import logger

__all__ = ["STALL_PATIENCE", "StallCheck", "inbound_bytes"]

STALL_PATIENCE = 8.0
"""Seconds a stall is waited out before what the avatar left unanswered counts after all."""
SLOW_ANSWER = 0.3
"""Seconds past which LiveKit's answer to the probe means it stalled (it answers in ms)."""
_PROBE_TIMEOUT = 1.0
_POLL = 0.25


async def inbound_bytes(participant: rtc.RemoteParticipant | None) -> int | None:
    """Bytes received so far of `participant`'s tracks this agent subscribes to.

    None when it subscribes to none of them (or the participant is gone):
    then nothing can be told from them.
    """
    if participant is None:
        return None
    total: int | None = None
    for publication in list(participant.track_publications.values()):
        track = publication.track
        if track is None:
            continue
        try:
            stats = await track.get_stats()
        except Exception:
            continue
        for entry in stats:
            if entry.WhichOneof("stats") == "inbound_rtp":
                total = (total or 0) + entry.inbound_rtp.inbound.bytes_received
    return total


class StallCheck:
    """Whether LiveKit itself stalls for this agent, as opposed to one avatar.

    Args:
        room: The agent's room.
        livekit_url: The LiveKit server the room is connected to (`ws(s)://`).
    """

    def __init__(self, room: rtc.Room, livekit_url: str) -> None:
        self._room = room
        self._probe_url = _http_url(livekit_url)

    async def others_received(self, exclude: Collection[str]) -> int | None:
        """Bytes received so far from every participant but `exclude`; None if none sends."""
        total: int | None = None
        for identity, participant in list(self._room.remote_participants.items()):
            if identity in exclude:
                continue
            received = await inbound_bytes(participant)
            if received is not None:
                total = (total or 0) + received
        return total

    def probe(self) -> asyncio.Task[float]:
        """Ask LiveKit's HTTP endpoint now; the task gives the seconds it took to answer.

        Start it as the silence in question is watched: a server stalled then
        answers late (or not at all: `math.inf`) even if it recovers meanwhile.
        """
        return asyncio.create_task(self._answer_time(), name="protoface-livekit-probe")

    async def stalled(
        self, others_before: int | None, exclude: Collection[str], probe: asyncio.Task[float]
    ) -> bool:
        """Whether LiveKit stalled while `probe` ran (and the silence was watched).

        Args:
            others_before: `others_received(exclude)` when the watch began.
            exclude: The participants whose silence is in question.
            probe: `probe()`, started when the watch began.
        """
        try:
            if self._room.connection_state != rtc.ConnectionState.CONN_CONNECTED:
                return True
            after = await self.others_received(exclude)
            if others_before is not None and after is not None and after > others_before:
                return False  # LiveKit delivers everyone else's media
            return await probe >= SLOW_ANSWER
        finally:
            probe.cancel()

    async def wait_over(self, patience: float = STALL_PATIENCE) -> bool:
        """Wait until the room is connected and LiveKit answers; False after `patience` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while loop.time() < deadline:
            connected = self._room.connection_state == rtc.ConnectionState.CONN_CONNECTED
            if connected and await self._server_answers():
                return True
            await asyncio.sleep(_POLL)
        return False

    async def _answer_time(self) -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        return loop.time() - began if await self._server_answers() else math.inf

    async def _server_answers(self) -> bool:
        if self._probe_url is None:
            return True  # nothing to ask: assume it does, as before this check existed
        timeout = aiohttp.ClientTimeout(total=_PROBE_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self._probe_url, allow_redirects=False) as response,
            ):
                await response.read()
                return True  # any answer, whatever its status: the server is there
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.debug("LiveKit did not answer within %g s: %s", _PROBE_TIMEOUT, exc)
            return False


def _http_url(livekit_url: str) -> str | None:
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if livekit_url.startswith(ws):
            return http + livekit_url[len(ws) :].split("/", 1)[0] + "/"
    if livekit_url.startswith(("http://", "https://")):
        scheme, rest = livekit_url.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}/"
    return None

"""Keeping the conversation's avatars alive, and telling when one is dead.

`Liveness` runs beside the lifetime's state machine (`lifetime.py`) and only
ever acts on the avatar that speaks for the agent now, or on the spares that
wait to:

- keep-alives while the agent is quiet (the hosted idle timeout counts
  received audio), and for each spare waiting for an utterance boundary;
- the avatar's media, watched while it speaks: a stall is a hard death;
- what the avatar left unanswered (`watchdog.py` states the rule), confirmed
  against its media and against LiveKit itself (`stall.py`) before the speech
  moves to the room and the loss is declared;
- an utterance that waited long enough for a face that is not there yet:
  the agent's own track speaks it (`wait_for_avatar`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field

from .fallback import RoomAudio
from .hosted import Hosted
from .log import logger
from .output import AvatarAudioOutput
from .stall import StallCheck

__all__ = [
    "CONFIRM_WINDOW",
    "MEDIA_STALL",
    "PACE_LEAD",
    "Liveness",
    "keepalive_interval",
    "pace_lead",
]

CONFIRM_WINDOW = 0.5
"""Seconds the avatar's media are watched before what it left unanswered counts as a loss."""
RECHECK_WINDOW = 1.0
"""Seconds the avatar's media are watched again once LiveKit stalled and recovered."""
MEDIA_CHECK_INTERVAL = 0.5
MEDIA_STALL = 2.0
"""Seconds without a byte of the avatar's video or audio, while it speaks, that make it lost."""
PACE_LEAD = 2.0
"""Seconds of speech an avatar may be sent ahead of what it has played (at most)."""
_MAX_KEEPALIVE_INTERVAL = 10.0
_MIN_KEEPALIVE_INTERVAL = 0.2


def keepalive_interval(idle_timeout_seconds: int) -> float:
    """How long the agent may be silent before the avatar gets a keep-alive.

    A third of the idle timeout leaves two more chances if one is lost; at
    most 10 s, since one keep-alive costs a few hundred bytes.
    """
    return max(_MIN_KEEPALIVE_INTERVAL, min(idle_timeout_seconds / 3, _MAX_KEEPALIVE_INTERVAL))


def pace_lead(idle_timeout_seconds: int) -> float:
    """How far ahead of its playback an avatar may be sent the agent's speech.

    A few seconds absorb a network's jitter; a third of the idle timeout at
    most, so that the last audio received, the rest of the line played and the
    next keep-alive (`keepalive_interval`) fit in the timeout together.
    """
    return min(PACE_LEAD, idle_timeout_seconds / 3)


@dataclass(eq=False, repr=False, kw_only=True)
class Liveness:
    """Keeps the current avatar and the spares alive; notices when the current one dies.

    Attributes:
        output: The agent's audio sink.
        fallback: The agent's own track, if the conversation may fall back to it.
        stall: Tells a LiveKit stall from a dead avatar.
        current: The avatar that speaks for the agent now.
        spares: The avatars that joined and wait to speak.
        away_from_avatar: Moves the speech to the room (or discards it).
        spawn: Runs a background task the lifetime owns.
    """

    output: AvatarAudioOutput
    fallback: RoomAudio | None
    stall: StallCheck
    current: Callable[[], Hosted]
    spares: Callable[[], list[Hosted]]
    away_from_avatar: Callable[[], Awaitable[None]]
    spawn: Callable[[Coroutine[object, object, None], str], None]
    # When each spare last got a keep-alive (it may wait long for a boundary).
    _spare_kept: dict[str, float] = field(default_factory=dict, init=False)

    def promoted(self, hosted: Hosted) -> None:
        """`hosted` speaks for the agent now: paced for its idle timeout, no spare any more."""
        self._spare_kept.pop(hosted.session_id, None)
        self.output.pace(pace_lead(hosted.idle_timeout_seconds))

    # -- what the output reports ---------------------------------------------

    def on_unanswered(self, route: object, what: str) -> None:
        """The current avatar left `what` unanswered: confirm before declaring it lost."""
        hosted = self.current()
        if route is not hosted.route or hosted.watch.lost.done():
            return
        self.spawn(self._confirm_unanswered(hosted, what), "protoface-confirm")

    def on_suspect(self) -> None:
        """An answer is late: publish the agent's own track now, just in case."""
        if self.fallback is not None:
            self.spawn(self._ready_fallback(), "protoface-fallback-ready")

    def on_not_ready(self) -> None:
        """An utterance waited long enough for a face: the room hears it now."""
        if self.fallback is not None:
            self.spawn(self._speak_until_ready(self.current()), "protoface-speak-until-ready")

    async def _ready_fallback(self) -> None:
        assert self.fallback is not None
        await self.fallback.output()

    async def _speak_until_ready(self, hosted: Hosted) -> None:
        """The agent's own track speaks until `hosted`'s avatar is ready (it then takes over)."""
        assert self.fallback is not None
        room = await self.fallback.output()
        waiting = self.output.route is hosted.route and not hosted.watch.joined.is_set()
        if room is not None and waiting:
            self.output.switch(room, at_boundary=False, avatar=False, ready=True)

    async def _confirm_unanswered(self, hosted: Hosted, what: str) -> None:
        """Declare `hosted` lost, unless it is late, not dead.

        Late: its media still flow (a busy machine), or LiveKit itself stalls
        for everyone (the avatar is then no more dead than the agent): once the
        stall is over, its media flowing again clears it.
        """
        exclude = {hosted.identity}
        others = await self.stall.others_received(exclude)
        probe = self.stall.probe()
        try:
            flows = await _media_flows(hosted, CONFIRM_WINDOW)
        except BaseException:
            probe.cancel()
            raise
        if self._gone(hosted):
            probe.cancel()
            return
        if flows:
            probe.cancel()
        elif await self.stall.stalled(others, exclude, probe):
            logger.info("LiveKit stalls for everyone (%s went unanswered); waiting it out", what)
            flows = await self.stall.wait_over() and await _media_flows(hosted, RECHECK_WINDOW)
            if self._gone(hosted):
                return
        if flows:
            logger.info("the protoface avatar is late (%s) but its media still arrive", what)
            self.output.forgive(hosted.route)
            return
        # The room hears the agent now (what the avatar never played is
        # replayed there); the loss and its cause follow from the watch.
        hosted.watch.declare_unresponsive(what)
        await self.away_from_avatar()

    def _gone(self, hosted: Hosted) -> bool:
        return self.current() is not hosted or hosted.watch.lost.done()

    # -- loops -------------------------------------------------------------------

    async def watch_media(self) -> None:
        """While the avatar speaks, its tracks must keep arriving; a stall is a hard death.

        An avatar that dies mid-line never finishes it; waiting for the line's
        end to find out would leave the room mute for the rest of it. Its media
        stopping tells at once. Read only while it speaks, from the tracks this
        agent already subscribes to (nothing when it subscribes to none).
        """
        seen: tuple[Hosted, int] | None = None
        since = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(MEDIA_CHECK_INTERVAL)
            hosted = self.current()
            if not self.output.avatar_playing or self.output.route is not hosted.route:
                seen = None
                continue
            received = await hosted.watch.media_received()
            if received is None:
                seen = None
                continue
            if seen is None or seen[0] is not hosted or received != seen[1]:
                seen, since = (hosted, received), loop.time()
                continue
            if loop.time() - since >= MEDIA_STALL:
                self.output.report_unanswered(
                    hosted.route,
                    f"nothing received from the avatar for {MEDIA_STALL:g} s while it spoke",
                    since=since,
                )
                seen = None

    async def keep(self) -> None:
        """Keep-alives while the agent is quiet (the hosted idle timeout counts audio).

        While it speaks, the avatar is paced (`pace_lead`) and so keeps
        receiving; a spare waiting for a boundary gets keep-alives of its own.
        """
        while True:
            interval = keepalive_interval(self.current().idle_timeout_seconds)
            wait = min(interval - self.output.idle_for(), await self._keep_spares())
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
            elif not await self.output.keep_alive():
                await asyncio.sleep(min(interval, 1.0))

    async def _keep_spares(self) -> float:
        """Send a keep-alive to each spare that is due one; seconds until the next is due."""
        now = asyncio.get_running_loop().time()
        next_due = _MAX_KEEPALIVE_INTERVAL
        for spare in list(self.spares()):
            interval = keepalive_interval(spare.idle_timeout_seconds)
            last = self._spare_kept.setdefault(spare.session_id, now)
            if now - last >= interval and await self.output.keep_spare_alive(spare.route):
                last = self._spare_kept[spare.session_id] = now
            next_due = min(next_due, last + interval - now)
        return max(next_due, _MIN_KEEPALIVE_INTERVAL)


async def _media_flows(hosted: Hosted, window: float) -> bool:
    """Whether any of the avatar's media arrive within `window` seconds."""
    before = await hosted.watch.media_received()
    await asyncio.sleep(window)
    after = await hosted.watch.media_received() if before is not None else None
    return before is not None and after is not None and after > before

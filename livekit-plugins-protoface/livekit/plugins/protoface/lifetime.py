"""The avatar's lifetime over one conversation: join, keep, lose, replace, hand over.

`Lifetime` runs from the first session's creation to `aclose()`. It owns the
current `Hosted` session and moves the agent's speech between avatars and
the room through `AvatarAudioOutput`:

- the first join settles `wait_for_join()` (a failure before it too);
- `keep_alive` sends silence while the agent is quiet, so the hosted idle
  timeout only ever ends a session whose agent is gone;
- an avatar that stops answering (an utterance or keep-alive it never
  acknowledged: its worker died without leaving the room) sends speech to the
  room at once, replaying what nobody heard, and is then lost like any other;
- a loss sends speech to the room (or discards it, without fallback), emits
  `"avatar_lost"`, and, when the cause is recoverable, `recovery.replace`
  brings a replacement, switched in between utterances (`"avatar_restored"`);
- before the session cap a successor is started and takes over between
  utterances (`"avatar_handover"`); the predecessor is ended after;
- `switch()` does the same with other options, when asked (`"avatar_switched"`):
  asked during a loss or a handover, it waits its turn (the lifetime handles one
  change at a time), and a failed switch leaves the current avatar speaking.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

from livekit.agents import utils

from .errors import AvatarSessionFailedError, ProtofaceException
from .events import (
    AvatarHandoverEvent,
    AvatarLostEvent,
    AvatarRestoredEvent,
    AvatarSwitchedEvent,
    EventTypes,
)
from .fallback import RoomAudio
from .hosted import Hosted, Launcher
from .log import logger
from .monitor import Loss
from .output import AvatarAudioOutput, DiscardAudio
from .recovery import LaunchFailed, RecoveryPolicy, is_recoverable, replace
from .stall import StallCheck
from .types import TERMINAL_SESSION_STATUSES, SessionOptions

__all__ = ["Lifetime", "keepalive_interval", "pace_lead"]

CONFIRM_WINDOW = 0.5
"""Seconds the avatar's media are watched before what it left unanswered counts as a loss."""
MEDIA_CHECK_INTERVAL = 0.5
MEDIA_STALL = 2.0
"""Seconds without a byte of the avatar's video or audio, while it speaks, that make it lost."""
RECHECK_WINDOW = 1.0
"""Seconds the avatar's media are watched again once LiveKit stalled and recovered."""
_MAX_KEEPALIVE_INTERVAL = 10.0
_MIN_KEEPALIVE_INTERVAL = 0.2
PACE_LEAD = 2.0
"""Seconds of speech an avatar may be sent ahead of what it has played (at most)."""


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


class Lifetime:
    """Follows one conversation's avatar until `aclose()`."""

    def __init__(
        self,
        emit: Callable[[EventTypes, object], None],
        launcher: Launcher,
        first: Hosted,
        *,
        output: AvatarAudioOutput,
        fallback: RoomAudio | None,
        policy: RecoveryPolicy | None,
    ) -> None:
        self.current: Hosted = first
        self._emit = emit
        self._launcher = launcher
        self._output = output
        self._fallback = fallback
        self._policy = policy
        self._joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        # Replacements and successors that joined but do not speak for the agent yet.
        self._spares: list[Hosted] = []
        # The switch asked for and not yet done (one at a time), and its wake-up.
        self._switch_request: _SwitchRequest | None = None
        self._switch_wake = asyncio.Event()
        self._following = False
        self._stall = StallCheck(launcher.room, launcher.livekit_url)
        # When each spare last got a keep-alive (it may wait long for a boundary).
        self._spare_kept: dict[str, float] = {}
        output.pace(pace_lead(first.idle_timeout_seconds))
        output.watch_avatar(
            report_start=launcher.wait_playback_start,
            on_unanswered=self._on_unanswered,
            on_suspect=self._on_suspect,
            on_not_ready=self._on_not_ready,
        )

    def start(self) -> None:
        """Start following the first session."""
        self._following = True  # a switch() right after start() waits its turn
        self._spawn(self._run(), "protoface-lifetime")
        self._spawn(self._keep(), "protoface-keep")
        self._spawn(self._watch_media(), "protoface-media")

    async def first_join(self) -> None:
        """Return once the first avatar joined; raise if its session failed first."""
        await asyncio.shield(self._joined)

    async def aclose(self) -> None:
        """Stop following; the caller ends the sessions (`Launcher.aclose`)."""
        if not self._joined.done():
            self._joined.set_exception(
                ProtofaceException(
                    "AvatarSession closed (aclose()) before the avatar joined the room"
                )
            )
            self._joined.exception()  # retrieved: nobody may be waiting
        await utils.aio.cancel_and_wait(*self._tasks)
        for hosted in [self.current, *self._spares]:
            await self._launcher.retire(hosted, end=True)
        self._spares.clear()
        if self._fallback is not None:
            await self._fallback.aclose()

    # -- an avatar that stopped answering -------------------------------------

    def _on_unanswered(self, route: object, what: str) -> None:
        hosted = self.current
        if route is not hosted.route or hosted.watch.lost.done():
            return
        self._spawn(self._confirm_unanswered(hosted, what), "protoface-confirm")

    async def _confirm_unanswered(self, hosted: Hosted, what: str) -> None:
        """Declare `hosted` lost, unless it is late, not dead.

        Late: its media still flow (a busy machine), or LiveKit itself stalls
        for everyone (the avatar is then no more dead than the agent): once the
        stall is over, its media flowing again clears it.
        """
        exclude = {hosted.identity}
        others = await self._stall.others_received(exclude)
        probe = self._stall.probe()
        try:
            flows = await self._media_flows(hosted, CONFIRM_WINDOW)
        except BaseException:
            probe.cancel()
            raise
        if self.current is not hosted or hosted.watch.lost.done():
            probe.cancel()
            return
        if flows:
            probe.cancel()
        elif await self._stall.stalled(others, exclude, probe):
            logger.info("LiveKit stalls for everyone (%s went unanswered); waiting it out", what)
            flows = await self._stall.wait_over() and await self._media_flows(
                hosted, RECHECK_WINDOW
            )
            if self.current is not hosted or hosted.watch.lost.done():
                return
        if flows:
            logger.info("the protoface avatar is late (%s) but its media still arrive", what)
            self._output.forgive(hosted.route)
            return
        # The room hears the agent now (what the avatar never played is
        # replayed there); the loss and its cause follow from the watch.
        hosted.watch.declare_unresponsive(what)
        await self._away_from_avatar()

    @staticmethod
    async def _media_flows(hosted: Hosted, window: float) -> bool:
        """Whether any of the avatar's media arrive within `window` seconds."""
        before = await hosted.watch.media_received()
        await asyncio.sleep(window)
        after = await hosted.watch.media_received() if before is not None else None
        return before is not None and after is not None and after > before

    def _on_not_ready(self) -> None:
        # An utterance waited long enough for a face: the room hears it now.
        if self._fallback is not None:
            self._spawn(self._speak_until_ready(self.current), "protoface-speak-until-ready")

    async def _speak_until_ready(self, hosted: Hosted) -> None:
        """The agent's own track speaks until `hosted`'s avatar is ready (`_first_join`)."""
        assert self._fallback is not None
        room = await self._fallback.output()
        waiting = self._output.route is hosted.route and not hosted.watch.joined.is_set()
        if room is not None and waiting:
            self._output.switch(room, at_boundary=False, avatar=False, ready=True)

    def _on_suspect(self) -> None:
        # The avatar is late to acknowledge: publish the agent's own track now,
        # so that if it is gone the room hears the agent without waiting for it.
        if self._fallback is not None:
            self._spawn(self._ready_fallback(), "protoface-fallback-ready")

    async def _watch_media(self) -> None:
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
            hosted = self.current
            if not self._output.avatar_playing or self._output.route is not hosted.route:
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
                self._output.report_unanswered(
                    hosted.route,
                    f"nothing received from the avatar for {MEDIA_STALL:g} s while it spoke",
                    since=since,
                )
                seen = None

    async def _ready_fallback(self) -> None:
        assert self._fallback is not None
        await self._fallback.output()

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the conversation ------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._follow()
        except Exception:
            # A bug here must not pass silently: the conversation goes on as it is.
            logger.exception("the protoface avatar's lifetime task failed")
        finally:
            self._following = False
            self._refuse_switch("the avatar was lost and not replaced, or the session closed")

    async def _follow(self) -> None:
        hosted = self.current
        if not await self._first_join(hosted):
            return
        while True:
            loss = await self._next_change(hosted)
            if isinstance(loss, _SwitchRequest):
                successor: Hosted | None = await self._switch(hosted, loss)
            else:
                successor = await (
                    self._handover(hosted) if loss is None else self._recover(hosted, loss)
                )
            if successor is None:
                return
            hosted = successor

    async def _first_join(self, hosted: Hosted) -> bool:
        await _first_of(hosted.watch.joined.wait(), hosted.watch.lost)
        if hosted.watch.joined.is_set():
            if self._output.route is hosted.route:
                self._output.mark_route_ready(hosted.route)
            else:
                # The agent spoke on its own track while the face was coming:
                # the avatar takes over between utterances.
                self._output.switch(hosted.route, at_boundary=True, avatar=True, ready=True)
            if not self._joined.done():
                self._joined.set_result(None)
            return True
        loss = hosted.watch.lost.result()
        logger.error(
            "protoface session %s %s before its avatar joined the room (failure code: %s)%s",
            hosted.session_id,
            loss.status,
            loss.failure_code,
            f": {loss.message}" if loss.message else "",
            extra={
                "session_id": hosted.session_id,
                "failure_code": loss.failure_code,
                "status": loss.status,
            },
        )
        self._joined.set_exception(_failed_before_join(hosted, loss))
        self._joined.exception()  # retrieved: wait_for_join() may never be called
        await self._launcher.retire(hosted, end=loss.status not in TERMINAL_SESSION_STATUSES)
        # The agent's speech would otherwise wait forever for an avatar that is not coming.
        await self._away_from_avatar()
        return False

    async def _next_loss(self, hosted: Hosted) -> Loss | None:
        """The loss of `hosted`, or None when it is time to start its successor."""
        delay = self._handover_delay(hosted)
        if delay is None:
            return await asyncio.shield(hosted.watch.lost)
        try:
            return await asyncio.wait_for(asyncio.shield(hosted.watch.lost), timeout=delay)
        except asyncio.TimeoutError:
            return None

    def _handover_delay(self, hosted: Hosted) -> float | None:
        cap = hosted.cap_seconds
        if self._policy is None or cap is None:
            return None
        due = hosted.created_at + cap - self._policy.lead(cap)
        return max(0.0, due - asyncio.get_running_loop().time())

    async def _recover(self, hosted: Hosted, loss: Loss) -> Hosted | None:
        await self._announce_loss(hosted, loss)
        await self._launcher.retire(hosted, end=False)
        if loss.status not in TERMINAL_SESSION_STATUSES:
            # Ended before its replacement is created: never two billed at once.
            await self._launcher.end(hosted.session_id)
        if not self._worth_replacing(loss):
            return None
        successor = await self._replace(loss.reason)
        if successor is not None:
            await self._restore(successor, hosted, loss.reason)
        return successor

    async def _handover(self, old: Hosted) -> Hosted | None:
        if self._sessions_left() <= 0:
            return await self._recover(old, await asyncio.shield(old.watch.lost))
        logger.info(
            "protoface session %s nears its %s s cap; starting its successor",
            old.session_id,
            old.cap_seconds,
            extra={"session_id": old.session_id},
        )
        pending = asyncio.ensure_future(self._replace("handover"))
        try:
            await _first_of(pending, old.watch.lost)
        except asyncio.CancelledError:
            pending.cancel()  # closing: its session, if any, is a spare and gets ended
            raise
        if not pending.done():
            return await self._lost_during_handover(old, pending)
        new = pending.result()
        if new is None:
            return await self._recover(old, await asyncio.shield(old.watch.lost))
        self._output.switch(new.route, at_boundary=True, avatar=True, ready=True)
        await _first_of(self._output.wait_for_boundary(), old.watch.lost)
        if self._output.route is not new.route:
            # The predecessor ran out mid-utterance: the rest goes to the successor.
            self._output.switch(new.route, at_boundary=False, avatar=True, ready=True)
        self._promote(new)
        self._emit(
            "avatar_handover",
            AvatarHandoverEvent(new.session_id, new.identity, old.session_id, old.identity),
        )
        await self._launcher.retire(old, end=True)
        return new

    async def _lost_during_handover(
        self, old: Hosted, pending: asyncio.Future[Hosted | None]
    ) -> Hosted | None:
        loss = old.watch.lost.result()
        await self._announce_loss(old, loss)
        await self._launcher.retire(old, end=loss.status not in TERMINAL_SESSION_STATUSES)
        if not self._worth_replacing(loss):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                late = await pending
                if late is not None:
                    self._spares.remove(late)
                    self._output.forget_spare(late.route)
                    await self._launcher.retire(late, end=True)
            return None
        new = await pending
        if new is not None:
            await self._restore(new, old, loss.reason)
        return new

    # -- steps -----------------------------------------------------------------

    async def _announce_loss(self, hosted: Hosted, loss: Loss) -> None:
        logger.warning(
            "lost the protoface avatar: session %s is %s (reason: %s)%s",
            hosted.session_id,
            loss.status,
            loss.reason,
            "; the agent's audio goes to the room directly" if self._fallback else "",
            extra={"session_id": hosted.session_id, "reason": loss.reason, "status": loss.status},
        )
        # Before the event, so a handler's next utterance is already heard.
        await self._away_from_avatar()
        self._emit("avatar_lost", AvatarLostEvent(hosted.session_id, loss.reason, loss.status))

    async def _away_from_avatar(self) -> None:
        """Speech to the room now; without fallback, dropped (nothing may wait on a lost avatar)."""
        room = await self._fallback.output() if self._fallback is not None else None
        if room is not None:
            self._output.switch(room, at_boundary=False, avatar=False, ready=True)
        elif self._fallback is None:
            self._output.switch(DiscardAudio(), at_boundary=False, avatar=False, ready=True)

    def _worth_replacing(self, loss: Loss) -> bool:
        if self._policy is None:
            return False
        if not is_recoverable(loss.reason):
            logger.info("not replacing the protoface avatar: %s is not recoverable", loss.reason)
            return False
        return True

    def _sessions_left(self) -> int:
        assert self._policy is not None
        return self._policy.max_sessions - len(self._launcher.created)

    async def _replace(self, why: str) -> Hosted | None:
        assert self._policy is not None
        return await replace(
            self._launch_joined, policy=self._policy, sessions_left=self._sessions_left, why=why
        )

    async def _launch_joined(self, attempt: int, options: SessionOptions | None = None) -> Hosted:
        """A new session whose avatar publishes video, or an exception (having ended it)."""
        hosted = await self._launcher.launch(options)
        try:
            await asyncio.wait_for(
                _first_of(hosted.watch.joined.wait(), hosted.watch.lost),
                timeout=self._policy.join_timeout if self._policy else _SWITCH_JOIN_TIMEOUT,
            )
            if not hosted.watch.joined.is_set():
                loss = hosted.watch.lost.result()
                raise LaunchFailed(loss.reason, f"session {hosted.session_id} {loss.status}")
        except BaseException:
            await asyncio.shield(self._launcher.retire(hosted, end=True))
            raise
        self._spares.append(hosted)
        return hosted

    async def _restore(self, new: Hosted, lost: Hosted, reason: str) -> None:
        self._output.switch(new.route, at_boundary=True, avatar=True, ready=True)
        await self._output.wait_for_boundary()
        self._promote(new)
        logger.info(
            "protoface avatar restored: session %s replaces %s (lost: %s)",
            new.session_id,
            lost.session_id,
            reason,
            extra={"session_id": new.session_id},
        )
        self._emit(
            "avatar_restored",
            AvatarRestoredEvent(new.session_id, new.identity, lost.session_id, reason),
        )

    def _promote(self, hosted: Hosted) -> None:
        """`hosted` speaks for the agent now."""
        if hosted in self._spares:
            self._spares.remove(hosted)
        self._spare_kept.pop(hosted.session_id, None)
        self.current = hosted
        self._output.pace(pace_lead(hosted.idle_timeout_seconds))

    # -- switching to other options, when asked ---------------------------------

    async def switch(self, options: SessionOptions) -> AvatarSwitchedEvent:
        """Put an avatar created with `options` in place of the current one.

        It joins and publishes video while the current one still speaks; the
        agent's speech moves to it between utterances; the current session is
        ended after. Asked during a loss or a handover, it starts once that is
        over. Cancelling the caller does not stop a switch already under way.

        Raises:
            ProtofaceException: Another switch is under way, the lifetime is
                over, or the new avatar could not be started (the current one
                goes on speaking; the cause is chained).
        """
        if not self._following:
            raise ProtofaceException(
                f"cannot switch to avatar {options.avatar_id!r}: the conversation has no "
                "avatar any more (it was lost and not replaced, or the session closed)"
            )
        if self._switch_request is not None:
            raise ProtofaceException(
                f"cannot switch to avatar {options.avatar_id!r}: a switch to "
                f"{self._switch_request.options.avatar_id!r} is under way; await it first"
            )
        request = _SwitchRequest(options, asyncio.get_running_loop().create_future())
        self._switch_request = request
        self._switch_wake.set()
        return await asyncio.shield(request.done)

    async def _next_change(self, hosted: Hosted) -> Loss | _SwitchRequest | None:
        """The loss of `hosted`, a switch asked for, or None when its successor is due.

        A loss wins over a switch asked at the same time; the switch then waits
        for the next turn.
        """
        if self._switch_request is not None:
            return self._switch_request
        change = asyncio.ensure_future(self._next_loss(hosted))
        wake = asyncio.ensure_future(self._switch_wake.wait())
        try:
            await asyncio.wait({change, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            if not change.done():
                change.cancel()  # it only waits on a shield of `lost`
        if change.done() and not change.cancelled():
            return change.result()
        return self._switch_request

    async def _switch(self, old: Hosted, request: _SwitchRequest) -> Hosted | None:
        self._switch_wake.clear()
        pending = asyncio.ensure_future(self._launch_joined(0, request.options))
        try:
            await _first_of(pending, old.watch.lost)
        except asyncio.CancelledError:
            pending.cancel()  # closing: its session, if any, is a spare and gets ended
            raise
        if not pending.done():
            return await self._lost_during_switch(old, pending, request)
        error = pending.exception()
        if error is not None:
            self._fail_switch(request, error, old)
            return old
        new = pending.result()
        self._output.switch(new.route, at_boundary=True, avatar=True, ready=True)
        await _first_of(self._output.wait_for_boundary(), old.watch.lost)
        if self._output.route is not new.route:
            # The old avatar went away mid-utterance: the rest goes to the new one.
            self._output.switch(new.route, at_boundary=False, avatar=True, ready=True)
        self._switched(new, old, request)
        self._retire_after_overlap(old)
        return new

    def _retire_after_overlap(self, old: Hosted) -> None:
        """End `old` a moment after the switch, in the background.

        The new avatar publishes video before the speech moves to it, but a
        viewer needs a moment to subscribe to its track and decode a first
        frame: leaving the old face up meanwhile keeps the video gap-free.
        """

        async def later() -> None:
            try:
                await asyncio.sleep(_SWITCH_OVERLAP)
            finally:
                # Also when closing: the old session is ended either way.
                await asyncio.shield(self._launcher.retire(old, end=True))

        task = asyncio.create_task(later(), name=f"protoface-retire-{old.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lost_during_switch(
        self, old: Hosted, pending: asyncio.Future[Hosted], request: _SwitchRequest
    ) -> Hosted | None:
        """The current avatar was lost while the new one was starting: that one replaces it."""
        loss = old.watch.lost.result()
        await self._announce_loss(old, loss)
        await self._launcher.retire(old, end=loss.status not in TERMINAL_SESSION_STATUSES)
        try:
            new = await pending
        except Exception as exc:
            self._fail_switch(request, exc, old)
            if not self._worth_replacing(loss):
                return None
            successor = await self._replace(loss.reason)
            if successor is not None:
                await self._restore(successor, old, loss.reason)
            return successor
        self._output.switch(new.route, at_boundary=True, avatar=True, ready=True)
        await self._output.wait_for_boundary()
        self._switched(new, old, request)
        return new

    def _switched(self, new: Hosted, old: Hosted, request: _SwitchRequest) -> None:
        self._promote(new)
        # Replacements and successors from now on render the new avatar.
        self._launcher.adopt(request.options)
        event = AvatarSwitchedEvent(
            session_id=new.session_id,
            avatar_identity=new.identity,
            avatar_id=request.options.avatar_id,
            previous_session_id=old.session_id,
            previous_identity=old.identity,
            previous_avatar_id=old.options.avatar_id if old.options else "",
        )
        logger.info(
            "protoface avatar switched: session %s (%s) replaces %s (%s)",
            new.session_id,
            event.avatar_id,
            old.session_id,
            event.previous_avatar_id,
            extra={"session_id": new.session_id},
        )
        self._switch_request = None
        self._emit("avatar_switched", event)
        if not request.done.done():
            request.done.set_result(event)

    def _fail_switch(self, request: _SwitchRequest, error: BaseException, kept: Hosted) -> None:
        self._switch_request = None
        logger.warning(
            "switching the protoface avatar to %s failed (%s); session %s goes on",
            request.options.avatar_id,
            error,
            kept.session_id,
            extra={"session_id": kept.session_id},
        )
        if not request.done.done():
            failure = ProtofaceException(
                f"switching to avatar {request.options.avatar_id!r} failed: {error}; the "
                f"current avatar (session {kept.session_id}) goes on speaking"
            )
            failure.__cause__ = error
            request.done.set_exception(failure)

    def _refuse_switch(self, why: str) -> None:
        request, self._switch_request = self._switch_request, None
        if request is not None and not request.done.done():
            request.done.set_exception(
                ProtofaceException(f"cannot switch to avatar {request.options.avatar_id!r}: {why}")
            )

    async def _keep(self) -> None:
        """Keep-alives while the agent is quiet (the hosted idle timeout counts audio).

        While it speaks, the avatar is paced (`pace_lead`) and so keeps
        receiving; a spare waiting for a boundary gets keep-alives of its own.
        """
        while True:
            interval = keepalive_interval(self.current.idle_timeout_seconds)
            wait = min(interval - self._output.idle_for(), await self._keep_spares())
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
            elif not await self._output.keep_alive():
                await asyncio.sleep(min(interval, 1.0))

    async def _keep_spares(self) -> float:
        """Send a keep-alive to each spare that is due one; seconds until the next is due."""
        now = asyncio.get_running_loop().time()
        next_due = _MAX_KEEPALIVE_INTERVAL
        for spare in list(self._spares):
            interval = keepalive_interval(spare.idle_timeout_seconds)
            last = self._spare_kept.setdefault(spare.session_id, now)
            if now - last >= interval and await self._output.keep_spare_alive(spare.route):
                last = self._spare_kept[spare.session_id] = now
            next_due = min(next_due, last + interval - now)
        return max(next_due, _MIN_KEEPALIVE_INTERVAL)


# How long a switch's avatar may take to publish video when recovery (and with
# it `RecoveryPolicy.join_timeout`) is off.
_SWITCH_JOIN_TIMEOUT = 30.0
# How long the old avatar stays in the room after a switch moved the speech
# away from it (billed, silent): the time a viewer takes to show the new one.
_SWITCH_OVERLAP = 1.0


@dataclass
class _SwitchRequest:
    """A `switch()` waiting for its turn, and where its outcome goes."""

    options: SessionOptions
    done: asyncio.Future[AvatarSwitchedEvent]


async def _first_of(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` is done; the waits made here for coroutines are cancelled.

    Futures passed in (a session's `lost`, a pending replacement) are never
    cancelled: they belong to someone else.
    """
    owned: list[asyncio.Future[object]] = []
    futures: list[asyncio.Future[object]] = []
    for aw in aws:
        if isinstance(aw, asyncio.Future):
            futures.append(aw)
        else:
            made: asyncio.Future[object] = asyncio.ensure_future(aw)
            owned.append(made)
            futures.append(made)
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for made in owned:
            made.cancel()


def _failed_before_join(hosted: Hosted, loss: Loss) -> AvatarSessionFailedError:
    detail = loss.failure_code or loss.reason
    return AvatarSessionFailedError(
        f"Protoface session {hosted.session_id} {loss.status} before its avatar joined the "
        f"room ({detail})" + (f": {loss.message}" if loss.message else ""),
        session_id=hosted.session_id,
        status=loss.status,
        failure_code=loss.failure_code,
    )

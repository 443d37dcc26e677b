"""The avatar's lifetime over one conversation: a state machine a reader can see.

`Lifetime` runs from the first session's creation to `aclose()`. It owns the
avatar that speaks for the agent (`current`) and moves the agent's speech
between avatars and the room through `AvatarAudioOutput`. Its states:

    joining --joined--> speaking --(loss | cap near | switch asked)--> ...
    joining --failed--> over (speech to the room; `wait_for_join()` raises)

and from `speaking`, one change at a time (`_follow`):

- a loss (`_recover`): speech to the room (or discarded, without fallback),
  `"avatar_lost"`, the session ended, and, when the cause is recoverable, a
  replacement (`recovery.replace`) takes over between utterances
  (`"avatar_restored"`); otherwise: over;
- the session cap near, or `switch()` asked (`_move`): a new avatar is started
  while the current one speaks, then takes over between utterances
  (`"avatar_handover"`, `"avatar_switched"`), and the old one is ended. The
  current avatar lost while the new one starts is handled once, for both, in
  `_lost_while_starting`: the loss is announced and the new avatar, if it
  comes, is the replacement. A switch that fails leaves the current avatar.

Keeping the avatars alive and noticing a dead one is `liveness.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from livekit.agents import utils

from .errors import ProtofaceException
from .events import (
    AvatarHandoverEvent,
    AvatarLostEvent,
    AvatarRestoredEvent,
    AvatarSwitchedEvent,
    EventTypes,
)
from .fallback import DiscardAudio, RoomAudio
from .hosted import Hosted, Launcher
from .liveness import Liveness, keepalive_interval, pace_lead
from .log import logger
from .monitor import Loss
from .output import AvatarAudioOutput
from .recovery import LaunchFailed, RecoveryPolicy, is_recoverable, replace
from .stall import StallCheck
from .switching import SwitchDesk, SwitchRequest
from .types import TERMINAL_SESSION_STATUSES, SessionOptions
from .waiting import first_of

__all__ = ["Lifetime", "keepalive_interval", "pace_lead"]


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
        self._desk = SwitchDesk()
        self._liveness = Liveness(
            output=output,
            fallback=fallback,
            stall=StallCheck(launcher.room, launcher.livekit_url),
            current=lambda: self.current,
            spares=lambda: self._spares,
            away_from_avatar=self._away_from_avatar,
            spawn=self._spawn,
        )
        self._liveness.promoted(first)
        output.watch_avatar(
            report_start=launcher.wait_playback_start,
            on_unanswered=self._liveness.on_unanswered,
            on_suspect=self._liveness.on_suspect,
            on_not_ready=self._liveness.on_not_ready,
        )

    def start(self) -> None:
        """Start following the first session."""
        self._desk.open = True  # a switch() right after start() waits its turn
        self._spawn(self._run(), "protoface-lifetime")
        self._spawn(self._liveness.keep(), "protoface-keep")
        self._spawn(self._liveness.watch_media(), "protoface-media")

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

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the states ------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._follow()
        except Exception:
            # A bug here must not pass silently: the conversation goes on as it is.
            logger.exception("the protoface avatar's lifetime task failed")
        finally:
            self._desk.close("the avatar was lost and not replaced, or the session closed")

    async def _follow(self) -> None:
        hosted = self.current
        if not await self._first_join(hosted):
            return
        while True:
            loss = await self._next_change(hosted)
            if isinstance(loss, SwitchRequest):
                successor: Hosted | None = await self._move(hosted, _Change(loss))
            elif loss is None:
                successor = await self._move(hosted, _Change(None))
            else:
                successor = await self._recover(hosted, loss)
            if successor is None:
                return
            hosted = successor

    async def _first_join(self, hosted: Hosted) -> bool:
        await first_of(hosted.watch.joined.wait(), hosted.watch.lost)
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
        self._joined.set_exception(loss.error(hosted.session_id))
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
        return await self._restore(hosted, loss.reason)

    # -- a new avatar while the current one speaks: handover and switch ---------

    async def _move(self, old: Hosted, change: _Change) -> Hosted | None:
        """Start a new avatar beside `old`, then hand it the speech between utterances."""
        if change.request is not None:
            self._desk.serving()
            logger.debug("switching the protoface avatar to %s", change.request.options.avatar_id)
        elif self._sessions_left() <= 0:
            return await self._recover(old, await asyncio.shield(old.watch.lost))
        else:
            logger.info(
                "protoface session %s nears its %s s cap; starting its successor",
                old.session_id,
                old.cap_seconds,
                extra={"session_id": old.session_id},
            )
        pending = asyncio.ensure_future(self._start_new(change))
        try:
            await first_of(pending, old.watch.lost)
        except asyncio.CancelledError:
            pending.cancel()  # closing: its session, if any, is a spare and gets ended
            raise
        if not pending.done():
            return await self._lost_while_starting(old, pending, change)
        error = pending.exception()
        new = None if error is not None else pending.result()
        if new is None:
            if change.request is not None:
                self._desk.failed(error or LaunchFailed("switch", "no avatar"), old.session_id)
                return old
            # No successor: the predecessor runs out, then is recovered like any loss.
            return await self._recover(old, await asyncio.shield(old.watch.lost))
        await self._take_over(new, old)
        if change.request is not None:
            self._switched(new, old, change.request)
            self._retire_after_overlap(old)
        else:
            self._promote(new)
            self._emit(
                "avatar_handover",
                AvatarHandoverEvent(new.session_id, new.identity, old.session_id, old.identity),
            )
            await self._launcher.retire(old, end=True)
        return new

    async def _start_new(self, change: _Change) -> Hosted | None:
        if change.request is not None:
            return await self._launch_joined(0, change.request.options)
        return await self._replace("handover")

    async def _lost_while_starting(
        self, old: Hosted, pending: asyncio.Future[Hosted | None], change: _Change
    ) -> Hosted | None:
        """`old` was lost while its successor or switch target started: that one replaces it."""
        loss = old.watch.lost.result()
        await self._announce_loss(old, loss)
        await self._launcher.retire(old, end=loss.status not in TERMINAL_SESSION_STATUSES)
        worth = self._worth_replacing(loss)
        if change.request is None and not worth:
            await self._drop(pending)
            return None
        try:
            new = await pending
        except Exception as exc:
            assert change.request is not None  # a successor's start does not raise
            self._desk.failed(exc, old.session_id)
            return await self._restore(old, loss.reason) if worth else None
        if new is None:
            return None
        await self._take_over(new)
        if change.request is not None:
            self._switched(new, old, change.request)
        else:
            self._restored(new, old, loss.reason)
        return new

    async def _drop(self, pending: asyncio.Future[Hosted | None]) -> None:
        """Stop starting an avatar nobody needs; end it if it joined meanwhile."""
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            late = await pending
            if late is not None:
                self._spares.remove(late)
                self._output.forget_spare(late.route)
                await self._launcher.retire(late, end=True)

    async def _take_over(self, new: Hosted, old: Hosted | None = None) -> None:
        """The speech moves to `new` between utterances (at once if `old` is lost meanwhile)."""
        self._output.switch(new.route, at_boundary=True, avatar=True, ready=True)
        if old is None:
            await self._output.wait_for_boundary()
            return
        await first_of(self._output.wait_for_boundary(), old.watch.lost)
        if self._output.route is not new.route:
            # The old avatar went away mid-utterance: the rest goes to the new one.
            self._output.switch(new.route, at_boundary=False, avatar=True, ready=True)

    async def _restore(self, lost: Hosted, reason: str) -> Hosted | None:
        """A replacement for `lost`, speaking between utterances; None if none came."""
        new = await self._replace(reason)
        if new is not None:
            await self._take_over(new)
            self._restored(new, lost, reason)
        return new

    def _restored(self, new: Hosted, lost: Hosted, reason: str) -> None:
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
        self.current = hosted
        self._liveness.promoted(hosted)

    # -- switching to other options, when asked ---------------------------------

    async def switch(self, options: SessionOptions) -> AvatarSwitchedEvent:
        """Put an avatar created with `options` in place of the current one.

        It joins and publishes video while the current one still speaks; the
        agent's speech moves to it between utterances; the current session is
        ended after. Asked during a loss or a handover, it starts once that is
        over. Cancelling the caller does not stop a switch already under way.
        See `SwitchDesk.ask` for what it raises.
        """
        return await self._desk.ask(options)

    async def _next_change(self, hosted: Hosted) -> Loss | SwitchRequest | None:
        """The loss of `hosted`, a switch asked for, or None when its successor is due.

        A loss wins over a switch asked at the same time; the switch then waits
        for the next turn.
        """
        if self._desk.request is not None:
            return self._desk.request
        change = asyncio.ensure_future(self._next_loss(hosted))
        wake = asyncio.ensure_future(self._desk.wait())
        try:
            await asyncio.wait({change, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            if not change.done():
                change.cancel()  # it only waits on a shield of `lost`
        if change.done() and not change.cancelled():
            return change.result()
        return self._desk.request

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

    def _switched(self, new: Hosted, old: Hosted, request: SwitchRequest) -> None:
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
        self._emit("avatar_switched", event)
        self._desk.done(event)

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
                first_of(hosted.watch.joined.wait(), hosted.watch.lost),
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


@dataclass
class _Change:
    """A new avatar while the current one speaks: a switch asked for, or (None) a successor."""

    request: SwitchRequest | None


# How long a switch's avatar may take to publish video when recovery (and with
# it `RecoveryPolicy.join_timeout`) is off.
_SWITCH_JOIN_TIMEOUT = 30.0
# How long the old avatar stays in the room after a switch moved the speech
# away from it (billed, silent): the time a viewer takes to show the new one.
_SWITCH_OVERLAP = 1.0

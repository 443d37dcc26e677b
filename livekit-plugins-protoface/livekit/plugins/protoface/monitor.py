"""Watching one hosted session and its avatar participant: joined, lost, and why.

The room is authoritative for presence: the avatar's video track appearing is
"joined", its participant leaving is a loss, checked with one quick read of
the session to learn why. The API is read every 0.25 s until the avatar
joins (so a failed start is reported within seconds), then only every
`poll_interval` (the room already tells of a departure).

An avatar can also die without leaving: its worker killed or its machine gone,
its participant stays in the room until LiveKit times it out (~20 s). The
audio output notices first (an utterance or keep-alive the avatar never
acknowledged) and calls `declare_unresponsive()`: one quick read of the
session says why (`worker_crashed`, say), the API refusing connections says
`protoface_unreachable`, and an API that still thinks it runs says
`avatar_unresponsive`. Either way the loss is settled within a second.

The agent does not keep receiving its avatar's video: nothing here needs it
(the track's publication says "joined"; while the avatar speaks, its audio says
it lives), and decoding it more than doubled the CPU the avatar adds to the
agent's process. Each video track of the avatar is
unsubscribed once, as it is published; an agent that subscribes to it again
(`publication.set_subscribed(True)`) keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import APIConnectOptions, APIError

from .api import ProtofaceAPI
from .errors import AvatarSessionFailedError, ProtofaceAPIError, ProtofaceException
from .log import logger
from .retry import should_retry
from .stall import inbound_bytes
from .types import TERMINAL_SESSION_STATUSES, SessionResource, end_reason_of, failure_of

__all__ = [
    "REASON_AVATAR_LEFT",
    "REASON_NOT_FOUND",
    "REASON_UNREACHABLE",
    "REASON_UNRESPONSIVE",
    "Loss",
    "SessionWatch",
]

REASON_AVATAR_LEFT = "avatar_left_room"
REASON_UNREACHABLE = "protoface_unreachable"
REASON_NOT_FOUND = "session_not_found"
REASON_UNRESPONSIVE = "avatar_unresponsive"

JOIN_POLL_INTERVAL = 0.25
_LEFT_GRACE = 2.0  # lets the session record why the avatar left the room
_LEFT_POLL = 0.4
_MAX_POLL_BACKOFF = 30.0
# After a departure the answer is needed within the 3 s budget: one quick try.
_QUICK_READ = APIConnectOptions(max_retry=0, timeout=1.5, retry_interval=0.0)
# An avatar that stopped answering: the agent is already heard in the room; the
# read only names the cause, within the 3 s that `avatar_lost` is promised in.
_UNRESPONSIVE_READ = APIConnectOptions(max_retry=0, timeout=0.8, retry_interval=0.0)


@dataclass(frozen=True)
class Loss:
    """Why a watched session is over for the conversation.

    Attributes:
        reason: The session's `failure.code`, else its end reason, else
            `avatar_left_room`, `protoface_unreachable` or `session_not_found`,
            else its status.
        status: The session status last read (`unknown` when it could not be).
        joined: Whether the avatar had joined the room before.
        failure_code: The session's `failure.code`, if it failed.
        message: The session's `failure.message`, if any.
    """

    reason: str
    status: str
    joined: bool
    failure_code: str | None = None
    message: str | None = None

    def error(self, session_id: str) -> AvatarSessionFailedError:
        """The error `wait_for_join()` raises when session `session_id` ended before joining."""
        detail = self.failure_code or self.reason
        return AvatarSessionFailedError(
            f"Protoface session {session_id} {self.status} before its avatar joined the "
            f"room ({detail})" + (f": {self.message}" if self.message else ""),
            session_id=session_id,
            status=self.status,
            failure_code=self.failure_code,
        )


class SessionWatch:
    """Watches one session until it is lost; `lost` then holds the `Loss`."""

    def __init__(
        self,
        api: ProtofaceAPI,
        session_id: str,
        *,
        room: rtc.Room,
        identity: str,
        poll_interval: float,
    ) -> None:
        self.session_id = session_id
        self.identity = identity
        self.joined = asyncio.Event()
        self.lost: asyncio.Future[Loss] = asyncio.get_running_loop().create_future()
        self.last_seen: SessionResource | None = None
        self._api = api
        self._room = room
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._left_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._unresponsive: asyncio.Task[None] | None = None
        self._video_dropped: set[str] = set()  # the avatar's video tracks, unsubscribed once

    def start(self) -> None:
        """Begin watching (idempotent)."""
        if self._task is not None:
            return
        self._room.on("participant_disconnected", self._on_disconnected)
        self._room.on("track_published", self._on_track_published)
        avatar = self._room.remote_participants.get(self.identity)
        for publication in avatar.track_publications.values() if avatar else ():
            self._drop_video(publication)
        self._task = asyncio.create_task(self._run(), name=f"protoface-watch-{self.session_id}")

    async def aclose(self) -> None:
        """Stop watching; leaves `lost` unresolved if it was not lost."""
        self._room.off("participant_disconnected", self._on_disconnected)
        self._room.off("track_published", self._on_track_published)
        for task in (self._task, self._unresponsive):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._unresponsive = None
        if not self.lost.done():
            self.lost.cancel()

    def check_now(self) -> None:
        """Read the session at once rather than at the next poll."""
        self._wake.set()

    async def media_received(self) -> int | None:
        """Bytes received so far of the avatar's tracks this agent subscribes to.

        None when it subscribes to none of them (an agent that connected with
        `AutoSubscribe.AUDIO_ONLY`, say): then nothing can be told from them.
        """
        return await inbound_bytes(self._room.remote_participants.get(self.identity))

    def declare_unresponsive(self, what: str) -> None:
        """The avatar stopped answering (`what` went unanswered): settle the loss, with its cause.

        One quick read of the session names the cause; the loss is settled
        whatever the read gives (an API that still reports the session running
        cannot see a worker whose machine is gone).
        """
        if self.lost.done() or self._unresponsive is not None:
            return
        self._unresponsive = asyncio.create_task(
            self._settle_unresponsive(what), name=f"protoface-unresponsive-{self.session_id}"
        )

    async def _settle_unresponsive(self, what: str) -> None:
        joined = self.joined.is_set()
        try:
            session = await self._api.get_session(self.session_id, conn_options=_UNRESPONSIVE_READ)
        except ProtofaceAPIError as exc:
            reason = REASON_NOT_FOUND if exc.status_code == 404 else REASON_UNRESPONSIVE
            self._settle(Loss(reason, "unknown", joined, message=what))
            return
        except (APIError, ProtofaceException):
            self._settle(Loss(REASON_UNREACHABLE, "unknown", joined, message=what))
            return
        self.last_seen = session
        status = session.get("status")
        status = status if isinstance(status, str) else "unknown"
        failure_code, message = failure_of(session)
        if status in TERMINAL_SESSION_STATUSES or status == "ending":
            reason = failure_code or end_reason_of(session) or status
            self._settle(Loss(reason, status, joined, failure_code, message or what))
            return
        self._settle(Loss(REASON_UNRESPONSIVE, status, joined, message=what))

    # -- room events -------------------------------------------------------

    def _on_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self.identity:
            return
        if self._left_at is None:
            self._left_at = asyncio.get_running_loop().time()
        self._wake.set()

    def _on_track_published(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if participant.identity == self.identity and self._drop_video(publication):
            self._mark_joined()

    def _drop_video(self, publication: rtc.RemoteTrackPublication) -> bool:
        """Stop receiving an avatar's track if it is video, once per track (see the module).

        Returns whether it is video.
        """
        if publication.kind != rtc.TrackKind.KIND_VIDEO:
            return False
        if publication.sid not in self._video_dropped:
            self._video_dropped.add(publication.sid)
            publication.set_subscribed(False)
        return True

    def _present_with_video(self) -> bool:
        participant = self._room.remote_participants.get(self.identity)
        return participant is not None and any(
            pub.kind == rtc.TrackKind.KIND_VIDEO for pub in participant.track_publications.values()
        )

    def _mark_joined(self) -> None:
        if not self.joined.is_set():
            self.joined.set()
            self._wake.set()

    # -- the loop ------------------------------------------------------------

    async def _run(self) -> None:
        backoff: float | None = None
        failures = 0
        while not self.lost.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff or self._interval())
            self._wake.clear()
            if self._present_with_video():
                self._mark_joined()
            quick = self._left_at is not None
            try:
                session = await self._api.get_session(
                    self.session_id, conn_options=_QUICK_READ if quick else None
                )
            except (APIError, ProtofaceException) as exc:
                failures += 1
                if self._unreadable(exc):
                    return
                backoff = _next_backoff(exc, backoff or self._interval())
                _log_poll_failure(self.session_id, failures, exc)
                continue
            backoff, failures = None, 0
            self._read(session)

    def _interval(self) -> float:
        if self._left_at is not None:
            return _LEFT_POLL
        if not self.joined.is_set():
            return min(self._poll_interval, JOIN_POLL_INTERVAL)
        return self._poll_interval

    def _unreadable(self, exc: Exception) -> bool:
        """Settle the loss if `exc` means the session cannot be read; True if settled."""
        status = exc.status_code if isinstance(exc, ProtofaceAPIError) else None
        if status is not None and not should_retry(status):
            if status == 404:
                self._settle(Loss(REASON_NOT_FOUND, "unknown", self.joined.is_set()))
            else:
                logger.warning(
                    "stopped watching protoface session %s: %s",
                    self.session_id,
                    exc,
                    extra={"session_id": self.session_id},
                )
                if self._left_at is not None:
                    self._settle(Loss(REASON_AVATAR_LEFT, "unknown", self.joined.is_set()))
            return True
        if self._left_at is not None and self.joined.is_set():
            # The avatar is gone and Protoface cannot say why: the room is enough.
            self._settle(Loss(REASON_UNREACHABLE, "unknown", True))
            return True
        return False

    def _read(self, session: SessionResource) -> None:
        self.last_seen = session
        status = session.get("status")
        status = status if isinstance(status, str) else "unknown"
        if not self.joined.is_set() and (session.get("first_frame_at") or status == "running"):
            # Protoface reports the avatar publishing: joined, even if this
            # process has not seen the participant yet.
            self._mark_joined()
        joined = self.joined.is_set()
        failure_code, message = failure_of(session)
        if status in TERMINAL_SESSION_STATUSES:
            reason = failure_code or end_reason_of(session) or status
            self._settle(Loss(reason, status, joined, failure_code, message))
            return
        left_at = self._left_at
        if left_at is None or not joined:
            return
        if status != "ending" and asyncio.get_running_loop().time() - left_at < _LEFT_GRACE:
            return  # give the session a moment to say why
        reason = end_reason_of(session) or REASON_AVATAR_LEFT
        self._settle(Loss(reason, status, joined, failure_code, message))

    def _settle(self, loss: Loss) -> None:
        if not self.lost.done():
            self.lost.set_result(loss)


def _next_backoff(exc: Exception, interval: float) -> float:
    retry_after = exc.retry_after if isinstance(exc, ProtofaceAPIError) else None
    return min(retry_after or interval * 2, _MAX_POLL_BACKOFF)


def _log_poll_failure(session_id: str, failures: int, exc: Exception) -> None:
    # One blip is noise; a run of them means the avatar's state is unknown.
    log = logger.warning if failures == 3 else logger.debug
    log(
        "could not check protoface session %s (%d in a row): %s",
        session_id,
        failures,
        exc,
        extra={"session_id": session_id},
    )

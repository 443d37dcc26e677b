"""A viewer: a real LiveKit participant that watches an avatar and measures its mouth.

The `avatar_viewer` fixture, the end-to-end tests, the offline demo and the
benchmarks all look at the avatar the way a person in the room would: through the
video and audio tracks that the avatar publishes. This module subscribes to them
and keeps, per received video frame, how much the mouth region moved and whether
the mouth is open, and per received audio frame, how loud it was, each tagged with
the identity it came from. It knows where the mouth is from `face.mouth_box`, and
what a closed mouth looks like from `face.FaceRenderer`. The `wait_for_*` methods
wait for what a test expects to see or hear, with a deadline, and say what was
received when it does not come.

Which participants it watches: by default every participant that publishes on an
agent's behalf (the `lk.publish_on_behalf` attribute, as LiveKit's frontends pair
an agent with its avatar), so it follows the avatar through replacements
(`protoface-avatar-agent-2`, ...), handovers and switches, as a person in the
room would; with `agent_identity`, only those speaking for that agent; with
`avatar_identity`, exactly that one participant (any participant: a test may
watch the agent's own fallback track this way).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from livekit import rtc

from protoface_emulator.local.livekit_dev import LiveKitServer
from protoface_emulator.testing.png import contact_sheet, write_png
from protoface_emulator.testing.samples import (
    HEARD_LEVEL,
    MOUTH_OPEN_THRESHOLD,
    AudioSample,
    VideoSample,
    describe_video,
    read_audio,
    read_video,
    samples_since,
)
from protoface_emulator.testing.waiting import eventually

# The participant attribute an avatar worker carries to say which agent it speaks
# for (livekit-agents' `ATTRIBUTE_PUBLISH_ON_BEHALF`; the literal keeps this module
# free of livekit-agents, whose import costs seconds).
PUBLISH_ON_BEHALF = "lk.publish_on_behalf"

__all__ = [
    "AVATAR_IDENTITY",
    "HEARD_LEVEL",
    "MOUTH_OPEN_THRESHOLD",
    "PUBLISH_ON_BEHALF",
    "AudioSample",
    "AvatarViewer",
    "VideoSample",
    "viewer_in",
]

AVATAR_IDENTITY = "protoface-avatar-agent"
"""The identity the plugin's first avatar joins with unless told otherwise (its
replacements and successors join as `protoface-avatar-agent-2`, `-3`, ...)."""


@dataclass
class AvatarViewer:
    """Subscribes to the avatar's video and audio and measures what arrives.

    Connect it with `connect(url, token)` (or use `viewer_in`, or the
    `avatar_viewer` fixture); everything received is kept in `video` and `audio`,
    each sample naming the `identity` it came from.

    "The avatar" is whichever avatar speaks for the agent: by default the viewer
    records every participant that publishes on an agent's behalf, one after the
    other through replacements, handovers and switches, and its waits count frames
    from any of them (at any moment the agent speaks through one; during a
    handover its predecessor shows a closed mouth until it leaves).
    `current_identity` names the one that joined last and is still there; pass
    `identity=` to a wait to count one avatar's frames only, and use
    `wait_for_new_avatar()` to wait for a replacement's first frames.

    Args:
        avatar_identity: Watch exactly this participant (and no other) instead of
            following avatars; any participant, e.g. the agent itself for its
            fallback audio track.
        keep_every: Keep a full RGB copy of every Nth video frame in `snapshots`
            (0 keeps none), for contact sheets.
        agent_identity: Follow only the avatars publishing on this agent's behalf
            (default: on any agent's behalf).
    """

    avatar_identity: str | None = None
    keep_every: int = 0
    agent_identity: str | None = None
    room: rtc.Room = field(default_factory=rtc.Room)
    video: list[VideoSample] = field(default_factory=list)
    audio: list[AudioSample] = field(default_factory=list)
    snapshots: list[tuple[float, npt.NDArray[np.uint8]]] = field(default_factory=list)
    video_size: tuple[int, int] | None = None
    avatars: list[str] = field(default_factory=list)
    """Identities whose video arrived, in the order their first frame did."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _by_track: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _first_video: asyncio.Event = field(default_factory=asyncio.Event)
    _left: set[str] = field(default_factory=set)
    _joined: list[str] = field(default_factory=list)  # followed participants, by arrival

    async def connect(self, url: str, token: str) -> None:
        """Join the room and start recording the avatar's tracks once they appear."""
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("track_unsubscribed", self._on_track_unsubscribed)
        self.room.on("participant_attributes_changed", self._on_attributes_changed)
        self.room.on("participant_connected", self._on_participant_connected)
        self.room.on("participant_disconnected", self._on_participant_disconnected)
        await self.room.connect(url, token)
        for participant in self.room.remote_participants.values():
            self._arrived(participant)

    def follows(self, participant: rtc.Participant) -> bool:
        """Whether this viewer records `participant`'s tracks (see the class docstring)."""
        if self.avatar_identity is not None:
            return participant.identity == self.avatar_identity
        on_behalf = participant.attributes.get(PUBLISH_ON_BEHALF)
        if not on_behalf:
            return False
        return self.agent_identity is None or on_behalf == self.agent_identity

    @property
    def watching(self) -> str:
        """Who this viewer watches, in words (failure messages use it)."""
        if self.avatar_identity is not None:
            return repr(self.avatar_identity)
        if self.agent_identity is not None:
            return f"the avatars of {self.agent_identity!r}"
        return "the avatars of any agent"

    @property
    def current_identity(self) -> str | None:
        """The followed participant that joined last and is still in the room, or None.

        That is the avatar speaking for the agent once the agent has moved its
        speech to it (right away after a replacement; between utterances in a
        handover). It is known as soon as LiveKit says it joined, before its
        first frame arrives.
        """
        for identity in reversed(self._joined):
            if identity not in self._left:
                return identity
        return None

    @property
    def first_video_at(self) -> float | None:
        """`time.monotonic()` when the first avatar video frame arrived, if one has."""
        return self.video[0].received_at if self.video else None

    @property
    def room_name(self) -> str:
        """The name of the room the viewer joined."""
        return self.room.name

    @property
    def mouth_open_frames(self) -> int:
        """How many received video frames show the mouth open."""
        return sum(1 for s in self.video if s.mouth_open)

    def describe(self) -> str:
        """What arrived so far, in one line (failure messages use it)."""
        seen = describe_video(self.video, self.avatars, left=self._left, watching=self.watching)
        return (
            f"{seen}; {self.audio_seconds(min_level=HEARD_LEVEL):.2f} s of speech heard "
            f"({self.audio_seconds():.2f} s of audio); "
            f"in the room: {sorted(self.room.remote_participants)}"
        )

    async def wait_first_video(self, timeout: float) -> float:
        """Wait for the first avatar video frame; returns its arrival time.

        Raises:
            AssertionError: No frame arrived within `timeout` seconds.
        """
        try:
            await asyncio.wait_for(self._first_video.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"no video from {self.watching} within {timeout:g} s "
                f"(participants in the room: {sorted(self.room.remote_participants)})"
            ) from None
        assert self.video
        return self.video[0].received_at

    async def wait_for_video(
        self, *, timeout: float = 30.0, since: float | None = None, identity: str | None = None
    ) -> str:
        """Wait until the avatar's video arrives; returns the identity it came from.

        Args:
            timeout: Seconds to wait.
            since: Count only frames received from this `time.monotonic()` on
                (default: any frame, so it returns at once once video has come).
            identity: Count only this avatar's frames.

        Raises:
            AssertionError: No such frame arrived within `timeout` seconds.
        """
        start = -math.inf if since is None else since
        what = "video" + (f" from {identity!r}" if identity else "")
        await self.wait_until(
            lambda: self._video_since(start, identity), timeout=timeout, what=what
        )
        return self._video_since(start, identity)[0].identity

    async def wait_for_new_avatar(
        self, *, other_than: Iterable[str] | None = None, timeout: float = 60.0
    ) -> str:
        """Wait for video from another avatar; returns its identity.

        After `"avatar_restored"` or `"avatar_handover"` this is the replacement
        or successor showing up, as a person in the room sees it. Its video may
        have arrived before the event did: name the avatars it must differ from.

        Args:
            other_than: Identities that do not count (default: the avatars whose
                video had arrived when called).
            timeout: Seconds to wait.

        Raises:
            AssertionError: No other avatar's video arrived within `timeout` seconds.
        """
        known = set(self.avatars if other_than is None else other_than)

        def newcomers() -> list[str]:
            return [who for who in self.avatars if who not in known]

        await self.wait_until(
            newcomers, timeout=timeout, what=f"video from an avatar other than {sorted(known)}"
        )
        return newcomers()[0]

    async def wait_for_mouth_open(
        self, *, timeout: float = 15.0, since: float | None = None, identity: str | None = None
    ) -> None:
        """Wait for a frame, received from now on, that shows the mouth open.

        Args:
            timeout: Seconds to wait.
            since: Count frames received from this `time.monotonic()` on instead
                (e.g. taken just before the agent started speaking).
            identity: Count only this avatar's frames (default: any avatar's).

        Raises:
            AssertionError: None arrived within `timeout` seconds.
        """
        start = time.monotonic() if since is None else since
        await self.wait_until(
            lambda: any(s.mouth_open for s in self._video_since(start, identity)),
            timeout=timeout,
            what="the mouth to open" + (f" at {identity!r}" if identity else ""),
        )

    async def wait_for_mouth_closed(
        self,
        *,
        frames: int = 10,
        timeout: float = 15.0,
        since: float | None = None,
        identity: str | None = None,
    ) -> None:
        """Wait until `frames` consecutive frames, received from now on, show it closed.

        A mouth that is still moving keeps the wait going; one that has settled
        ends it as soon as enough frames arrived.

        Args:
            frames: How many consecutive closed frames count as closed.
            timeout: Seconds to wait.
            since: Count frames received from this `time.monotonic()` on instead.
            identity: Count only this avatar's frames (default: any avatar's, so
                every avatar in the room must show its mouth closed).

        Raises:
            AssertionError: The mouth did not stay closed that long within `timeout`.
        """
        start = time.monotonic() if since is None else since

        def settled() -> bool:
            recent = self._video_since(start, identity)[-frames:]
            return len(recent) == frames and not any(s.mouth_open for s in recent)

        await self.wait_until(
            settled, timeout=timeout, what=f"the mouth to stay closed for {frames} frames"
        )

    async def wait_for_audio(
        self,
        seconds: float,
        *,
        min_level: float = HEARD_LEVEL,
        timeout: float = 15.0,
        since: float | None = None,
        identity: str | None = None,
    ) -> None:
        """Wait until `seconds` of avatar audio louder than `min_level` were heard in all.

        Args:
            seconds: Seconds of speech to wait for.
            min_level: Audio at or below this level (0..1) does not count.
            timeout: Seconds to wait.
            since: Count audio received from this `time.monotonic()` on only.
            identity: Count only this avatar's audio (default: any avatar's).

        Raises:
            AssertionError: Not that much arrived within `timeout` seconds.
        """
        await self.wait_until(
            lambda: (
                self.audio_seconds(min_level=min_level, since=since, identity=identity) >= seconds
            ),
            timeout=timeout,
            what=f"{seconds:g} s of speech from the avatar"
            + (f" {identity!r}" if identity else ""),
        )

    async def wait_until(
        self, condition: Callable[[], object], *, timeout: float, what: str = "the condition"
    ) -> None:
        """Wait until `condition()` holds; the failure says what the viewer received.

        Raises:
            AssertionError: It did not hold within `timeout` seconds.
        """
        await eventually(
            condition,
            timeout=timeout,
            message=lambda: f"waited {timeout:g} s for {what}: {self.describe()}",
        )

    def save_contact_sheet(self, path: Path | str, *, columns: int = 6) -> Path:
        """Write the kept snapshots (see `keep_every`) as one PNG; returns its path.

        Raises:
            ValueError: No snapshot was kept (`keep_every` is 0 or no video came).
        """
        if not self.snapshots:
            raise ValueError("no snapshots kept: create the viewer with keep_every=N (N > 0)")
        out = Path(path)
        write_png(out, contact_sheet([rgb for _, rgb in self.snapshots], columns=columns))
        return out

    def _video_since(self, since: float, identity: str | None = None) -> list[VideoSample]:
        return samples_since(self.video, since, identity)

    def video_between(self, start: float, end: float) -> list[VideoSample]:
        """The video frames that arrived within [start, end)."""
        return [s for s in self.video if start <= s.received_at < end]

    def audio_seconds(
        self,
        *,
        min_level: float = 0.0,
        since: float | None = None,
        identity: str | None = None,
    ) -> float:
        """Seconds of avatar audio received (louder than `min_level` when given).

        Args:
            min_level: Count only frames louder than this (0..1).
            since: Count only audio received from this `time.monotonic()` on.
            identity: Count only this avatar's audio.
        """
        start = -math.inf if since is None else since
        heard = samples_since(self.audio, start, identity)
        return sum(s.duration for s in heard if s.level > min_level)

    async def aclose(self) -> None:
        """Stop recording and leave the room."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.room.disconnect()

    def _on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if self.follows(participant):
            self._record(track, participant.identity)

    def _on_attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        # A participant may start speaking for an agent after its tracks arrived.
        if not isinstance(participant, rtc.RemoteParticipant) or not self.follows(participant):
            return
        self._arrived(participant)
        for publication in participant.track_publications.values():
            if publication.track is not None:
                self._record(publication.track, participant.identity)

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self._arrived(participant)
        self._left.discard(participant.identity)  # the same identity may come back

    def _arrived(self, participant: rtc.RemoteParticipant) -> None:
        if not self.follows(participant):
            return
        if participant.identity in self._joined:
            if participant.identity not in self._left:
                return  # known and still here (an attribute change)
            self._joined.remove(participant.identity)  # back again: the latest now
        self._joined.append(participant.identity)

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self._left.add(participant.identity)

    def _record(self, track: rtc.Track, identity: str) -> None:
        if track.sid in self._by_track:
            return
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self._spawn(track.sid, self._record_video(track, identity))
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(track.sid, self._record_audio(track, identity))

    def _on_track_unsubscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        # A stream left reading a track that is gone can be handed another
        # track's frames by the native SDK (seen when an avatar left and a
        # successor joined): stop reading it, so nothing is counted twice.
        task = self._by_track.pop(track.sid, None)
        if task is not None:
            task.cancel()

    def _spawn(self, sid: str, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        self._by_track[sid] = task
        task.add_done_callback(self._tasks.discard)

    async def _record_video(self, track: rtc.Track, identity: str) -> None:
        index = 0
        async for sample, rgba in read_video(track, identity):
            self.video_size = (rgba.shape[1], rgba.shape[0])
            if identity not in self.avatars:
                self.avatars.append(identity)
            self.video.append(sample)
            if self.keep_every and index % self.keep_every == 0:
                self.snapshots.append((sample.received_at, rgba[:, :, :3].copy()))
            index += 1
            self._first_video.set()

    async def _record_audio(self, track: rtc.Track, identity: str) -> None:
        async for sample in read_audio(track, identity):
            self.audio.append(sample)


@asynccontextmanager
async def viewer_in(
    server: LiveKitServer,
    room: str,
    avatar_identity: str | None = None,
    *,
    keep_every: int = 0,
    identity: str | None = None,
    agent_identity: str | None = None,
) -> AsyncIterator[AvatarViewer]:
    """A viewer participant in `room` on `server`, following the avatar (see `AvatarViewer`).

    It joins before the block runs and leaves after it.

    Args:
        server: The LiveKit server to join.
        room: The room to join (created by the server on first join).
        avatar_identity: Watch exactly this participant instead of following
            every avatar that speaks for an agent.
        keep_every: Keep every Nth video frame for `save_contact_sheet`.
        identity: The viewer's own identity; a fresh `viewer-…` one by default.
        agent_identity: Follow only the avatars speaking for this agent.
    """
    viewer = AvatarViewer(
        avatar_identity=avatar_identity, keep_every=keep_every, agent_identity=agent_identity
    )
    me = identity or f"viewer-{uuid.uuid4().hex[:6]}"
    await viewer.connect(server.url, server.token(me, room))
    try:
        yield viewer
    finally:
        await viewer.aclose()

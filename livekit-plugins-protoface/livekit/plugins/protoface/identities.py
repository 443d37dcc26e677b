"""Which LiveKit identity each avatar of a conversation joins as, beside other agents.

An avatar participant speaks for one agent: its token carries
`lk.publish_on_behalf` = that agent's identity, which is how frontends pair
them. LiveKit drops the older of two participants with the same identity, so
two agents whose avatars both took the published default would knock each
other's avatars out, and each would replace its own, again and again. Hence:

- an agent alone in its room keeps the published default,
  `protoface-avatar-agent` (existing frontends look for it), and its
  successors `protoface-avatar-agent-2`, `-3`, ...;
- an agent that meets another agent in the room (at `start()`, or before any
  later session) takes `protoface-avatar-agent-for-<its identity>`, which no
  other agent can take, for the sessions it starts from then on;
- no identity held by a participant speaking for another agent is ever used,
  and an explicit `avatar_participant_identity` held so is refused.

An agent usually starts its avatar before its room is connected (the
quickstart's order: `avatar.start()`, then `session.start()` connects), so
its room lists nobody yet; `survey()` then asks LiveKit's API who is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from livekit import api, rtc
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

from .errors import ProtofaceValueError
from .log import logger

__all__ = ["DEFAULT_AVATAR_IDENTITY", "AvatarIdentities", "removable_identity", "speaks_for"]

DEFAULT_AVATAR_IDENTITY = "protoface-avatar-agent"
_SURVEY_TIMEOUT = 3.0


@dataclass(frozen=True)
class _Present:
    """A participant in the room: its identity, whether it is an agent, whom it speaks for."""

    identity: str
    agent: bool
    owner: str | None


def speaks_for(participant: rtc.Participant) -> str | None:
    """The agent `participant` publishes on behalf of, if it is an avatar."""
    return participant.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) or None


class AvatarIdentities:
    """The identities one agent's avatars join as, generation by generation.

    Args:
        room: The agent's room.
        agent_identity: The agent's own identity.
        explicit: The `avatar_participant_identity` the user chose, if any
            (then it is kept, whoever else is in the room).
    """

    def __init__(self, room: rtc.Room, agent_identity: str, explicit: str | None) -> None:
        self._room = room
        self._agent = agent_identity
        self._explicit = explicit
        self._base = explicit or DEFAULT_AVATAR_IDENTITY
        self._used: set[str] = set()
        self._surveyed: list[_Present] | None = None  # LiveKit's list, before the room connects

    async def survey(
        self, list_participants: Callable[[], Awaitable[list[api.ParticipantInfo]]]
    ) -> None:
        """Learn who is in the room from LiveKit's API when the room is not connected yet.

        A failure is logged and leaves the room's own (empty) list in use.
        """
        if self._room.isconnected():
            return
        try:
            infos = await asyncio.wait_for(list_participants(), _SURVEY_TIMEOUT)
        except Exception as exc:
            logger.warning(
                "could not list the room's participants to pick the avatar's identity: %s", exc
            )
            return
        self._surveyed = [
            _Present(
                info.identity,
                info.kind == api.ParticipantInfo.Kind.AGENT,
                info.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF) or None,
            )
            for info in infos
        ]

    def _present(self) -> Iterator[_Present]:
        """Everyone else in the room: from the room once connected, else from the survey."""
        if self._room.isconnected() or self._surveyed is None:
            for participant in list(self._room.remote_participants.values()):
                yield _Present(
                    participant.identity,
                    participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
                    speaks_for(participant),
                )
        else:
            yield from self._surveyed

    @property
    def base(self) -> str:
        """The identity of the first avatar; later ones add `-2`, `-3`, ..."""
        return self._base

    def choose(self) -> str:
        """Check an explicit identity, and pick the first avatar's for the room as it is now.

        Raises:
            ProtofaceValueError: See `check_explicit`.
        """
        self.check_explicit()
        self._rebase()
        return self._base

    def _rebase(self) -> None:
        # Another agent here: from now on, identities no other agent can take.
        if self._explicit is None and self._base == DEFAULT_AVATAR_IDENTITY and self._shared():
            self._base = f"{DEFAULT_AVATAR_IDENTITY}-for-{self._agent}"

    def check_explicit(self) -> None:
        """Refuse an explicit identity that another agent's avatar holds now.

        Raises:
            ProtofaceValueError: It is held; the message names it, the other
                agent, and the fix.
        """
        if self._explicit is None:
            return
        other = self._held_for_another(self._explicit)
        if other is not None:
            raise ProtofaceValueError(
                f"avatar_participant_identity {self._explicit!r} is the identity of the avatar "
                f"speaking for agent {other!r} in room {self._room.name!r}; give each agent's "
                "avatar an identity of its own, or leave avatar_participant_identity unset "
                "(each agent then gets one)",
                param="avatar_participant_identity",
            )

    def for_generation(self, generation: int) -> str:
        """The identity of the conversation's `generation`-th avatar (1-based).

        Never one already used by this conversation, nor one that a participant
        speaking for another agent holds.
        """
        self._rebase()
        candidate = self._base if generation <= 1 else f"{self._base}-{generation}"
        extra = 1
        while candidate in self._used or self._held_for_another(candidate) is not None:
            extra += 1
            candidate = f"{self._base}-{generation}-{extra}"
        self._used.add(candidate)
        return candidate

    def _shared(self) -> bool:
        """Whether another agent is in the room, or an avatar speaking for one."""
        for present in self._present():
            if present.identity == self._agent:
                continue
            if present.owner is not None:
                if present.owner != self._agent:
                    return True
            elif present.agent:
                return True
        return False

    def _held_for_another(self, identity: str) -> str | None:
        for present in self._present():
            if present.identity == identity:
                owner = present.owner
                return owner if owner is not None and owner != self._agent else None
        return None


def removable_identity(room: rtc.Room, agent_identity: str, identity: str) -> str:
    """`identity` if removing it from `room` removes this agent's avatar; else one nobody holds.

    The base class removes the participant named by `avatar_identity` at
    close: it must never be another agent's avatar.
    """
    participant = room.remote_participants.get(identity)
    owner = speaks_for(participant) if participant is not None else None
    if owner is None or owner == agent_identity:
        return identity
    logger.warning(
        "the avatar identity %r now speaks for agent %r; it is not removed from the room",
        identity,
        owner,
    )
    return f"{identity}-released"

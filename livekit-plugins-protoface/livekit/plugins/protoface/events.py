"""Events an `AvatarSession` emits about its avatar's lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AvatarHandoverEvent",
    "AvatarLostEvent",
    "AvatarRestoredEvent",
    "AvatarSwitchedEvent",
    "EventTypes",
]

EventTypes = Literal[
    "avatar_lost", "avatar_restored", "avatar_handover", "avatar_switched", "avatar_usage"
]


@dataclass(frozen=True)
class AvatarLostEvent:
    """Emitted as `"avatar_lost"` when an avatar that had joined is gone.

    By then the agent's speech goes to the room itself (unless
    `audio_fallback=False`), and a replacement is on its way when the cause
    is recoverable (see `"avatar_restored"`).

    Attributes:
        session_id: The Protoface session id.
        reason: Why: the session's `failure.code` when it failed (e.g.
            `worker_lost`), else `metadata["_avatar.end_reason"]`
            (`end_requested`, `max_duration_reached`, `idle_timeout`), else
            `avatar_left_room` when the avatar left while the session still
            ran, `avatar_unresponsive` when it stopped answering without
            leaving (no acknowledgement of an utterance or keep-alive) while
            the API still reported it running, `protoface_unreachable` when
            it left or stopped answering and the API could not be reached,
            `session_not_found` when the API no longer knows the session,
            else the session status.
        status: The session status when the loss was noticed (`unknown` when
            the API could not be read).
    """

    session_id: str
    reason: str
    status: str


@dataclass(frozen=True)
class AvatarRestoredEvent:
    """Emitted as `"avatar_restored"` when a replacement avatar speaks for the agent again.

    The agent's speech was switched to it between utterances, once it
    published video.

    Attributes:
        session_id: The replacement's Protoface session id.
        avatar_identity: The replacement's participant identity.
        previous_session_id: The session that was lost.
        reason: Why that one was lost (as in `AvatarLostEvent.reason`).
    """

    session_id: str
    avatar_identity: str
    previous_session_id: str
    reason: str


@dataclass(frozen=True)
class AvatarHandoverEvent:
    """Emitted as `"avatar_handover"` when a successor took over before the session cap.

    The successor joined and published video while the predecessor still
    spoke; the agent's speech moved to it between utterances, and the
    predecessor was ended. No `"avatar_lost"` comes with a handover.

    Attributes:
        session_id: The successor's session id.
        avatar_identity: The successor's participant identity.
        previous_session_id: The predecessor's session id (now ended).
        previous_identity: The predecessor's participant identity.
    """

    session_id: str
    avatar_identity: str
    previous_session_id: str
    previous_identity: str


@dataclass(frozen=True)
class AvatarSwitchedEvent:
    """Emitted as `"avatar_switched"` when `AvatarSession.switch()` put a new avatar in place.

    The new session joined and published video while the previous one still
    spoke; the agent's speech moved to it between utterances, then the previous
    session was ended. From now on replacements and handovers use the new
    options.

    Attributes:
        session_id: The new Protoface session id.
        avatar_identity: The new avatar participant's identity.
        avatar_id: The avatar it renders.
        previous_session_id: The session switched away from (now ended).
        previous_identity: Its participant identity.
        previous_avatar_id: The avatar it rendered.
    """

    session_id: str
    avatar_identity: str
    avatar_id: str
    previous_session_id: str
    previous_identity: str
    previous_avatar_id: str

"""Minting the avatar worker's LiveKit token, for every session of a conversation.

The LiveKit API secret stays in this object (never in a repr, a log or a
request): each hosted session, the first and every replacement, gets a fresh
short-lived token, because the first one has long expired by the time a
replacement joins an hour into the call.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from livekit import api, rtc
from livekit.agents import NotGivenOr, get_job_context
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

from .errors import ProtofaceException, ProtofaceValueError
from .validation import (
    LIVEKIT_URL_SCHEMES,
    check_nonblank,
    check_secret,
    check_url,
    resolve_setting,
)

__all__ = ["WorkerTokens", "worker_tokens_for"]


@dataclass(frozen=True, eq=False, kw_only=True)
class WorkerTokens:
    """Mints least-privilege tokens for avatar workers joining one room.

    Its repr names the room and the agent only: never the key pair.
    """

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    room_name: str
    agent_identity: str
    ttl: datetime.timedelta = field(repr=False)

    async def participants(self, livekit_url: str) -> list[api.ParticipantInfo]:
        """Who is in the room now, asked of LiveKit's API (the agent may not be connected yet).

        Signed with this key pair as a room admin of this one room, for this call only.
        """
        async with api.LiveKitAPI(livekit_url, self.api_key, self.api_secret) as lk:
            answer = await lk.room.list_participants(
                api.ListParticipantsRequest(room=self.room_name)
            )
        return list(answer.participants)

    def mint(self, *, identity: str, name: str) -> str:
        """A token for a worker joining as `identity`, publishing on the agent's behalf."""
        # Least privilege: join this one room and publish/subscribe/data; no
        # admin, create, list or record grants.
        grants = api.VideoGrants(
            room_join=True,
            room=self.room_name,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
        )
        return (
            api.AccessToken(api_key=self.api_key, api_secret=self.api_secret)
            .with_kind("agent")
            .with_identity(identity)
            .with_name(name)
            .with_grants(grants)
            .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: self.agent_identity})
            .with_ttl(self.ttl)
            .to_jwt()
        )


def worker_tokens_for(
    room: rtc.Room,
    *,
    livekit_url: NotGivenOr[str | None],
    livekit_api_key: NotGivenOr[str | None],
    livekit_api_secret: NotGivenOr[str | None],
    avatar_identity: str,
    ttl: datetime.timedelta,
) -> tuple[str, WorkerTokens]:
    """The LiveKit URL the worker joins, and a minter for its tokens in `room`.

    Arguments win over `LIVEKIT_URL`, `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET`.

    Raises:
        ProtofaceException: A setting is missing, or the room's name or the
            agent's identity is not known yet.
        ProtofaceValueError: A setting is malformed, or the avatar would take
            the agent's own identity.
    """
    url = resolve_setting(livekit_url, "LIVEKIT_URL")
    key = resolve_setting(livekit_api_key, "LIVEKIT_API_KEY")
    secret = resolve_setting(livekit_api_secret, "LIVEKIT_API_SECRET")
    settings = (("LIVEKIT_URL", url), ("LIVEKIT_API_KEY", key), ("LIVEKIT_API_SECRET", secret))
    missing = [name for name, value in settings if not value]
    if missing or url is None or key is None or secret is None:
        raise ProtofaceException(
            f"missing LiveKit settings: {', '.join(missing)}; pass livekit_url, "
            f"livekit_api_key and livekit_api_secret to start() or set the "
            f"environment variables"
        )
    check_url(url, "livekit_url", LIVEKIT_URL_SCHEMES, env_name="LIVEKIT_URL")
    check_nonblank(key, "livekit_api_key")
    check_secret(secret, "livekit_api_secret")
    agent_identity = _agent_identity(room)
    if agent_identity == avatar_identity:
        raise ProtofaceValueError(
            f"avatar_participant_identity {agent_identity!r} is the agent's own "
            f"identity; give the avatar a different one",
            param="avatar_participant_identity",
        )
    tokens = WorkerTokens(
        api_key=key,
        api_secret=secret,
        room_name=_room_name(room),
        agent_identity=agent_identity,
        ttl=ttl,
    )
    return url, tokens


def _room_name(room: rtc.Room) -> str:
    if room.name:
        return room.name
    # Before ctx.connect() the room has no name yet; the job knows it.
    job_ctx = get_job_context(required=False)
    if job_ctx is not None and job_ctx.job.room.name:
        return job_ctx.job.room.name
    raise ProtofaceException(
        "the room has no name yet: connect it (await ctx.connect()) before "
        "AvatarSession.start(), or start it inside a job"
    )


def _agent_identity(room: rtc.Room) -> str:
    """Who the avatar speaks for: the agent `room` is connected as.

    The room's own participant first: a job that joins its room a second time,
    as a second agent, starts that agent's avatar with the second connection,
    and the avatar must publish on its behalf, not the job's. Before
    `ctx.connect()` the room has no participant yet, and the job's token names
    the agent.
    """
    identity: str | None = None
    if room.isconnected():
        identity = room.local_participant.identity
    job_ctx = get_job_context(required=False)
    if not identity and job_ctx is not None:
        try:
            identity = job_ctx.local_participant_identity
        except Exception:
            # e.g. a console or fake job without a room token
            identity = None
    if not identity:
        raise ProtofaceException(
            "failed to get local participant identity: start the avatar inside a job "
            "or with a connected room, so the avatar can publish on the agent's behalf"
        )
    return identity

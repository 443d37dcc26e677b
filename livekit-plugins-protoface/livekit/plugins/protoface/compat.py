"""Every touch of livekit-agents internals, in one place.

Each helper names the upstream behaviour it relies on (livekit-agents 1.8.x);
`tests/plugin/test_compat.py` fails loudly if an upgrade removes one, instead
of the plugin breaking silently in a call. Nothing else in the package reaches
into another library's private names.
"""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents.voice.avatar import DataStreamAudioOutput

# `_ParticipantAudioOutput` is the sink RoomIO publishes the agent's audio with.
# `livekit.agents.voice.room_io` lists it in `__all__` but keeps the leading
# underscore; it is what an agent without an avatar speaks through, so the
# fallback uses it rather than a second implementation of track publishing.
from livekit.agents.voice.room_io import _ParticipantAudioOutput as ParticipantAudioOutput

__all__ = [
    "ParticipantAudioOutput",
    "published_track_sid",
    "stop_waiting_for_avatar",
]


def stop_waiting_for_avatar(output: DataStreamAudioOutput) -> asyncio.Task[None] | None:
    """The task a `DataStreamAudioOutput` uses to wait for its avatar, if it still runs.

    `DataStreamAudioOutput` has no close method. Its first `capture_frame`
    (or the room connecting) starts `_start_atask`, which waits for the
    destination participant and its video track forever; an output whose avatar
    never comes, or is gone, must have that task cancelled by its owner, or it
    outlives the conversation.

    Returns:
        The pending task, for the caller to cancel; None when it is done or absent.
    """
    task = getattr(output, "_start_atask", None)
    if isinstance(task, asyncio.Task) and not task.done():
        return task
    return None


def published_track_sid(output: ParticipantAudioOutput) -> str | None:
    """The sid of the track a `_ParticipantAudioOutput` published, if it did.

    `_ParticipantAudioOutput.aclose()` stops forwarding but leaves its track
    (`_publication`) published; taking it down is the owner's job.
    """
    publication = getattr(output, "_publication", None)
    if isinstance(publication, rtc.LocalTrackPublication):
        return publication.sid
    return None

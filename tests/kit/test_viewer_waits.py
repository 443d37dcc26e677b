"""The viewer's waits, fed frames by hand: what they wait for, and what they say on failure.

No room here (frames are appended as the recorder would); following avatars in a
real room is pinned by examples/testing/test_recovery.py and tests/kit/test_follow.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from protoface_emulator.testing import AudioSample, AvatarViewer, VideoSample
from protoface_emulator.testing.viewer import MOUTH_OPEN_THRESHOLD, PUBLISH_ON_BEHALF

OPEN = MOUTH_OPEN_THRESHOLD + 10
CLOSED = 0.0


async def _feed(viewer: AvatarViewer, openness: list[float], every: float = 0.01) -> None:
    for value in openness:
        await asyncio.sleep(every)
        viewer.video.append(VideoSample(time.monotonic(), 0.0, value))


async def test_mouth_open_counts_only_frames_from_the_call_or_since_on() -> None:
    viewer = AvatarViewer()
    viewer.video.append(VideoSample(time.monotonic(), 0.0, OPEN))  # before the wait
    with pytest.raises(AssertionError, match=r"the mouth to open: 1 video frames .* 1 with"):
        await viewer.wait_for_mouth_open(timeout=0.2)
    await viewer.wait_for_mouth_open(timeout=0.2, since=viewer.video[0].received_at)
    feeding = asyncio.create_task(_feed(viewer, [CLOSED, CLOSED, OPEN]))
    await viewer.wait_for_mouth_open(timeout=5)
    await feeding


async def test_mouth_closed_needs_that_many_consecutive_closed_frames() -> None:
    viewer = AvatarViewer()
    feeding = asyncio.create_task(_feed(viewer, [CLOSED] * 4 + [OPEN] + [CLOSED] * 4))
    with pytest.raises(AssertionError, match="stay closed for 5 frames"):
        await viewer.wait_for_mouth_closed(frames=5, timeout=0.5)
    await feeding
    feeding = asyncio.create_task(_feed(viewer, [CLOSED] * 5))
    await viewer.wait_for_mouth_closed(frames=5, timeout=5)
    await feeding


async def test_audio_wait_counts_only_speech_louder_than_the_level() -> None:
    viewer = AvatarViewer()
    now = time.monotonic()
    viewer.audio += [AudioSample(now, 0.5, 0.01), AudioSample(now, 0.5, 0.2)]
    await viewer.wait_for_audio(0.5, timeout=0.2)
    with pytest.raises(AssertionError, match=r"1 s of speech.*0\.50 s of speech heard"):
        await viewer.wait_for_audio(1.0, timeout=0.2)


class _Participant:
    """Stands in for a remote participant: `follows` reads only these two fields."""

    def __init__(self, identity: str, attributes: dict[str, str] | None = None) -> None:
        self.identity = identity
        self.attributes = attributes or {}


async def test_by_default_it_follows_whoever_publishes_on_an_agents_behalf() -> None:
    avatar = _Participant("protoface-avatar-agent-2", {PUBLISH_ON_BEHALF: "agent-1"})
    other_agents = _Participant("someone-else", {PUBLISH_ON_BEHALF: "agent-9"})
    agent = _Participant("agent-1")
    person = _Participant("person", {"lk.agent.state": "listening"})

    follow_any = AvatarViewer()
    assert follow_any.follows(avatar) and follow_any.follows(other_agents)  # type: ignore[arg-type]
    assert not follow_any.follows(agent) and not follow_any.follows(person)  # type: ignore[arg-type]

    one_agent = AvatarViewer(agent_identity="agent-1")
    assert one_agent.follows(avatar)  # type: ignore[arg-type]
    assert not one_agent.follows(other_agents)  # type: ignore[arg-type]

    # The old usage: exactly one participant, whatever it publishes for.
    exact = AvatarViewer(avatar_identity="agent-1")
    assert exact.follows(agent)  # type: ignore[arg-type]
    assert not exact.follows(avatar)  # type: ignore[arg-type]


async def test_waits_span_avatars_and_can_name_one() -> None:
    viewer = AvatarViewer()
    now = time.monotonic()
    viewer.avatars += ["protoface-avatar-agent", "protoface-avatar-agent-2"]
    viewer.video += [
        VideoSample(now, 0.0, CLOSED, "protoface-avatar-agent"),
        VideoSample(now, 0.0, OPEN, "protoface-avatar-agent-2"),
    ]
    viewer.audio += [
        AudioSample(now, 0.5, 0.2, "protoface-avatar-agent"),
        AudioSample(now, 0.5, 0.2, "protoface-avatar-agent-2"),
    ]
    await viewer.wait_for_mouth_open(timeout=0.2, since=now)  # any avatar's frame
    await viewer.wait_for_mouth_open(timeout=0.2, since=now, identity="protoface-avatar-agent-2")
    with pytest.raises(AssertionError, match="mouth to open at 'protoface-avatar-agent'"):
        await viewer.wait_for_mouth_open(timeout=0.2, since=now, identity="protoface-avatar-agent")
    assert viewer.audio_seconds() == 1.0
    assert viewer.audio_seconds(identity="protoface-avatar-agent-2") == 0.5
    assert viewer.audio_seconds(since=now + 1) == 0.0
    assert await viewer.wait_for_video(timeout=0.2) == "protoface-avatar-agent"
    assert (
        await viewer.wait_for_video(timeout=0.2, identity="protoface-avatar-agent-2")
        == "protoface-avatar-agent-2"
    )
    description = viewer.describe()
    assert "1 from 'protoface-avatar-agent'" in description
    assert "1 from 'protoface-avatar-agent-2'" in description


async def test_a_new_avatar_is_one_whose_video_had_not_come() -> None:
    viewer = AvatarViewer()
    viewer.avatars.append("protoface-avatar-agent")

    async def replacement_arrives() -> None:
        await asyncio.sleep(0.05)
        viewer.avatars.append("protoface-avatar-agent-2")

    arriving = asyncio.create_task(replacement_arrives())
    assert await viewer.wait_for_new_avatar(timeout=5) == "protoface-avatar-agent-2"
    await arriving
    # Its video may have come before the test asked: name the one it replaces.
    assert (
        await viewer.wait_for_new_avatar(other_than=["protoface-avatar-agent"], timeout=0.2)
        == "protoface-avatar-agent-2"
    )
    with pytest.raises(AssertionError, match="an avatar other than"):
        await viewer.wait_for_new_avatar(timeout=0.2)

"""What the agent's own process receives of its avatar: its audio, not its video.

The plugin needs the avatar's video publication (it says "joined") and, while
the avatar speaks, its audio (it says the avatar lives); decoding the video too
cost the agent's process CPU for nothing (`benchmarks/hosted_timing.py`
measures it). Real room, real emulator.
"""

from __future__ import annotations

import asyncio

from livekit import rtc

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer, eventually
from protoface_emulator.testing.audio import tone

from .harness import watched_agent_in


def subscribed_kinds(participant: rtc.RemoteParticipant) -> set[int]:
    """The kinds of `participant`'s tracks the local participant receives."""
    return {p.kind for p in participant.track_publications.values() if p.subscribed}


async def test_the_agent_receives_its_avatars_audio_but_not_its_video(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    async with watched_agent_in(livekit_server, emulator, "agent-media") as (agent, faces):
        await agent.avatar.wait_for_join(timeout=30)
        await faces.wait_first_video(timeout=30)  # the room sees the face all the same
        identity = agent.avatar.avatar_identity
        assert identity is not None
        avatar = agent.room.remote_participants[identity]
        await eventually(
            lambda: subscribed_kinds(avatar) == {rtc.TrackKind.KIND_AUDIO},
            timeout=20,
            message=lambda: f"the agent receives kinds {subscribed_kinds(avatar)}",
        )

        # Death mid-line is still told from the audio: a line plays out, heard from the face.
        await agent.speak(tone(2.0))
        await faces.wait_for_audio(1.0, timeout=20)
        assert agent.avatar.session_ids == [agent.avatar.session_id]


async def test_an_agent_that_subscribes_to_its_avatars_video_again_keeps_it(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    async with watched_agent_in(livekit_server, emulator, "agent-wants-video") as (agent, _):
        await agent.avatar.wait_for_join(timeout=30)
        identity = agent.avatar.avatar_identity
        assert identity is not None
        avatar = agent.room.remote_participants[identity]

        def videos() -> list[rtc.RemoteTrackPublication]:
            return [
                p for p in avatar.track_publications.values() if p.kind == rtc.TrackKind.KIND_VIDEO
            ]

        await eventually(lambda: len(videos()) == 1, timeout=30)
        (video,) = videos()
        await eventually(lambda: not video.subscribed, timeout=20)

        frames: asyncio.Queue[rtc.VideoFrame] = asyncio.Queue()

        async def read(track: rtc.Track) -> None:
            async for event in rtc.VideoStream(track):
                frames.put_nowait(event.frame)

        readers: list[asyncio.Task[None]] = []

        def on_subscribed(
            track: rtc.Track, publication: rtc.RemoteTrackPublication, _: rtc.RemoteParticipant
        ) -> None:
            if publication.sid == video.sid:
                readers.append(asyncio.create_task(read(track)))

        agent.room.on("track_subscribed", on_subscribed)
        try:
            video.set_subscribed(True)
            await agent.speak(tone(1.0))  # the plugin at work meanwhile
            for _ in range(20):  # frames keep coming: it was not unsubscribed again
                await asyncio.wait_for(frames.get(), timeout=20)
            assert video.subscribed
        finally:
            agent.room.off("track_subscribed", on_subscribed)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

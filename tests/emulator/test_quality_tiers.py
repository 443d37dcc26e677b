"""A session's `quality` decides what its avatar renders: size and frame rate.

The store hands the quality to the worker in its spec; the worker renders the
tier's size (seen by a viewer in a real room) and rate (frames per second of
speech, counted from the generator, which is paced by the audio and not a clock).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from emulator_helpers import session_body
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.avatar import AudioSegmentEnd
from livekit.plugins import protoface
from protoface_sdk import ProtofaceClient
from standin_worker import StandInWorkers

from protoface_emulator.avatar.generator import FaceVideoGenerator
from protoface_emulator.avatar.options import VIDEO_TIERS, WorkerOptions
from protoface_emulator.contract import QUALITIES
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer, agent_in, eventually


def test_every_quality_has_a_tier_and_tiers_cost_more_in_order() -> None:
    assert tuple(VIDEO_TIERS) == QUALITIES
    tiers = [VIDEO_TIERS[q] for q in QUALITIES]
    pixel_rates = [t.width * t.height * t.fps for t in tiers]
    assert pixel_rates == sorted(pixel_rates) and len(set(pixel_rates)) == len(tiers)
    assert [t.fps for t in tiers] == sorted(t.fps for t in tiers)


def test_standard_keeps_the_configured_video_and_other_tiers_replace_it() -> None:
    custom = WorkerOptions(video_width=256, video_height=192, video_fps=12)
    assert custom.for_quality("standard") is custom
    lite = custom.for_quality("lite")
    assert (lite.video_width, lite.video_height, lite.video_fps) == (
        VIDEO_TIERS["lite"].width,
        VIDEO_TIERS["lite"].height,
        VIDEO_TIERS["lite"].fps,
    )
    assert lite.audio_sample_rate == custom.audio_sample_rate


def test_an_unknown_quality_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="'ultra'"):
        WorkerOptions().for_quality("ultra")


@pytest.mark.parametrize("quality", QUALITIES)
async def test_a_tier_renders_its_frame_rate_per_second_of_speech(quality: str) -> None:
    options = WorkerOptions().for_quality(quality)
    gen = FaceVideoGenerator(options)
    rate = options.audio_sample_rate
    second = rtc.AudioFrame(b"\x10\x20" * rate, rate, 1, rate)
    await gen.push_audio(second)
    await gen.push_audio(AudioSegmentEnd())
    frames = []
    async for item in gen:
        if isinstance(item, AudioSegmentEnd):
            break
        if isinstance(item, rtc.VideoFrame):
            frames.append((item.width, item.height))
    assert len(frames) == round(options.video_fps)
    assert set(frames) == {(options.video_width, options.video_height)}


@pytest.mark.parametrize(("given", "expected"), [({"quality": "lite"}, "lite"), ({}, "standard")])
async def test_the_sessions_quality_reaches_its_worker(
    given: dict[str, Any], expected: str
) -> None:
    workers = StandInWorkers()
    async with Emulator(worker_factory=workers) as emu:
        with ProtofaceClient(emu.api_key, base_url=emu.url) as client:
            body = session_body(**given)
            created = await asyncio.to_thread(client.sessions.create, body)
    assert [w.spec.quality for w in workers.for_session(created.id)] == [expected]


@pytest.mark.parametrize("quality", ["mock", "lite", "pro"])
async def test_a_viewer_receives_the_tiers_frame_size(
    quality: str,
    livekit_server: LiveKitServer,
    protoface_emulator: Emulator,
    avatar_viewer: AvatarViewer,
) -> None:
    async def start(session: AgentSession[Any], room: rtc.Room) -> protoface.AvatarSession:
        avatar = protoface.AvatarSession(quality=quality)
        await avatar.start(session, room=room)
        return avatar

    tier = VIDEO_TIERS[quality]
    async with agent_in(livekit_server, avatar_viewer.room_name, start) as agent:
        await agent.avatar.wait_for_join(timeout=30)
        await avatar_viewer.wait_for_video(timeout=30)
        await eventually(
            lambda: avatar_viewer.video_size == (tier.width, tier.height),
            timeout=30,
            message=lambda: (
                f"{quality}: the viewer received {avatar_viewer.video_size}, "
                f"not {tier.width}x{tier.height}"
            ),
        )

"""The avatar worker's settings: video size, rate and audio format, per quality tier.

A session's `quality` picks its video (`VIDEO_TIERS`): `mock` 64x64 @ 5 fps,
`lite` 160x160 @ 15, `standard` 320x320 @ 20 (the default, and what
`WorkerOptions` / `PROTOFACE_EMULATOR_VIDEO_WIDTH` / `_HEIGHT` / `_FPS` set),
`pro` 512x512 @ 20; audio 24 kHz mono. No tier goes past 20 fps because
LiveKit's default encoding for video this small sends at most 20 (a 25 fps
source reaches viewers at 20 anyway). Each tier's measured cost is in the
emulator README ("The avatar worker"), measured with `benchmarks/worker_cpu.py`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from livekit.agents.voice.avatar import (
    AvatarOptions,
)

__all__ = [
    "ENV_VIDEO_FPS",
    "ENV_VIDEO_HEIGHT",
    "ENV_VIDEO_WIDTH",
    "VIDEO_TIERS",
    "VideoTier",
    "WorkerOptions",
]

ENV_VIDEO_WIDTH: Final = "PROTOFACE_EMULATOR_VIDEO_WIDTH"
"""Environment override of `WorkerOptions.video_width`."""
ENV_VIDEO_HEIGHT: Final = "PROTOFACE_EMULATOR_VIDEO_HEIGHT"
"""Environment override of `WorkerOptions.video_height`."""
ENV_VIDEO_FPS: Final = "PROTOFACE_EMULATOR_VIDEO_FPS"
"""Environment override of `WorkerOptions.video_fps`."""


@dataclass(frozen=True)
class VideoTier:
    """The video one session `quality` renders.

    Attributes:
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Frames per second.
    """

    width: int
    height: int
    fps: float


VIDEO_TIERS: Final[Mapping[str, VideoTier]] = {
    # Cheapest first. A session's cost is mostly per frame (encoding and the FFI
    # hop), then per pixel, so the cheap tiers cut the rate as well as the size.
    "mock": VideoTier(64, 64, 5.0),
    "lite": VideoTier(160, 160, 15.0),
    "standard": VideoTier(320, 320, 20.0),
    # 20, not more: LiveKit's default encoding for this size sends at most 20 fps,
    # so frames drawn beyond it would be encoded for nobody.
    "pro": VideoTier(512, 512, 20.0),
}
"""What each `quality` renders. `standard` is `WorkerOptions`' own size and rate
(so `PROTOFACE_EMULATOR_VIDEO_*` and explicit options change it); the others are fixed."""


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker renders and connects; the same for every session of an emulator.

    Attributes:
        video_width: Published video width in pixels (even, at least 32).
        video_height: Published video height in pixels (even, at least 32).
        video_fps: Published video frame rate.
        audio_sample_rate: Sample rate of the published audio; the agent's audio
            is resampled to it when it differs.
        audio_channels: Channels of the published audio (1 or 2).
        connect_timeout: Bound, in seconds, on joining the room; past it the
            session fails with `livekit_unreachable`.
        frames_report_interval: How often, in seconds, published frames are
            reported through `WorkerEvents.on_frames`.
    """

    video_width: int = 320
    video_height: int = 320
    video_fps: float = 20.0
    audio_sample_rate: int = 24000
    audio_channels: int = 1
    connect_timeout: float = 10.0
    frames_report_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("video_width", "video_height"):
            value = getattr(self, name)
            if value < 32 or value % 2:
                raise ValueError(f"{name} must be an even number of pixels >= 32, got {value!r}")
        if not 1.0 <= self.video_fps <= 60.0:
            raise ValueError(f"video_fps must be between 1 and 60, got {self.video_fps!r}")
        if self.audio_sample_rate < 8000:
            raise ValueError(
                f"audio_sample_rate must be at least 8000 Hz, got {self.audio_sample_rate!r}"
            )
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels!r}")
        if self.connect_timeout <= 0 or self.frames_report_interval <= 0:
            raise ValueError("connect_timeout and frames_report_interval must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerOptions:
        """Defaults, overridden by `PROTOFACE_EMULATOR_VIDEO_WIDTH`, `_HEIGHT` and `_FPS`.

        Args:
            environ: Where to read the variables; `os.environ` by default.

        Raises:
            ValueError: A variable is set to something that is not a valid value;
                the message names the variable and the value.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        for var, name, kind in (
            (ENV_VIDEO_WIDTH, "video_width", int),
            (ENV_VIDEO_HEIGHT, "video_height", int),
            (ENV_VIDEO_FPS, "video_fps", float),
        ):
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                kwargs[name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{var}={raw!r} is not a valid {kind.__name__}; unset it or set e.g. "
                    f"{var}={getattr(cls(), name)}"
                ) from None
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(
                f"invalid emulator video settings from the environment: {exc}"
            ) from None

    def for_quality(self, quality: str) -> WorkerOptions:
        """These options with the video of `quality`'s tier (see `VIDEO_TIERS`).

        `standard` keeps this object's own size and rate.

        Raises:
            ValueError: `quality` is not one of `VIDEO_TIERS`.
        """
        if quality == "standard":
            return self
        tier = VIDEO_TIERS.get(quality)
        if tier is None:
            raise ValueError(f"quality must be one of {', '.join(VIDEO_TIERS)}, got {quality!r}")
        return dataclasses.replace(
            self, video_width=tier.width, video_height=tier.height, video_fps=tier.fps
        )

    def avatar_options(self) -> AvatarOptions:
        """The same settings in the form `AvatarRunner` takes."""
        return AvatarOptions(
            video_width=self.video_width,
            video_height=self.video_height,
            video_fps=self.video_fps,
            audio_sample_rate=self.audio_sample_rate,
            audio_channels=self.audio_channels,
        )

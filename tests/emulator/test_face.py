"""The avatar's face: recognisable, mouth driven by the audio level, still when silent."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from protoface_emulator.avatar.face import (
    MOUTH_STEPS,
    FaceRenderer,
    audio_level,
    mouth_box,
)

W, H, FPS = 320, 320, 20.0


def _mouth(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    x0, y0, x1, y1 = mouth_box(frame.shape[1], frame.shape[0])
    return frame[y0:y1, x0:x1, :3].astype(np.int16)


def _outside_mouth(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    x0, y0, x1, y1 = mouth_box(frame.shape[1], frame.shape[0])
    copy = frame[..., :3].astype(np.int16)
    copy[y0:y1, x0:x1] = 0
    return copy


def _dark_fraction(region: npt.NDArray[np.int16]) -> float:
    """Share of pixels dark enough to be the inside of the mouth."""
    return float(np.mean(region.max(axis=2) < 100))


def _tone(level_dbfs: float, seconds: float = 0.05, rate: int = 24000) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    amplitude = 10 ** (level_dbfs / 20) * np.sqrt(2)  # RMS of a sine is amplitude / sqrt(2)
    tone: npt.NDArray[np.int16] = (amplitude * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    return tone


@pytest.mark.parametrize("size", [(320, 320), (384, 384), (640, 360), (360, 640), (64, 48)])
def test_mouth_box_lies_inside_the_frame_and_below_the_eyes(size: tuple[int, int]) -> None:
    width, height = size
    x0, y0, x1, y1 = mouth_box(width, height)
    assert 0 <= x0 < x1 <= width
    assert 0 <= y0 < y1 <= height
    assert y0 > height // 2, "the mouth sits in the lower half of the face"
    assert abs((x0 + x1) / 2 - width / 2) <= 1, "the mouth is centred"


def test_face_is_recognisable_head_on_background_with_dark_pupils_and_lips() -> None:
    frame = FaceRenderer(W, H, FPS, blink=False).render(0.0)
    assert frame.shape == (H, W, 4) and frame.dtype == np.uint8
    assert np.all(frame[..., 3] == 255), "opaque"

    rgb = frame[..., :3].astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    skin = (r > 200) & (g > 150) & (b > 110) & (r > b + 40)
    # Skin covers a good part of the frame, and the face's centre is skin...
    assert 0.2 < float(np.mean(skin)) < 0.6
    assert skin[int(H * 0.52), W // 2] or skin[int(H * 0.50), W // 2]
    # ...and the corners are background, which is not skin.
    for y, x in ((2, 2), (2, W - 3), (int(H * 0.6), 2)):
        assert not skin[y, x]
    # Two eyes: dark pupils at the eye centres, white around them, symmetric.
    for ex in (0.385, 0.615):
        cx, cy = int(W * ex), int(H * 0.442)
        assert rgb[cy, cx].max() < 60, f"pupil at {(cx, cy)} is {rgb[cy, cx]}"
        white = rgb[cy, cx + int(W * 0.042)]
        assert white.min() > 200, f"eye white beside the pupil is {white}"
    # Closed lips: red, and a dark seam between them.
    lips = rgb[int(H * 0.69) - 3, W // 2]
    assert lips[0] > lips[1] + 50 and lips[0] > lips[2] + 50, lips
    assert rgb[int(H * 0.69), W // 2].max() < 120


def test_silent_frames_have_identical_mouth_pixels_even_while_blinking() -> None:
    renderer = FaceRenderer(W, H, FPS, blink=True, seed=3)
    frames = [renderer.render(0.0) for _ in range(int(FPS * 12))]
    first = _mouth(frames[0])
    assert all(np.array_equal(_mouth(f), first) for f in frames)
    # The eyes did blink meanwhile, outside the mouth box.
    assert any(not np.array_equal(_outside_mouth(f), _outside_mouth(frames[0])) for f in frames)


def test_mouth_opens_more_for_louder_audio() -> None:
    openings = []
    for level in (0.0, 0.25, 0.5, 1.0):
        renderer = FaceRenderer(W, H, FPS, blink=False)
        openings.append(_dark_fraction(_mouth(renderer.render(level))))
    # Only the thin seam between closed lips is dark; it grows with every step up.
    assert openings[0] < 0.05
    assert openings[0] * 2 < openings[1] < openings[2] < openings[3]


def test_mouth_opens_in_the_first_frame_with_sound_and_closes_exactly_after() -> None:
    renderer = FaceRenderer(W, H, FPS, blink=False)
    closed = _mouth(renderer.render(0.0))
    speaking = _mouth(renderer.render(0.8))
    assert np.abs(speaking - closed).mean() > 10, "attack within one frame"
    # Release: closes within half a second of silence, to exactly the closed pixels.
    after = [_mouth(renderer.render(0.0)) for _ in range(int(FPS * 0.5))]
    assert np.array_equal(after[-1], closed)
    assert renderer.opening == 0.0


def test_close_mouth_skips_the_release() -> None:
    renderer = FaceRenderer(W, H, FPS, blink=False)
    closed = _mouth(renderer.render(0.0))
    renderer.render(1.0)
    renderer.close_mouth()
    assert np.array_equal(_mouth(renderer.render(0.0)), closed)


def test_only_the_mouth_box_follows_the_audio() -> None:
    renderer = FaceRenderer(W, H, FPS, blink=False)
    frames = [renderer.render(level) for level in (0.0, 1.0, 0.4, 0.0, 0.7)]
    outside = _outside_mouth(frames[0])
    assert all(np.array_equal(_outside_mouth(f), outside) for f in frames)
    assert len({_mouth(f).tobytes() for f in frames}) >= 4


def test_renders_are_independent_copies() -> None:
    renderer = FaceRenderer(W, H, FPS, blink=False)
    first = renderer.render(0.0)
    snapshot = first.copy()
    renderer.render(1.0)
    first[:] = 0  # the caller owns its frame
    assert np.array_equal(renderer.render(0.0)[:10], snapshot[:10])


def test_every_step_of_the_mouth_is_distinct() -> None:
    renderer = FaceRenderer(W, H, FPS, blink=False)
    shapes = set()
    for step in range(MOUTH_STEPS + 1):
        renderer.close_mouth()
        shapes.add(_mouth(renderer.render(step / MOUTH_STEPS)).tobytes())
    assert len(shapes) == MOUTH_STEPS + 1


def test_renderer_rejects_tiny_frames_and_bad_fps() -> None:
    with pytest.raises(ValueError, match="32x32"):
        FaceRenderer(16, 16, FPS)
    with pytest.raises(ValueError, match="fps"):
        FaceRenderer(W, H, 0)


def test_audio_level_of_silence_and_faint_noise_is_exactly_zero() -> None:
    assert audio_level(np.zeros(1200, dtype=np.int16)) == 0.0
    assert audio_level(np.zeros(0, dtype=np.int16)) == 0.0
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(1200) * 32767 * 10 ** (-60 / 20)).astype(np.int16)
    assert audio_level(hiss) == 0.0


def test_audio_level_rises_with_loudness_and_saturates() -> None:
    levels = [audio_level(_tone(db)) for db in (-45, -35, -25, -15, -3)]
    assert levels == sorted(levels)
    assert 0.0 < levels[0] < levels[2] < levels[3] <= 1.0
    assert levels[-1] == 1.0
    # Typical speech loudness reads clearly open, not saturated.
    assert 0.5 < audio_level(_tone(-20)) < 1.0


def test_audio_level_reads_int16_and_float_samples_alike() -> None:
    ints = _tone(-20)
    floats = ints.astype(np.float32) / 32768
    assert audio_level(ints) == pytest.approx(audio_level(floats), abs=1e-3)
    stereo = np.repeat(ints, 2)  # interleaved channels
    assert audio_level(stereo) == pytest.approx(audio_level(ints), abs=1e-6)


# --- I420 frames: what the worker hands to LiveKit ------------------------------------


def test_i420_frames_are_the_rgba_frames_as_livekit_would_convert_them() -> None:
    """Our conversion against LiveKit's own (libyuv, through the FFI): same luma,
    chroma within one level, for each look a session shows."""
    from livekit import rtc

    ours_renderer = FaceRenderer(W, H, FPS, blink=False)
    rgba_renderer = FaceRenderer(W, H, FPS, blink=False)
    y_size = W * H
    for level in (0.0, 0.4, 1.0, 0.0):
        ours = np.frombuffer(ours_renderer.render_i420(level), np.uint8).astype(np.int16)
        rgba = rgba_renderer.render(level)
        converted = rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, rgba.tobytes()).convert(
            rtc.VideoBufferType.I420
        )
        theirs = np.frombuffer(bytes(converted.data), np.uint8).astype(np.int16)
        assert ours.size == theirs.size == y_size * 3 // 2
        assert np.array_equal(ours[:y_size], theirs[:y_size])
        assert int(np.abs(ours[y_size:] - theirs[y_size:]).max()) <= 1


def test_i420_frames_are_shared_per_look_between_renderers_of_a_size() -> None:
    first, second = FaceRenderer(W, H, FPS, blink=False), FaceRenderer(W, H, FPS, blink=False)
    closed = first.render_i420(0.0)
    assert second.render_i420(0.0) is closed
    opened = first.render_i420(1.0)
    assert opened is not closed and opened != closed
    assert second.render_i420(1.0) is opened


def test_advance_reports_the_look_render_would_draw() -> None:
    renderer = FaceRenderer(W, H, FPS, blink=False)
    assert renderer.advance(0.0) == (0, False)
    assert renderer.advance(1.0) == (MOUTH_STEPS, False)
    step, eyes_closed = renderer.advance(0.0)  # the release: still partly open
    assert 0 < step < MOUTH_STEPS and not eyes_closed


def test_an_odd_frame_size_is_refused_for_i420_with_the_size_named() -> None:
    from protoface_emulator.avatar.face import rgba_to_i420

    with pytest.raises(ValueError, match="33x32"):
        rgba_to_i420(np.zeros((32, 33, 4), np.uint8))

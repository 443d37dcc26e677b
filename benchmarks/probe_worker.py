"""The emulator's real avatar worker, with timestamps at the stages the e2e benchmark profiles.

`factory` is `protoface_emulator.avatar.worker.start_worker` (the real LiveKit worker,
`WorkerOptions.from_env()`) with the worker's `FaceVideoGenerator` swapped for a
subclass that appends a JSON line to `$BENCH_PROBE_LOG` at three moments:

- `first_frame`: the first video frame is handed to the runner (which publishes
  the tracks before the first one);
- `audio_in`: the first voiced audio frame of a segment reaches the generator
  (the agent's speech arrived over the data stream);
- `mouth_frame`: the first video frame drawn from that segment's audio (an open
  mouth) is handed to the runner's `AVSynchronizer`;
- `first_frame_sent` / `mouth_frame_sent`: the synchronizer hands the first frame,
  and the first open-mouth frame after `audio_in`, to the WebRTC `VideoSource`
  (`rtc.VideoSource.capture_frame`, patched for the worker's process only).

Times are `time.monotonic()`, which on Linux is one clock for every process, so
the benchmark lines them up with the agent's and the viewer's. Nothing else
changes: rendering, pacing and publishing are the worker's own. If the worker
module no longer has what this relies on, the factory is the plain real worker
and no probe lines are written.

    PYTHONPATH=benchmarks BENCH_PROBE_LOG=/tmp/probe.jsonl \\
        protoface-emulator --worker-factory probe_worker:factory
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from protoface_emulator.avatar import worker as _worker
from protoface_emulator.avatar.face import FaceRenderer, mouth_box
from protoface_emulator.lifecycle import WorkerEvents, WorkerHandle, WorkerSpec
from protoface_emulator.testing.viewer import MOUTH_OPEN_THRESHOLD

_session: contextvars.ContextVar[str] = contextvars.ContextVar("bench_probe_session", default="")
_log: TextIO | None = None


def _write(session_id: str, event: str, at: float | None = None) -> None:
    global _log
    path = os.environ.get("BENCH_PROBE_LOG")
    if not path:
        return
    if _log is None:
        _log = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    line = {"session_id": session_id, "event": event, "t": time.monotonic() if at is None else at}
    # One short line per event (a handful per session): not worth a thread.
    _log.write(json.dumps(line) + "\n")
    _log.flush()


def _voiced(frame: rtc.AudioFrame) -> bool:
    samples = np.frombuffer(frame.data, dtype=np.int16)
    return bool(samples.size) and bool(np.any(samples))


class ProbedFaceVideoGenerator(_worker.FaceVideoGenerator):
    """`FaceVideoGenerator` plus the probe lines (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._probe_session = _session.get()
        self._probe_first_frame = False
        self._probe_waiting_mouth = False
        self._probe_in_segment = False

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self._probe_in_segment = False
        elif not self._probe_in_segment and _voiced(frame):
            self._probe_in_segment = True
            self._probe_waiting_mouth = True
            _awaiting_sent_mouth.add(self._probe_session)
            _write(self._probe_session, "audio_in")
        await super().push_audio(frame)

    def clear_buffer(self) -> Any:
        self._probe_in_segment = False
        self._probe_waiting_mouth = False
        return super().clear_buffer()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._probed()

    async def _probed(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        last_video_at = 0.0
        async for item in super().__aiter__():
            if isinstance(item, rtc.VideoFrame):
                last_video_at = time.monotonic()
                if not self._probe_first_frame:
                    self._probe_first_frame = True
                    _write(self._probe_session, "first_frame")
            elif isinstance(item, rtc.AudioFrame) and self._probe_waiting_mouth and _voiced(item):
                # The video frame just before this audio was drawn from it.
                self._probe_waiting_mouth = False
                _write(self._probe_session, "mouth_frame", last_video_at)
            yield item


# Sessions whose speech reached the worker and whose open mouth has not been sent yet.
_awaiting_sent_mouth: set[str] = set()
_sent_first: set[str] = set()
_closed_mouths: dict[tuple[int, int], npt.NDArray[np.int16]] = {}


def _rgba(frame: rtc.VideoFrame) -> npt.NDArray[np.uint8]:
    """The frame as an RGBA array (the worker hands LiveKit I420 frames)."""
    if frame.type != rtc.VideoBufferType.RGBA:
        frame = frame.convert(rtc.VideoBufferType.RGBA)
    return np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)


def _mouth_open(frame: rtc.VideoFrame) -> bool:
    size = (frame.width, frame.height)
    x0, y0, x1, y1 = mouth_box(*size)
    closed = _closed_mouths.get(size)
    if closed is None:
        closed_frame = rtc.VideoFrame(
            frame.width,
            frame.height,
            rtc.VideoBufferType.I420,
            FaceRenderer(frame.width, frame.height, 25, blink=False).render_i420(0.0),
        )
        face = _rgba(closed_frame)
        closed = _closed_mouths[size] = face[y0:y1, x0:x1, :3].astype(np.int16)
    rgba = _rgba(frame)
    mouth = rgba[y0:y1, x0:x1, :3].astype(np.int16)
    return float(np.mean(np.abs(mouth - closed))) > MOUTH_OPEN_THRESHOLD


_original_capture = rtc.VideoSource.capture_frame


def _probed_capture(source: rtc.VideoSource, frame: rtc.VideoFrame, **kwargs: Any) -> None:
    # Called from the synchronizer's task, which runs in the worker's context.
    session_id = _session.get()
    if session_id:
        if session_id not in _sent_first:
            _sent_first.add(session_id)
            _write(session_id, "first_frame_sent")
        if session_id in _awaiting_sent_mouth and _mouth_open(frame):
            _awaiting_sent_mouth.discard(session_id)
            _write(session_id, "mouth_frame_sent")
    _original_capture(source, frame, **kwargs)


PROBED = hasattr(_worker, "FaceVideoGenerator") and hasattr(_worker, "start_worker")
if PROBED:
    # AvatarWorker looks the class up in its module when a worker starts.
    _worker.FaceVideoGenerator = ProbedFaceVideoGenerator  # type: ignore[misc]
    rtc.VideoSource.capture_frame = _probed_capture  # type: ignore[method-assign,assignment]


def factory(spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
    """The real worker; its generator learns the session id from the context."""
    token = _session.set(spec.session_id)
    try:
        # The worker's task is created in here and copies this context.
        return _worker.start_worker(spec, events)
    finally:
        _session.reset(token)

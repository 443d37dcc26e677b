"""Barge-in under load (`benchmarks/run --only parity` measures it as one parity row).

The parity barge-in (`parity._barge_in`: `SpeechHandle.interrupt()` to the last
audible audio at a viewer, avatar and the agent's own track in the same run),
with CPU-bound processes running beside it (`python3 -c "while True: pass"`,
as `scripts/test-under-load` makes load): on a 2-core machine with two of them
the agent, the emulator and livekit-server get what is left, as on a busy CI
runner. The emulator runs in the benchmark's process, as the kit's pytest
plugin runs it.

Standalone, with the timestamps of each stage of an interruption (`--trace`):

    uv run python benchmarks/bargein_load.py --runs 6 --burners 2 --trace

The trace wraps, in this process only, the plugin's `lk.clear_buffer` RPC send,
its arrival at the worker (`AvatarRunner._on_clear_buffer`), the generator's
clear, each audio frame the worker hands its `AudioSource` (and how much audio
that source held then), the event loop's lag, and the viewer's last loud audio;
it prints, per interruption, each stage's time after `interrupt()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from parity import HEARD, MODES, _barge_in, _conversation, _loud, _until

from protoface_emulator.local.livekit_dev import local_livekit_server
from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer
from protoface_emulator.testing.audio import tone

Json = dict[str, Any]
BURN = "while True: pass"


@contextlib.contextmanager
def burners(count: int) -> Iterator[list[int]]:
    """`count` CPU-bound processes for as long as the block runs; always stopped."""
    procs = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


async def measure_bargein_load(livekit: LiveKitServer, *, runs: int, load: int = 2) -> Json:
    """Barge-in to silence, avatar and own track, with `load` CPU-bound processes beside."""
    started = time.monotonic()
    out: Json = {"burners": load, "runs": runs}
    with burners(load):
        async with Emulator() as emu:
            for mode in MODES:
                async with _conversation(livekit, emu, mode) as (agent, viewer, _):
                    await asyncio.sleep(1.0)  # past the join's own burst of work
                    out[mode] = await _barge_in(agent, viewer, runs)
    out["duration_s"] = round(time.monotonic() - started, 1)
    return out


# -- the trace (standalone only) ----------------------------------------------------


class Trace:
    """Timestamps of each stage of an interruption, taken in this process."""

    def __init__(self) -> None:
        self.marks: dict[str, list[float]] = {}
        self.pushes: list[tuple[float, float]] = []  # (when, level) of avatar audio pushed
        self.depths: list[tuple[float, float]] = []  # (when, the runner's queued audio)
        self.lags: list[tuple[float, float]] = []  # (when, event loop lag)
        self.runner_sources: set[int] = set()

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, []).append(time.monotonic())

    def after(self, name: str, t0: float) -> float | None:
        later = [t for t in self.marks.get(name, []) if t >= t0]
        return round(later[0] - t0, 3) if later else None

    def install(self) -> None:
        """Wrap each stage's function (in this process) to mark when it runs."""
        from livekit import rtc
        from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioOutput

        from protoface_emulator.avatar.face import audio_level
        from protoface_emulator.avatar.generator import FaceVideoGenerator

        trace = self

        def marking(cls: Any, name: str, stage: str) -> None:
            original = getattr(cls, name)

            def wrapper(self: Any, *args: Any) -> Any:
                trace.mark(stage)
                return original(self, *args)

            setattr(cls, name, wrapper)

        marking(DataStreamAudioOutput, "clear_buffer", "plugin_clear_buffer")
        marking(AvatarRunner, "_on_clear_buffer", "rpc_at_worker")
        marking(FaceVideoGenerator, "clear_buffer", "generator_cleared")
        attach = FaceVideoGenerator.attach_synchronizer

        def attach_synchronizer(self: Any, av_sync: Any) -> None:
            trace.runner_sources.add(id(av_sync._audio_source))
            attach(self, av_sync)

        FaceVideoGenerator.attach_synchronizer = attach_synchronizer  # type: ignore[method-assign]
        capture = rtc.AudioSource.capture_frame

        async def capture_frame(self: Any, frame: rtc.AudioFrame) -> None:
            if id(self) in trace.runner_sources:
                now = time.monotonic()
                level = audio_level(np.frombuffer(frame.data, dtype=np.int16))
                trace.pushes.append((now, level))
                trace.depths.append((now, self.queued_duration))
            await capture(self, frame)

        rtc.AudioSource.capture_frame = capture_frame  # type: ignore[method-assign]

    async def watch_loop(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append((t, time.monotonic() - t - 0.01))

    def stages(self, t0: float, at: float, heard: list[tuple[float, float]]) -> Json:
        """Each stage of the interruption at `at` of the line said at `t0`."""
        loud = [t for t, level in heard if t >= at and level > HEARD]
        first_heard = [t for t, level in heard if t >= t0 and level > HEARD]
        pushed = [t for t, level in self.pushes if t >= at and level > HEARD]
        first_push = [t for t, level in self.pushes if t >= t0 and level > HEARD]
        depths = [d for t, d in self.depths if t0 + 0.5 < t < at]
        lag = [lag for t, lag in self.lags if at - 0.5 <= t <= at + 0.5]
        return {
            "plugin_clear_buffer": self.after("plugin_clear_buffer", at),
            "rpc_at_worker": self.after("rpc_at_worker", at),
            "generator_cleared": self.after("generator_cleared", at),
            "last_loud_push": round(pushed[-1] - at, 3) if pushed else None,
            "viewer_silent": round(loud[-1] - at, 3) if loud else 0.0,
            "push_to_viewer": round(first_heard[0] - first_push[0], 3)
            if first_push and first_heard
            else None,
            "queued_audio_p50": round(float(np.median(depths)), 3) if depths else None,
            "queue_ran_dry": sum(1 for d in depths if d == 0.0),
            "loop_lag_max": round(max(lag), 3) if lag else None,
        }


async def traced(livekit: LiveKitServer, runs: int, load: int) -> Json:
    """Barge-ins with the trace: each stage's time after `interrupt()`, avatar only."""
    trace = Trace()
    trace.install()
    watcher = asyncio.create_task(trace.watch_loop())
    rows = []
    with burners(load):
        async with Emulator() as emu, _conversation(livekit, emu, "avatar") as (agent, viewer, _):
            await asyncio.sleep(1.0)
            for _ in range(runs):
                t0 = time.monotonic()
                handle = agent.say(tone(6.0))
                await _until(lambda t0=t0: len(_loud(viewer, t0)) >= 50, 20)  # type: ignore[misc]
                at = time.monotonic()
                handle.interrupt()
                await asyncio.wait_for(handle.wait_for_playout(), 15)
                await asyncio.sleep(1.5)
                heard = [(s.received_at, s.level) for s in viewer.audio]
                rows.append(trace.stages(t0, at, heard))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)
    watcher.cancel()
    return {"burners": load, "stages": rows}


async def _main(args: argparse.Namespace) -> Json:
    with local_livekit_server() as livekit:
        if args.trace:
            return await traced(livekit, args.runs, args.burners)
        return await measure_bargein_load(livekit, runs=args.runs, load=args.burners)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="interruptions per mode")
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound processes beside")
    parser.add_argument("--trace", action="store_true", help="timestamps of each stage")
    args = parser.parse_args()
    if args.runs < 1 or args.burners < 0:
        parser.error(f"--runs must be >= 1 and --burners >= 0, got {args.runs}, {args.burners}")
    print(json.dumps(asyncio.run(_main(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A stand-in for the LiveKit avatar worker, for the API and store tests.

No LiveKit server runs in those tests, so the real worker (`protoface_emulator.
worker`) could never join a room there. This stand-in drives the same
`WorkerEvents` a real worker would, on a timer: `on_connecting`, then
`on_first_frame`, then frames (and, if asked, audio) until it is closed. It
records every start and every `aclose()` so tests can count workers.

`factory` at the bottom is a ready-made `WorkerFactory` for the CLI's
`--worker-factory standin_worker:factory`; with `STANDIN_CLOSE_LOG` set it appends
the session id of each closed worker to that file, so a test in another process
can see that shutdown took every worker out of its room.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from protoface_emulator.lifecycle import WorkerEvents, WorkerSpec


@dataclass
class StandInWorker:
    """One fake worker; `closed` once `aclose()` ran."""

    spec: WorkerSpec
    events: WorkerEvents
    behaviour: StandInWorkers
    closed: bool = False
    close_calls: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        b = self.behaviour
        await asyncio.sleep(b.connect_delay)
        self.events.on_connecting()
        if b.fail_with is not None:
            await asyncio.sleep(b.first_frame_delay)
            self.events.on_failed(*b.fail_with)
            return
        if not b.publish:
            return  # joins nothing: the store's join timeout must notice
        await asyncio.sleep(b.first_frame_delay)
        self.events.on_first_frame()
        self.events.on_frames(1)
        while True:
            await asyncio.sleep(b.tick)
            self.events.on_frames(b.frames_per_tick)
            if b.send_audio:
                self.events.on_audio()

    async def aclose(self) -> None:
        self.close_calls += 1
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.behaviour.close_delay:
            await asyncio.sleep(self.behaviour.close_delay)
        if not self.closed:
            self.closed = True
            log = os.environ.get("STANDIN_CLOSE_LOG")
            if log:
                # One short line to a local file: not worth a thread.
                with Path(log).open("a", encoding="utf-8") as out:  # noqa: ASYNC230
                    out.write(self.spec.session_id + "\n")


@dataclass
class StandInWorkers:
    """A `WorkerFactory` of stand-in workers, and the record of what it started.

    Attributes:
        connect_delay: seconds until `on_connecting`.
        first_frame_delay: seconds from connecting to `on_first_frame`.
        publish: False makes workers that never publish a frame.
        fail_with: (code, message) to report through `on_failed` instead of a frame.
        send_audio: report `on_audio` every tick (keeps the session from idling).
        tick: seconds between frame reports.
        frames_per_tick: frames reported per tick.
        close_delay: seconds `aclose()` takes.
    """

    connect_delay: float = 0.02
    first_frame_delay: float = 0.05
    publish: bool = True
    fail_with: tuple[str, str] | None = None
    send_audio: bool = False
    tick: float = 0.05
    frames_per_tick: int = 2
    close_delay: float = 0.0
    started: list[StandInWorker] = field(default_factory=list)

    def __call__(self, spec: WorkerSpec, events: WorkerEvents) -> StandInWorker:
        worker = StandInWorker(spec, events, self)
        self.started.append(worker)
        worker.start()
        return worker

    def for_session(self, session_id: str) -> list[StandInWorker]:
        """The workers started for one session (a correct store starts one)."""
        return [w for w in self.started if w.spec.session_id == session_id]


factory = StandInWorkers(send_audio=True)

starting_factory = StandInWorkers(connect_delay=0.05, first_frame_delay=120.0, close_delay=0.3)
"""For `--worker-factory standin_worker:starting_factory`: sessions stay `starting`."""

"""A `WorkerFactory` whose workers never join a room: the API path without rooms.

The start-latency, scale and fault benchmarks measure the plugin against the
emulator's HTTP API. With the real worker, every created session would also try
to join a LiveKit room, and that work (and its failures) would land in the
numbers. These workers do nothing: the session stays `queued` until it is ended,
so what is measured is the API path only (create, idempotency, end), not rooms.

In process::

    Emulator(worker_factory=null_worker.factory, join_timeout=3600)

From the command line (with `benchmarks/` on `PYTHONPATH`)::

    protoface-emulator --worker-factory null_worker:factory --join-timeout 3600
"""

from __future__ import annotations

from protoface_emulator.lifecycle import WorkerEvents, WorkerHandle, WorkerSpec


class LiveCount:
    """How many null workers are live now, and the most that were live at once."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    def reset_peak(self) -> None:
        """Start a new measurement window."""
        self.peak = self.live


LIVE = LiveCount()
"""Exact count of live sessions (one worker each), for the scale benchmark."""


class NullWorker:
    """A worker handle that holds nothing; closing it is immediate."""

    __slots__ = ("closed", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.closed = False
        LIVE.live += 1
        LIVE.peak = max(LIVE.peak, LIVE.live)

    async def aclose(self) -> None:
        """Nothing to leave: mark closed."""
        if not self.closed:
            self.closed = True
            LIVE.live -= 1


def factory(spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
    """Start nothing and report nothing; the session stays `queued` until ended."""
    return NullWorker(spec.session_id)

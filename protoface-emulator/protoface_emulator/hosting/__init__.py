"""Where sessions' avatar workers run.

- In the API's process (`in_process`): `worker.make_worker_factory()`, what
  `Emulator()` uses by default and what tests that want one process use.
- In a pool of worker processes (`ProcessPool`): rendering, encoding and
  publishing leave the process that answers the API, so the API's latency does
  not depend on how many avatars render, and capacity grows with cores. The
  `protoface-emulator` command's default.

Both are `lifecycle.WorkerFactory`s; the store cannot tell them apart.
"""

from __future__ import annotations

from protoface_emulator.hosting.pool import ProcessPool, default_pool_size
from protoface_emulator.hosting.protocol import spec_from_wire, spec_to_wire
from protoface_emulator.lifecycle import WorkerFactory

__all__ = ["ProcessPool", "default_pool_size", "in_process", "spec_from_wire", "spec_to_wire"]


def in_process() -> WorkerFactory:
    """The in-process worker factory (`worker.start_worker`), imported on demand."""
    from protoface_emulator.avatar.worker import start_worker

    return start_worker

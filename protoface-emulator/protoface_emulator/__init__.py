"""A local Protoface: the public API and a real LiveKit avatar worker.

    from protoface_emulator import Emulator

    async with Emulator() as emu:
        ...  # emu.url, emu.api_key, emu.store, emu.faults

The `protoface-emulator` command runs the same server standalone. Importing this
package does not load LiveKit; the worker is imported when an emulator without
a `worker_factory` is created.
"""

from protoface_emulator.api.errors import ApiError
from protoface_emulator.api.fault_options import FaultKind
from protoface_emulator.api.faults import Fault, Faults
from protoface_emulator.api.limits import StoreConfig
from protoface_emulator.api.records import SessionRecord
from protoface_emulator.api.store import Store
from protoface_emulator.hosting.timing import Timing
from protoface_emulator.server import Emulator, default_worker_factory

__all__ = [
    "ApiError",
    "Emulator",
    "Fault",
    "FaultKind",
    "Faults",
    "SessionRecord",
    "Store",
    "StoreConfig",
    "Timing",
    "default_worker_factory",
]

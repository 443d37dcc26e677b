"""Fixtures for the emulator's API, store, fault and CLI tests.

These run without a LiveKit server: the emulator gets the stand-in worker factory
from `standin_worker.py` instead of its real LiveKit worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from protoface_sdk import ProtofaceClient
from standin_worker import StandInWorkers

from protoface_emulator.server import Emulator


@pytest.fixture
def workers() -> StandInWorkers:
    """The stand-in worker factory; tests may tune it before `emu` starts."""
    return StandInWorkers()


@pytest.fixture
async def emu(workers: StandInWorkers) -> AsyncIterator[Emulator]:
    """An in-process emulator on a free loopback port, with stand-in workers."""
    async with Emulator(worker_factory=workers, avatar_processing_delay=0.2) as emulator:
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw HTTP client."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sdk(emu: Emulator) -> Iterator[ProtofaceClient]:
    """The official SDK pointed at `emu` (sync: call it via `asyncio.to_thread`)."""
    client = ProtofaceClient(emu.api_key, base_url=emu.url, timeout=10.0)
    try:
        yield client
    finally:
        client.close()

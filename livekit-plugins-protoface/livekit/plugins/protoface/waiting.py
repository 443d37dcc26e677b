"""Waiting on the first of several things: a session lost, a boundary, a replacement."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

__all__ = ["first_of"]


async def first_of(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` is done; the waits made here for coroutines are cancelled.

    Futures passed in (a session's `lost`, a pending replacement) are never
    cancelled: they belong to someone else.
    """
    owned: list[asyncio.Future[object]] = []
    futures: list[asyncio.Future[object]] = []
    for aw in aws:
        if isinstance(aw, asyncio.Future):
            futures.append(aw)
        else:
            made: asyncio.Future[object] = asyncio.ensure_future(aw)
            owned.append(made)
            futures.append(made)
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for made in owned:
            made.cancel()

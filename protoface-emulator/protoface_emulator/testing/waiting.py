"""Waiting for a condition in a real room, with a deadline instead of a fixed sleep.

Real rooms deliver media when they can: on a busy machine, a frame that arrives
in 50 ms on an idle one may take a second. A test that sleeps a fixed time and
then asserts fails there; one that waits for the condition with a generous
deadline passes as soon as the condition holds, however long that took.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

__all__ = ["Predicate", "eventually"]

Predicate = Callable[[], object | Awaitable[object]]
"""A condition: a function returning something truthy when it holds, or an awaitable of that."""


async def eventually(
    predicate: Predicate,
    *,
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> None:
    """Poll `predicate()` until it is true; fail with `message` after `timeout` seconds.

    Args:
        predicate: The condition, sync or async.
        timeout: Seconds to wait; be generous, it costs nothing when the condition
            holds early.
        interval: Seconds between polls.
        message: What the failure says; a callable is evaluated only on failure,
            to report the state at that moment.

    Raises:
        AssertionError: The condition did not hold within `timeout`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(text or f"condition not met within {timeout:g} s")
        await asyncio.sleep(interval)

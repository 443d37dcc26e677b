"""`switch()` requests: asked by the user at any moment, served by the lifetime in turn.

The lifetime handles one change at a time (`lifetime.py`): a switch asked
during a loss or a handover waits until that is over. `SwitchDesk` holds the
one request allowed at a time, wakes the lifetime when one arrives, and
settles its caller with the outcome: the `AvatarSwitchedEvent`, or an error
that says the current avatar goes on speaking.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .errors import ProtofaceException
from .events import AvatarSwitchedEvent
from .log import logger
from .types import SessionOptions

__all__ = ["SwitchDesk", "SwitchRequest"]


@dataclass
class SwitchRequest:
    """A `switch()` waiting for its turn, and where its outcome goes."""

    options: SessionOptions
    done: asyncio.Future[AvatarSwitchedEvent]


class SwitchDesk:
    """The switch asked for and not yet done (one at a time), and its wake-up."""

    def __init__(self) -> None:
        self.request: SwitchRequest | None = None
        self.open = False  # the lifetime follows an avatar: switches can be served
        self._wake = asyncio.Event()

    async def ask(self, options: SessionOptions) -> AvatarSwitchedEvent:
        """File a switch to `options` and wait for its outcome.

        Raises:
            ProtofaceException: Another switch is under way, the lifetime is
                over, or the new avatar could not be started (the current one
                goes on speaking; the cause is chained).
        """
        if not self.open:
            raise ProtofaceException(
                f"cannot switch to avatar {options.avatar_id!r}: the conversation has no "
                "avatar any more (it was lost and not replaced, or the session closed)"
            )
        if self.request is not None:
            raise ProtofaceException(
                f"cannot switch to avatar {options.avatar_id!r}: a switch to "
                f"{self.request.options.avatar_id!r} is under way; await it first"
            )
        request = SwitchRequest(options, asyncio.get_running_loop().create_future())
        self.request = request
        self._wake.set()
        return await asyncio.shield(request.done)

    async def wait(self) -> None:
        """Return when a switch is asked for."""
        await self._wake.wait()

    def serving(self) -> None:
        """The lifetime took the request up."""
        self._wake.clear()

    def done(self, event: AvatarSwitchedEvent) -> None:
        """The switch happened: its caller gets `event`."""
        request, self.request = self.request, None
        if request is not None and not request.done.done():
            request.done.set_result(event)

    def failed(self, error: BaseException, kept: str) -> None:
        """The new avatar could not be started; session `kept` goes on speaking."""
        request, self.request = self.request, None
        if request is None:
            return
        logger.warning(
            "switching the protoface avatar to %s failed (%s); session %s goes on",
            request.options.avatar_id,
            error,
            kept,
            extra={"session_id": kept},
        )
        if not request.done.done():
            failure = ProtofaceException(
                f"switching to avatar {request.options.avatar_id!r} failed: {error}; the "
                f"current avatar (session {kept}) goes on speaking"
            )
            failure.__cause__ = error
            request.done.set_exception(failure)

    def close(self, why: str) -> None:
        """No more switches: one still waiting is refused with `why`."""
        self.open = False
        request, self.request = self.request, None
        if request is not None and not request.done.done():
            request.done.set_exception(
                ProtofaceException(f"cannot switch to avatar {request.options.avatar_id!r}: {why}")
            )

"""Pause and resume over the standard avatar protocol, which has no pause of its own.

`pause()` ends the avatar's segments of speech and clears its buffer
(`lk.clear_buffer`); its `lk.playback_finished` says where the listener heard
each stop; `resume()` sends the rest of the same utterance, from there, as a
new segment. The agent session sees one utterance, settled once, at its true
position. On the room's own track, the route pauses and resumes itself.

`PauseState` holds what that takes between the calls: whether playback is
paused, the resume under way, and who waits for the avatar's answer. While
paused, the session's next frame waits (`until_playing`), as speech does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["PauseState"]


class PauseState:
    """Whether the agent session paused playback, and the resume under way."""

    def __init__(self) -> None:
        self._playing = asyncio.Event()  # clear while paused
        self._playing.set()
        self._resume: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def paused(self) -> bool:
        """Whether playback is paused."""
        return not self._playing.is_set()

    def pause(self) -> bool:
        """Pause (a resume under way stops); False if already paused."""
        if self.paused:
            return False
        self._playing.clear()
        self.cancel_resume()
        return True

    def resume(self) -> bool:
        """Stop pausing; False if not paused."""
        if not self.paused:
            return False
        self._playing.set()
        return True

    def end(self) -> None:
        """The speech was cleared: nothing is paused, nothing is to be resumed."""
        self.cancel_resume()
        self._playing.set()

    async def until_playing(self) -> None:
        """Wait while playback is paused, and then for the resume under way.

        The agent session's frames wait here rather than pile up at once: the
        framework's transcript synchronizer analyses each frame it hands over,
        and the rest of a long line at once held the event loop for 0.1-0.2 s,
        just when the avatar had to hear the pause.
        """
        while True:
            await self._playing.wait()
            resume = self._resume
            if resume is None or resume.done():
                return
            # The resume sends what the ledger holds from where it was heard first.
            await asyncio.wait({resume})

    def start_resume(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as the resume, unless one runs already (then `coro` is dropped)."""
        if self._resume is None or self._resume.done():
            self._resume = asyncio.create_task(coro, name="protoface-resume")
        else:
            coro.close()

    def cancel_resume(self) -> None:
        """Stop the resume under way, if any (an interruption, or a new pause)."""
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    async def answered(self) -> None:
        """Wait until the avatar answers a pause (`wake()`)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def wake(self) -> None:
        """The avatar answered a pause (or the route changed): the waiters look again."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

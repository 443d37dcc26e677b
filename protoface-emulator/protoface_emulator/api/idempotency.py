"""Idempotency keys: a repeated create returns the first result and does it once.

Keys are remembered per scope (the API key) for a TTL. A repeat with the same
fingerprint (the canonical body) gets the first result, even while the first
create is still in flight; a different body under the same key is a 409. A
create that failed is forgotten, so a retry may succeed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from protoface_emulator.api.errors import CODE_IDEMPOTENCY_KEY_REUSED, conflict

__all__ = ["IdempotencyKeys"]


@dataclass
class _IdempotencyEntry:
    fingerprint: str
    # Resolves to the session id; an in-flight create is awaited, never repeated.
    # Creation is synchronous today, so the future is settled before anyone else can
    # look; it keeps the guarantee if creating ever has to await (a remote worker pool).
    result: asyncio.Future[str]
    expires_at: float


class IdempotencyKeys:
    """The keys seen, oldest first, each with the id its create produced.

    Args:
        ttl_seconds: how long a key is remembered.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl_seconds = ttl_seconds
        self._entries: OrderedDict[tuple[str, str], _IdempotencyEntry] = OrderedDict()

    async def once(
        self, scope: str, key: str, fingerprint: str, create: Callable[[], str]
    ) -> tuple[str, bool]:
        """The id `create` returned under this key, calling it only the first time.

        Returns:
            (id, replayed): replayed is True when an earlier create's id is returned.

        Raises:
            ApiError: `conflict` when the key was used with a different fingerprint;
                whatever `create` raised on a first use.
        """
        loop = asyncio.get_running_loop()
        scoped = (scope, key)
        self._expire(loop.time())
        entry = self._entries.get(scoped)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise conflict(
                    CODE_IDEMPOTENCY_KEY_REUSED,
                    "This Idempotency-Key was already used with a different request body; "
                    "use a new key for a new request.",
                )
            # shield: a client that disconnects must not cancel the shared result.
            return await asyncio.shield(entry.result), True
        future: asyncio.Future[str] = loop.create_future()
        self._entries[scoped] = _IdempotencyEntry(
            fingerprint, future, loop.time() + self._ttl_seconds
        )
        try:
            created = create()
        except BaseException as exc:
            del self._entries[scoped]
            future.set_exception(exc)
            future.exception()  # retrieved: nobody may be waiting, and that is fine
            raise
        future.set_result(created)
        return created, False

    def _expire(self, now: float) -> None:
        # Entries are in insertion order with one TTL, so expired ones are at the front.
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires_at > now or not oldest.result.done():
                break
            self._entries.popitem(last=False)

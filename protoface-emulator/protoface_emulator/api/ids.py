"""Identifiers: `sess_<ULID>`, `av_<ULID>`, `req_<ULID>`.

A ULID is 48 bits of milliseconds since the epoch and 80 random bits, written in
Crockford base32 (26 characters). Ours are monotonic within one process: two ids
made in the same millisecond differ by one in the random part, so sorting ids
sorts by creation order. The session list relies on that for newest-first order
and for `starting_after` cursors.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1


class _Monotonic:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def next(self) -> int:
        # A lock because the CLI and tests may mint ids from more than one thread.
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms <= self._last_ms:
                # Same (or an earlier, if the wall clock stepped back) millisecond:
                # keep the previous timestamp and count up, so order never breaks.
                now_ms = self._last_ms
                random_part = self._last_random + 1
                if random_part > _RANDOM_MAX:
                    now_ms += 1
                    random_part = secrets.randbits(_RANDOM_BITS - 1)
            else:
                # One bit of headroom keeps the increments above from overflowing.
                random_part = secrets.randbits(_RANDOM_BITS - 1)
            self._last_ms = now_ms
            self._last_random = random_part
            return (now_ms << _RANDOM_BITS) | random_part


_generator = _Monotonic()


def new_ulid() -> str:
    """A new monotonic ULID (26 Crockford base32 characters)."""
    value = _generator.next()
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id such as `sess_01J…`, sortable by creation time."""
    return f"{prefix}_{new_ulid()}"

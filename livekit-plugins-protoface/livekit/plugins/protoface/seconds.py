"""What counts as a number of seconds in an option or an answer."""

from __future__ import annotations

import math
from typing import TypeGuard

__all__ = ["is_seconds"]


def is_seconds(value: object) -> TypeGuard[int | float]:
    """Whether `value` is a finite int or float (never a bool, which is an int)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

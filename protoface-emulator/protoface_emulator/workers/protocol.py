"""The line protocol between a `ProcessPool` and its worker processes.

One JSON object per line. The pool writes to a host's stdin:

    {"op": "start", "key": 7, "spec": {...WorkerSpec, token included...}}
    {"op": "close", "key": 7}

and the host answers on its protocol pipe (its original stdout):

    {"key": 7, "event": "connecting" | "first_frame" | "audio"}
    {"key": 7, "event": "frames", "count": 20}
    {"key": 7, "event": "failed", "code": "...", "message": "..."}
    {"key": 7, "event": "closed"}
    {"event": "ready"}

`key` is the pool's own number for one worker (a session id could in principle
be started twice). The pipe is private to the two processes; the token travels
over it like it travels in memory in-process, and is never logged.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from protoface_emulator.lifecycle import WorkerSpec

__all__ = ["decode", "encode", "spec_from_wire", "spec_to_wire"]


def spec_to_wire(spec: WorkerSpec) -> dict[str, Any]:
    """A spec as JSON-ready fields, the token included."""
    return dataclasses.asdict(spec)


def spec_from_wire(fields: dict[str, Any]) -> WorkerSpec:
    """The spec `spec_to_wire` sent.

    Raises:
        TypeError: the fields are not a `WorkerSpec`'s (a host of another version).
    """
    return WorkerSpec(**fields)


def encode(message: dict[str, Any]) -> bytes:
    """One protocol line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """The message on one protocol line.

    Raises:
        ValueError: the line is not a JSON object.
    """
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"a protocol line must be a JSON object, got {line[:80]!r}")
    return message

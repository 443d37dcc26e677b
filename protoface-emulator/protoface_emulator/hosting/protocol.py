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

The same event messages travel over a dispatched job's WebSocket to the emulator
(`dispatch.py`, `agent_worker.py`): `EventWriter` turns a worker's `WorkerEvents`
into messages on either side, `apply_event` turns them back into calls.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from protoface_emulator.lifecycle import WorkerEvents, WorkerSpec

__all__ = [
    "METADATA_VERSION",
    "EventWriter",
    "JobOrder",
    "apply_event",
    "decode",
    "encode",
    "job_metadata",
    "read_job_metadata",
    "spec_from_wire",
    "spec_to_wire",
]

# The `v` of a dispatched job's metadata; a host refuses a job of another version.
METADATA_VERSION = 1


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


class EventWriter:
    """`WorkerEvents` of one worker, each event sent as a message by `send`.

    Args:
        send: Takes one message (a dict); it must not raise.
        key: The worker's key, added to every message.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None], key: int | str) -> None:
        self._send_message = send
        self._key = key

    def _send(self, event: str, **fields: Any) -> None:
        self._send_message({"key": self._key, "event": event, **fields})

    def on_connecting(self) -> None:
        self._send("connecting")

    def on_first_frame(self) -> None:
        self._send("first_frame")

    def on_audio(self) -> None:
        self._send("audio")

    def on_frames(self, count: int) -> None:
        self._send("frames", count=count)

    def on_failed(self, code: str, message: str) -> None:
        self._send("failed", code=code, message=message)


def apply_event(events: WorkerEvents, message: dict[str, Any]) -> bool:
    """Call the `events` method a worker's event message stands for.

    Returns True for `closed` (the worker left its room), which has no method.

    Raises:
        KeyError, ValueError: a message missing its fields (a peer of another version).
    """
    event = message.get("event")
    if event == "connecting":
        events.on_connecting()
    elif event == "first_frame":
        events.on_first_frame()
    elif event == "audio":
        events.on_audio()
    elif event == "frames":
        events.on_frames(int(message["count"]))
    elif event == "failed":
        events.on_failed(str(message["code"]), str(message["message"]))
    elif event == "closed":
        return True
    return False


@dataclasses.dataclass(frozen=True)
class JobOrder:
    """What a dispatched job's metadata tells a worker host (`job_metadata`)."""

    key: str
    reports: str  # the ws:// URL to report this job's events to
    spec: WorkerSpec
    ticket: str = dataclasses.field(repr=False)  # proves the reports are this job's


def job_metadata(key: str, ticket: str, reports: str, spec: WorkerSpec) -> str:
    """The metadata of the LiveKit job that runs one session's worker."""
    fields = {"v": METADATA_VERSION, "key": key, "ticket": ticket, "reports": reports}
    return json.dumps({**fields, "spec": spec_to_wire(spec)})


def read_job_metadata(text: str) -> JobOrder:
    """The order `job_metadata` wrote.

    Raises:
        ValueError: not a protoface-emulator job of this version (says which part).
    """
    try:
        fields = json.loads(text)
    except ValueError:
        raise ValueError(
            "the job's metadata is not JSON: was it dispatched by protoface-emulator?"
        ) from None
    if not isinstance(fields, dict) or fields.get("v") != METADATA_VERSION:
        version = fields.get("v") if isinstance(fields, dict) else None
        raise ValueError(
            f"the job's metadata is version {version!r}, this worker reads {METADATA_VERSION}: "
            "run the same protoface-emulator version on the emulator and its worker hosts"
        )
    try:
        spec = spec_from_wire(fields["spec"])
        return JobOrder(
            key=str(fields["key"]),
            reports=str(fields["reports"]),
            spec=spec,
            ticket=str(fields["ticket"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"the job's metadata lacks a field ({exc}): a malformed dispatch"
        ) from None

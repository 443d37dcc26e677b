"""Shared constants and helpers for the plugin tests.

The server behind these tests is the real emulator (`protoface_emulator.Emulator`,
in-process on loopback, fixture `emu` in `conftest.py`) with `ManualWorkers`, so a
test moves a session through its lifecycle without LiveKit and scripts a server's
misbehaviour through the emulator's faults. `raw_http.RawServer` covers only what
no HTTP server library can produce (broken HTTP, trickled or endless bodies).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from livekit.agents import APIConnectOptions

from protoface_emulator import Emulator
from protoface_emulator.api.records import SessionRecord
from protoface_emulator.api.request_log import RecordedRequest
from protoface_emulator.api.requests import parse_session_create
from protoface_emulator.lifecycle import ManualWorkers
from protoface_emulator.testing import eventually as kit_eventually

API_KEY = "pf_test_4f1c9e8a7b6d5c4e3f2a1b0c"
LIVEKIT_API_KEY = "lk_test_key_8d7c"
LIVEKIT_API_SECRET = "lk_test_secret_0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
LIVEKIT_URL = "ws://127.0.0.1:7880"
AGENT_IDENTITY = "agent-under-test"
ROOM_NAME = "fake-room"  # the name fake_job_context gives an unconnected room

# Fast retries: the first retry waits 0.1-0.6 s (jittered), the others none.
FAST = APIConnectOptions(max_retry=3, retry_interval=0.0, timeout=2.0)

CREATE = "POST /v1/sessions"
GET_SESSION = "GET /v1/sessions/{id}"
END = "POST /v1/sessions/{id}/end"
STATUS = "GET /v1/status"


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds, checking every 10 ms; fail after `timeout` s.

    The kit's `eventually`, with these tests' default timeout and poll.
    """
    await kit_eventually(condition, timeout=timeout, interval=0.01)


def envelope(
    status_type: str, code: str, message: str = "", request_id: str = "req_test", **extra: Any
) -> dict[str, Any]:
    """A Protoface error envelope, for a scripted reply."""
    return {
        "error": {
            "type": status_type,
            "code": code,
            "message": message or code.replace("_", " "),
            "request_id": request_id,
            **extra,
        }
    }


def echoing(status_type: str = "invalid_request") -> Callable[[RecordedRequest], object]:
    """A careless server's error: it quotes the request's key and body back."""

    def render(request: RecordedRequest) -> object:
        body = (request.body or b"").decode("utf-8", "replace")
        message = f"rejected {request.headers.get('Authorization')} {body}"
        return envelope(status_type, "echoed", message, request_id="req_echo")

    return render


def body(request: RecordedRequest) -> dict[str, Any]:
    """A request's JSON body (a dict; the test fails if it is not one)."""
    decoded = request.json()
    assert isinstance(decoded, dict), request.body
    return decoded


def session_ids(emu: Emulator) -> list[str]:
    """Every session the emulator holds, oldest first."""
    return [record.id for record in emu.store.iter_sessions()]


def ended_ids(emu: Emulator) -> list[str]:
    """The session of every end call the API itself answered, in order.

    An end a fault answered without the API (`handled=False`) is not counted.
    """
    return [
        request.path.split("/")[3]
        for request in emu.requests.matching(END)
        if request.fault is None or request.fault.handled
    ]


def assert_ended_by_the_client(emu: Emulator, session_id: str) -> None:
    """The session is over because the client asked (not by a timer or the test)."""
    record = emu.store.get_session(session_id)
    assert record.status == "ended", record.status
    assert record.metadata.get("_avatar.end_reason") == "end_requested", record.metadata


async def add_session(
    emu: Emulator,
    workers: ManualWorkers,
    status: str = "queued",
    *,
    avatar_id: str = "av_stock_001",
) -> SessionRecord:
    """A session created in the store directly (no request logged), driven to `status`.

    `status` is one the emulator reaches: `queued`, `starting`, `running`, `ended`
    (end requested) or `failed` (worker lost).
    """
    request = parse_session_create(
        {
            "avatar_id": avatar_id,
            "transport": {
                "type": "livekit",
                "url": LIVEKIT_URL,
                "room_name": ROOM_NAME,
                "worker_token": "setup.worker.token",
            },
        }
    )
    record, _ = await emu.store.create_session(request)
    worker = workers.worker(record.id)
    if status in ("starting", "running"):
        worker.connect()
    if status == "running":
        worker.publish()
    if status == "ended":
        await emu.store.end_session(record.id)
    if status == "failed":
        worker.fail()
    assert record.status == status, f"could not drive a session to {status!r}"
    return record


class LogCapture(logging.Handler):
    """Every log record, kept for a test to search."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.formatter = logging.Formatter(
            "%(levelname)s %(name)s %(message)s", datefmt=None, style="%"
        )

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """Every record fully rendered: message, traceback, stack and extra fields."""
        assert self.formatter is not None
        parts = []
        for record in self.records:
            parts.append(self.formatter.format(record))
            parts.append(repr(record.__dict__))
        return "\n".join(parts)


def free_port() -> int:
    """A loopback port nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SERVER_CODE = (f"{os.sep}aiohttp{os.sep}", f"{os.sep}protoface_emulator{os.sep}")


def leftover_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Pending tasks created since `before`, other than the loopback server's own."""
    current = asyncio.current_task()
    leftovers = []
    for task in asyncio.all_tasks():
        if task in before or task is current or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and any(part in code.co_filename for part in _SERVER_CODE):
            continue  # connection handlers and session bookkeeping of the emulator
        leftovers.append(task)
    return leftovers

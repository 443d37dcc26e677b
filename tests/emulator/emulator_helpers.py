"""Helpers for the emulator's API tests: raw requests and envelope checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDict
from protoface_sdk._generated import ApiErrorEnvelope

from protoface_emulator.server import Emulator
from protoface_emulator.testing import eventually as kit_eventually

T = TypeVar("T")

# The smallest valid PNG header is enough for the emulator's format check.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass
class Reply:
    """A raw HTTP answer."""

    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


def session_body(**overrides: Any) -> dict[str, Any]:
    """A valid `POST /v1/sessions` body; keyword arguments replace top-level fields."""
    body: dict[str, Any] = {
        "avatar_id": "av_stock_001",
        "transport": {
            "type": "livekit",
            "url": "wss://example.livekit.cloud",
            "room_name": "room-1",
            "worker_token": "secret-worker-jwt",
        },
    }
    body.update(overrides)
    return body


def with_transport(**fields: Any) -> dict[str, Any]:
    """A valid body whose transport has `fields` added or replaced."""
    body = session_body()
    body["transport"] = {**body["transport"], **fields}
    return body


async def call(
    http: aiohttp.ClientSession,
    emu: Emulator,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    data: bytes | str | aiohttp.FormData | None = None,
    headers: Mapping[str, str] | None = None,
    auth: bool = True,
) -> Reply:
    """One request to the emulator with its key (unless `auth=False`)."""
    sent: dict[str, str] = {}
    if auth:
        sent["Authorization"] = f"Bearer {emu.api_key}"
    if json_body is not None:
        data = json.dumps(json_body)
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    async with http.request(method, emu.url + path, data=data, headers=sent) as response:
        return Reply(response.status, response.headers, await response.text())


async def exchange(emu: Emulator, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a new connection; return what arrives until a final answer.

    For requests no HTTP client library will send (bad framing, `Expect` games).
    Returns as soon as a complete non-1xx answer arrived (the server may keep the
    connection open a while, e.g. lingering for a body it did not read), else at
    EOF or after `timeout`.
    """
    reader, writer = await asyncio.open_connection(emu.host, emu.port)
    received = b""
    try:
        writer.write(data)
        await writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not _has_final_answer(received) and (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
    return received


def _has_final_answer(raw: bytes) -> bool:
    while raw.startswith(b"HTTP/1.1 1"):
        raw = raw.partition(b"\r\n\r\n")[2]
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def raw_reply(raw: bytes) -> Reply:
    """The first final (non-1xx) answer in `raw`, as a `Reply`."""
    while raw.startswith(b"HTTP/1.1 1"):
        raw = raw.partition(b"\r\n\r\n")[2]
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return Reply(int(status_line.split()[1]), headers, body.decode("utf-8"))


def assert_error(
    reply: Reply,
    status: int,
    error_type: str,
    code: str,
    param: str | None = None,
) -> ApiErrorEnvelope:
    """Check an error answer: status, envelope fields, model, and the request id header."""
    assert reply.status == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    envelope = ApiErrorEnvelope.model_validate_json(reply.text)
    error = envelope.error
    assert (error.type.value, error.code, error.param) == (error_type, code, param), reply.text
    assert error.request_id.startswith("req_")
    assert reply.headers["X-Request-Id"] == error.request_id
    assert "Traceback" not in reply.text
    return envelope


async def eventually(
    probe: Callable[[], T], accept: Callable[[T], bool], timeout: float = 10.0
) -> T:
    """Poll `probe` until `accept` holds; fail after a generous `timeout`.

    The kit's `eventually`, keeping the last value probed to return it and to
    name it when the condition is not reached.
    """
    seen: list[T] = []  # the last value probed, alone

    def holds() -> bool:
        seen[:] = [probe()]
        return accept(seen[0])

    await kit_eventually(
        holds,
        timeout=timeout,
        interval=0.02,
        message=lambda: f"condition not reached within {timeout} s; last value {seen[0]!r}",
    )
    return seen[0]

"""A loopback HTTP server that writes raw bytes, for replies aiohttp's server cannot make.

Malformed status lines, connections reset mid-body, bytes trickled slower than
the client's timeout: `RawServer` reads each request (headers and body) from a
real socket and hands it to a test's `respond(request, writer)` coroutine, which
writes whatever it likes. Connections are kept alive, like a real server's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass


@dataclass
class RawRequest:
    """One request as the raw server read it."""

    number: int  # 1 for the first request the server received
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Respond = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """Records every request; `respond` writes the answer (or closes the socket)."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[RawRequest] = []
        self.connections = 0
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while not writer.is_closing():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = RawRequest(len(self.requests) + 1, method, path, headers, body)
                self.requests.append(request)
                await self.respond(request, writer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def response(
    status: int,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    reason: str = "Whatever",
) -> bytes:
    """A well-formed HTTP/1.1 response with a Content-Length."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@contextlib.asynccontextmanager
async def raw_server(respond: Respond) -> AsyncIterator[RawServer]:
    """A `RawServer` listening on loopback for the duration of the block."""
    server = RawServer(respond)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(listener.wait_closed(), timeout=2)

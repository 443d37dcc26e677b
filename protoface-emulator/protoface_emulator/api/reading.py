"""Reading a request for the API's handlers: query, headers, and a body within its limit.

`Call` is what a route handler in `app.py` receives. It reads the body once, as
bytes, JSON or multipart parts, stopping at the route's limit, checks what only
the headers can tell (`checks.py` decides), turns aiohttp's transport-level
failures into the API's errors, and keeps what it read in the request log.
"""

from __future__ import annotations

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from protoface_emulator.api.checks import (
    check_body_headers,
    check_json_media_type,
    check_multipart,
    too_large,
    undecodable_body,
    unparseable_multipart,
)
from protoface_emulator.api.decoding import JSONObject, parse_json_object
from protoface_emulator.api.errors import ApiError
from protoface_emulator.api.request_log import RecordedRequest


class Call:
    """One request as the handlers see it: its query, headers and body, read once."""

    def __init__(self, request: web.BaseRequest, entry: RecordedRequest) -> None:
        self._request = request
        self._entry = entry
        self.query = request.query
        self.headers = request.headers

    async def body(self, limit: int) -> bytes:
        """The body, decompressed, at most `limit` bytes; logged in the request log."""
        request = self._request
        check_body_headers(
            request.headers.get(hdrs.CONTENT_ENCODING), request.content_length, limit
        )
        data = bytearray()
        try:
            async for chunk in request.content.iter_any():
                data += chunk
                if len(data) > limit:
                    raise too_large(limit)
        except (HttpProcessingError, web.RequestPayloadError):
            # Bad gzip/deflate or chunk framing surfaces only while the body is read.
            raise undecodable_body() from None
        self._entry.body = bytes(data)
        return self._entry.body

    async def json(self, limit: int, *, optional: bool = False) -> JSONObject:
        """The body as a JSON object; with `optional`, an empty body is `{}`."""
        raw = await self.body(limit)
        if not raw.strip():
            if optional:
                return {}
        else:
            request = self._request
            check_json_media_type(
                request.headers.get(hdrs.CONTENT_TYPE), request.content_type, request.charset
            )
        return parse_json_object(raw)

    async def form(self, limit: int) -> list[tuple[str, str | bytes]]:
        """A multipart body's parts: text parts decoded, file parts as bytes."""
        request = self._request
        check_multipart(request.headers.get(hdrs.CONTENT_TYPE), request.content_type)
        check_body_headers(
            request.headers.get(hdrs.CONTENT_ENCODING), request.content_length, limit
        )
        parts: list[tuple[str, str | bytes]] = []
        size = 0
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise unparseable_multipart("nested multipart parts are not accepted")
                data = bytearray()
                while chunk := await part.read_chunk():
                    size += len(chunk)
                    if size > limit:
                        raise too_large(limit)
                    data += chunk
                if part.name is None:
                    raise unparseable_multipart("a part has no name")
                value = bytes(part.decode(bytes(data)))
                # As aiohttp's own form reader: a part with a filename is a file; one
                # without is text unless it declares a non-text type.
                content_type = part.headers.get(hdrs.CONTENT_TYPE, "text/plain")
                if not part.filename and content_type.startswith("text/"):
                    parts.append((part.name, value.decode(part.get_charset(default="utf-8"))))
                else:
                    parts.append((part.name, value))
        except ApiError:
            raise
        except Exception as exc:  # aiohttp's multipart reader raises assorted types
            raise unparseable_multipart(exc) from None
        return parts

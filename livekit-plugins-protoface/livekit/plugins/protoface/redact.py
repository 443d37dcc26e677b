"""Keeping the API key and worker tokens out of everything the client surfaces.

A `Redactor` belongs to one `ProtofaceAPI`. It knows the API key, the worker
tokens of the client's most recent creates (bounded: a script creating
thousands of sessions must not redact against thousands of tokens), and the
token of the request in flight. The LiveKit API secret is not among them: it
only signs the worker token locally and never goes over the network, so no
answer can carry it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections import deque
from collections.abc import Iterator, Mapping

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from .validation import FIELD_CHARS, clip

__all__ = ["NOT_JSON", "REDACTED", "Redactor"]

REDACTED = "[redacted]"
NOT_JSON = object()
"""What `Redactor.parse` returns for a body that did not decode."""

_RECENT_TOKENS = 16  # an AvatarSession's whole conversation fits many times over
_BODY_EXCERPT_CHARS = 500
_BODY_KEEP_BYTES = 4096  # a larger error body is kept as a text excerpt, not decoded
_REQUEST_SECRETS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "protoface_request_secrets", default=()
)


class Redactor:
    """Replaces the client's secrets with `[redacted]` in text, JSON and errors."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key
        self._tokens: deque[str] = deque(maxlen=_RECENT_TOKENS)

    def __repr__(self) -> str:
        return f"Redactor(tokens={len(self._tokens)})"

    @contextlib.contextmanager
    def request_secret(self, token: str | None) -> Iterator[None]:
        """Within the block, also redact `token`; remember it for later answers.

        Used for a create's worker token: the answer to that create, and the
        reads of the session that follow, must not surface it either.
        """
        if not token:
            yield
            return
        if token not in self._tokens:
            self._tokens.append(token)
        scope = _REQUEST_SECRETS.set((*_REQUEST_SECRETS.get(), token))
        try:
            yield
        finally:
            _REQUEST_SECRETS.reset(scope)

    def secrets(self) -> tuple[str, ...]:
        """Every value redacted right now."""
        return (self._api_key, *self._tokens, *_REQUEST_SECRETS.get())

    def text(self, text: str) -> str:
        """`text` with every secret replaced."""
        # Longest first, so a secret containing another is replaced whole.
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def field(self, value: object, limit: int = FIELD_CHARS) -> str | None:
        """A server-provided string fit to quote in an error: redacted, one line, short."""
        if not isinstance(value, str) or not value:
            return None
        # Redact before clipping, so a secret cut in half cannot survive.
        return one_line(clip(self.text(value), limit))

    def parse(self, raw: bytes | None) -> object:
        """The decoded JSON body with secrets redacted, or `NOT_JSON`."""
        if raw is None:
            return NOT_JSON
        try:
            payload: object = json.loads(raw)
            secrets = self.secrets()
            # Without a backslash every decoded string stands in the raw bytes as
            # is, so a secret absent from them is absent from the payload: the
            # common case skips re-encoding the whole body.
            if b"\\" in raw or any(secret.encode() in raw for secret in secrets):
                # Redacting the text form also reaches keys and escaped characters.
                text = json.dumps(payload, ensure_ascii=False)
                if any(secret in text for secret in secrets):
                    payload = json.loads(self.text(text))
        except (ValueError, RecursionError):
            # RecursionError: a hostile body nested thousands of levels deep.
            return NOT_JSON
        return payload

    def error_body(self, raw: bytes | None, payload: object) -> object:
        """What an exception keeps as `body`: small JSON decoded, else a short excerpt."""
        if raw is None or not raw.strip():
            return None
        if payload is not NOT_JSON and len(raw) <= _BODY_KEEP_BYTES:
            return payload
        return clip(self.text(raw.decode("utf-8", "replace")), _BODY_EXCERPT_CHARS)

    def scrub(self, error: BaseException) -> None:
        """Redact what a network error (and its causes) copied from the exchange.

        The client never asks aiohttp to raise on a status, but aiohttp's
        response parser raises `ClientResponseError` for a malformed answer (a
        bad status line), carrying the request headers (the bearer key) and
        the bytes the server sent; the exception is kept as a cause, so it
        must not carry either.
        """
        current: BaseException | None = error
        seen: set[int] = set()
        while current is not None and id(current) not in seen and len(seen) < 8:
            seen.add(id(current))
            if isinstance(current, aiohttp.ClientResponseError):
                info = current.request_info
                current.request_info = aiohttp.RequestInfo(
                    info.url, info.method, self._headers(info.headers), info.real_url
                )
                if current.headers is not None:
                    current.headers = self._headers(current.headers)
                current.args = (current.request_info, current.history)
            message = getattr(current, "message", None)
            if isinstance(message, str):
                with contextlib.suppress(AttributeError):
                    current.message = self.text(message)  # type: ignore[attr-defined]
            current.args = tuple(
                self.text(arg) if isinstance(arg, str) else arg for arg in current.args
            )
            current = current.__cause__ or current.__context__

    def _headers(self, headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(
            CIMultiDict(
                (name, REDACTED if name.lower() == "authorization" else self.text(value))
                for name, value in headers.items()
            )
        )


def one_line(text: str) -> str:
    """`text` without control characters: a server cannot forge log lines through it."""
    return "".join(ch if ch.isprintable() else " " for ch in text)

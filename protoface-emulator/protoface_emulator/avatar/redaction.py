"""Keeping the worker token out of logs and reports.

The worker token is a secret: it is never logged, and LiveKit's connect errors
(which quote the token back) are redacted before they are reported or logged.
The framework's per-utterance note about `lk.playback_started` is demoted too.
"""

from __future__ import annotations

import logging
import re

__all__ = ["install_token_redaction", "is_auth_error", "redact"]

# JWTs (three base64url parts, the first being a JSON header) anywhere in a message.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ACCESS_TOKEN_RE = re.compile(r"(access_token=)[^&\s]+")


def is_auth_error(message: str) -> bool:
    lowered = message.lower()
    return any(
        marker in lowered
        for marker in ("401", "403", "unauthorized", "forbidden", "permission denied")
    )


def redact(text: str) -> str:
    """`text` with any JWT (the worker token, echoed by LiveKit errors) removed."""
    return _ACCESS_TOKEN_RE.sub(r"\1[redacted]", _JWT_RE.sub("[redacted]", text))


class _RedactTokens(logging.Filter):
    """Redacts JWTs from the records of LiveKit's native SDK, which logs rejected tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class _QuietPlaybackStarted(logging.Filter):
    """Demotes the framework's per-utterance error about `lk.playback_started`.

    The plugin, like the published one, does not ask to be told when playback
    starts, so the agent never registers that RPC and the receiver logs an ERROR
    for every utterance. Nothing is wrong; keep the note at DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "lk.playback_started" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # The logger's level was checked at ERROR; check it again at DEBUG.
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_redaction_installed = False


def install_token_redaction() -> None:
    global _redaction_installed
    if _redaction_installed:
        return
    _redaction_installed = True
    # The native SDK's records go to the "livekit" logger (see livekit.rtc.log).
    logging.getLogger("livekit").addFilter(_RedactTokens())
    logging.getLogger("livekit.agents").addFilter(_QuietPlaybackStarted())

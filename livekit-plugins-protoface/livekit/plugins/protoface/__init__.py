"""Protoface avatar plugin for LiveKit Agents.

`AvatarSession` puts a hosted Protoface avatar in an agent's room;
`ProtofaceAPI` is the HTTP client behind it, usable on its own in scripts.
"""

from .api import DEFAULT_API_URL, ProtofaceAPI
from .avatar import DEFAULT_STOCK_AVATAR_ID, AvatarLostEvent, AvatarSession
from .errors import (
    AvatarSessionFailedError,
    ProtofaceAPIError,
    ProtofaceException,
    ProtofaceRetryAfterTooLongError,
    ProtofaceValueError,
)
from .version import __version__

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_STOCK_AVATAR_ID",
    "AvatarLostEvent",
    "AvatarSession",
    "AvatarSessionFailedError",
    "ProtofaceAPI",
    "ProtofaceAPIError",
    "ProtofaceException",
    "ProtofaceRetryAfterTooLongError",
    "ProtofaceValueError",
    "__version__",
]

from livekit.agents import Plugin

from .log import logger


class ProtofacePlugin(Plugin):
    """Registers the package with LiveKit Agents (name, version, logger)."""

    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(ProtofacePlugin())

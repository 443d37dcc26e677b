"""Protoface avatar plugin for LiveKit Agents.

`AvatarSession` puts a hosted Protoface avatar in an agent's room for the
whole conversation; `ProtofaceAPI` is the HTTP client behind it, usable on
its own in scripts. The modules, in the order data flows through them:

- `avatar`: `AvatarSession`, orchestrating start, lifetime and close;
- `lifetime`: join, keep-alive, loss, replacement and handover;
- `hosted`, `monitor`, `output`, `fallback`, `recovery`, `tokens`: one
  hosted session each, watching it, routing the agent's audio, the room's
  own track, the replacement policy, the worker's LiveKit token;
- `api`: `ProtofaceAPI`, one method per endpoint; `requester` (the request
  loop), `retry` (the policy), `redact` (secrets out of errors);
- `usage` (`AvatarUsage`: what the avatars cost and did) and `telemetry`
  (OpenTelemetry spans and metrics through livekit-agents' providers);
- `types` (the contract: options, resources, constants), `validation`,
  `errors`, `events`, and `compat` (every livekit-agents internal we touch).
"""

from .api import DEFAULT_API_URL, ProtofaceAPI
from .avatar import DEFAULT_STOCK_AVATAR_ID, AvatarSession
from .errors import (
    AvatarSessionFailedError,
    ProtofaceAPIError,
    ProtofaceException,
    ProtofaceRetryAfterTooLongError,
    ProtofaceValueError,
)
from .events import (
    AvatarHandoverEvent,
    AvatarLostEvent,
    AvatarRestoredEvent,
    AvatarSwitchedEvent,
)
from .recovery import RecoveryPolicy
from .types import SessionOptions
from .usage import AvatarUsage
from .version import __version__

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_STOCK_AVATAR_ID",
    "AvatarHandoverEvent",
    "AvatarLostEvent",
    "AvatarRestoredEvent",
    "AvatarSession",
    "AvatarSessionFailedError",
    "AvatarSwitchedEvent",
    "AvatarUsage",
    "ProtofaceAPI",
    "ProtofaceAPIError",
    "ProtofaceException",
    "ProtofaceRetryAfterTooLongError",
    "ProtofaceValueError",
    "RecoveryPolicy",
    "SessionOptions",
    "__version__",
]

from livekit.agents import Plugin

from .log import logger


class ProtofacePlugin(Plugin):
    """Registers the package with LiveKit Agents (name, version, logger)."""

    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(ProtofacePlugin())

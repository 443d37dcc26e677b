"""The API contract's constants: one copy of each rule, for the whole emulator.

Everything here is fixed by the public API (`/work/shared/protoface-api.md`, and
`protoface-sdk`'s models): the values a request may carry, the statuses a
session moves through, the limits. `api/requests.py` and `api/queries.py`
validate against them, `api/store.py` applies them, and a contract test checks
that the plugin, the emulator and `protoface-sdk` agree on each. Defaults of the
emulator itself (its plan, its timers) are not here; they live with the code they configure.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# --- sessions -------------------------------------------------------------------

Quality = Literal["mock", "lite", "standard", "pro"]
QUALITIES: tuple[Quality, ...] = get_args(Quality)
"""The values of `quality`, cheapest first."""
DEFAULT_QUALITY: Quality = "standard"

SessionStatus = Literal[
    "created", "queued", "starting", "running", "ending", "ended", "failed", "canceled"
]
SESSION_STATUSES: tuple[SessionStatus, ...] = get_args(SessionStatus)
"""Every session status, in lifecycle order."""
TERMINAL_SESSION_STATUSES: frozenset[SessionStatus] = frozenset({"ended", "failed", "canceled"})
"""Statuses a session never leaves."""
LIVE_STATUSES: frozenset[SessionStatus] = frozenset({"queued", "starting", "running"})
"""Statuses in which a session holds a worker and may still be ended or fail."""

AudioSource = Literal["data_stream", "track"]
AUDIO_SOURCES: tuple[AudioSource, ...] = get_args(AudioSource)
DEFAULT_AUDIO_SOURCE: AudioSource = "data_stream"

MAX_DURATION_RANGE = (1, 3600)
"""Inclusive bounds of `max_duration_seconds` (the plan may clamp it lower)."""
IDLE_TIMEOUT_RANGE = (1, 600)
"""Inclusive bounds of `idle_timeout_seconds`."""
DEFAULT_IDLE_TIMEOUT_SECONDS = 30

METADATA_MAX_BYTES = 8 * 1024
"""`metadata` as compact UTF-8 JSON may be this long; one byte more is refused."""
RESERVED_METADATA_PREFIX = "_avatar."
"""Metadata keys starting with this belong to Protoface; clients may not send them."""
END_REASON_METADATA_KEY = RESERVED_METADATA_PREFIX + "end_reason"
"""The metadata key where an ended session says why it ended."""

TRANSPORT_TYPE_LIVEKIT: Final = "livekit"
TRANSPORT_URL_SCHEMES = ("ws://", "wss://", "http://", "https://")
UNSUPPORTED_TRANSPORTS = ("websocket", "pipecat")
"""Transport types the SDK's models know but `POST /v1/sessions` does not serve."""
DEFAULT_WORKER_IDENTITY = "protoface-worker"

# --- avatars --------------------------------------------------------------------

AvatarStatus = Literal["ready", "processing", "failed"]
STOCK_AVATAR_ID = "av_stock_001"
"""The stock avatar every account has."""
AVATAR_NAME_MAX_LENGTH = 100
AVATAR_RUNTIME_TYPES = ("avtr1", "mock")
DEFAULT_AVATAR_RUNTIME_TYPE = "avtr1"
DEFAULT_AVATAR_NAME = "Custom Avatar"
AVATAR_SCOPES = ("all", "stock", "custom")

# --- requests -------------------------------------------------------------------

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_CHARS = 255
IDEMPOTENT_REPLAYED_HEADER = "Idempotent-Replayed"
REQUEST_ID_HEADER = "X-Request-Id"
JSON_BODY_LIMIT = 64 * 1024
"""Largest JSON body in bytes (after decompression); one more is a 413."""
UPLOAD_BODY_LIMIT = 10 * 1024 * 1024
"""Largest avatar upload in bytes."""
PAGE_LIMIT_RANGE = (1, 100)
DEFAULT_PAGE_LIMIT = 10


def is_valid_idempotency_key(key: str) -> bool:
    """The idempotency-key rule: 1 to 255 printable ASCII characters (spaces allowed)."""
    return 0 < len(key) <= IDEMPOTENCY_KEY_MAX_CHARS and key.isascii() and key.isprintable()

"""The request bodies: a session create, a Pipecat create, an avatar upload, validated.

Each parser takes the decoded body (`decoding.parse_json_object`) or the
multipart parts and returns a frozen value with the defaults applied, or raises
an `ApiError` naming the first offending field.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from protoface_emulator.api.decoding import (
    JSONObject,
    MetadataValue,
    json_type,
    optional_bool,
    optional_choice,
    optional_int,
    optional_str,
    parse_metadata,
    reject_unknown_fields,
    required_str,
)
from protoface_emulator.api.errors import (
    CODE_DUPLICATE_FIELD,
    CODE_INVALID_IMAGE,
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_MISSING_FIELD,
    CODE_TRANSPORT_UNSUPPORTED,
    CODE_UNKNOWN_FIELD,
    invalid,
    shown,
)
from protoface_emulator.contract import (
    AUDIO_SOURCES,
    AVATAR_NAME_MAX_LENGTH,
    AVATAR_RUNTIME_TYPES,
    DEFAULT_AUDIO_SOURCE,
    DEFAULT_AVATAR_NAME,
    DEFAULT_AVATAR_RUNTIME_TYPE,
    DEFAULT_IDLE_TIMEOUT_SECONDS,
    DEFAULT_QUALITY,
    DEFAULT_WORKER_IDENTITY,
    IDLE_TIMEOUT_RANGE,
    MAX_DURATION_RANGE,
    QUALITIES,
    TRANSPORT_TYPE_LIVEKIT,
    TRANSPORT_URL_SCHEMES,
    UNSUPPORTED_TRANSPORTS,
    AudioSource,
    Quality,
)
from protoface_emulator.lifecycle import LiveKitTransport


@dataclass(frozen=True)
class SessionCreate:
    """A validated `POST /v1/sessions` body, defaults applied.

    `max_duration_seconds` is what the client asked for (None when absent); the
    store clamps it to the plan.
    """

    avatar_id: str
    transport: LiveKitTransport
    quality: Quality
    max_duration_seconds: int | None
    idle_timeout_seconds: int
    metadata: dict[str, MetadataValue]


_SESSION_FIELDS = (
    "avatar_id",
    "transport",
    "quality",
    "max_duration_seconds",
    "idle_timeout_seconds",
    "metadata",
)
_LIVEKIT_FIELDS = ("type", *LiveKitTransport.field_names())


def _has_control_character(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def _transport_url(url: str) -> str:
    """`transport.url` if the worker could connect to it: ws(s)/http(s) with a host."""
    problem = None
    if not url.lower().startswith(TRANSPORT_URL_SCHEMES):
        problem = "must be a ws://, wss://, http:// or https:// URL"
    elif any(char.isspace() for char in url) or _has_control_character(url):
        problem = "must not contain spaces or control characters"
    else:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
        except ValueError:
            parts = None
        if parts is None or not parts.hostname:
            problem = "must name a host, e.g. wss://my-app.livekit.cloud"
    if problem is not None:
        raise invalid(
            CODE_INVALID_VALUE, f"transport.url {problem}; got {shown(url, 200)}.", "transport.url"
        )
    return url


def _livekit_transport_object(body: JSONObject) -> JSONObject:
    """The body's `transport`, once it is an object of type `livekit`."""
    if "transport" not in body:
        raise invalid(CODE_MISSING_FIELD, "transport is required.", "transport")
    value = body["transport"]
    if not isinstance(value, dict):
        raise invalid(
            CODE_INVALID_TYPE,
            f"transport must be an object with a `type`, not {json_type(value)}.",
            "transport",
        )
    if "type" not in value:
        # The SDK's models discriminate on `type`; without it nothing says which shape to expect.
        raise invalid(
            CODE_MISSING_FIELD, "transport.type is required; use 'livekit'.", "transport.type"
        )
    kind = value["type"]
    if kind in UNSUPPORTED_TRANSPORTS:
        raise invalid(
            CODE_TRANSPORT_UNSUPPORTED,
            f"transport.type {kind!r} is not supported by POST /v1/sessions; use 'livekit'.",
            "transport.type",
        )
    if kind != TRANSPORT_TYPE_LIVEKIT:
        shown = repr(kind) if isinstance(kind, str) else json_type(kind)
        raise invalid(
            CODE_INVALID_VALUE,
            f"transport.type must be 'livekit'; got {shown}.",
            "transport.type",
        )
    return value


def _transport(body: JSONObject) -> LiveKitTransport:
    value = _livekit_transport_object(body)
    reject_unknown_fields(value, _LIVEKIT_FIELDS, "transport")
    url = _transport_url(required_str(value, "url", "transport"))
    room_name = required_str(value, "room_name", "transport")
    worker_token = required_str(value, "worker_token", "transport")
    identity = optional_str(value, "worker_identity", "transport")
    audio_source = optional_choice(value, "audio_source", "transport", AUDIO_SOURCES)
    subscribe_to = optional_str(value, "subscribe_to_identity", "transport")
    for key, text in (
        ("room_name", room_name),
        ("worker_token", worker_token),
        ("worker_identity", identity),
        ("subscribe_to_identity", subscribe_to),
    ):
        # The worker hands these to LiveKit (a JWT, names in its protocol); a NUL or
        # a newline there can only be a mistake. The value is not echoed: it may be
        # the token.
        if text is not None and _has_control_character(text):
            raise invalid(
                CODE_INVALID_VALUE,
                f"transport.{key} must not contain control characters (such as NUL or a "
                "line break).",
                f"transport.{key}",
            )
    synthetic = optional_bool(value, "synthetic_audio_if_no_input", "transport")
    return LiveKitTransport(
        url=url,
        room_name=room_name,
        worker_token=worker_token,
        worker_identity=identity or DEFAULT_WORKER_IDENTITY,
        audio_source=cast(AudioSource, audio_source or DEFAULT_AUDIO_SOURCE),
        subscribe_to_identity=subscribe_to,
        synthetic_audio_if_no_input=bool(synthetic),
    )


@dataclass(frozen=True)
class _CommonFields:
    avatar_id: str
    quality: Quality
    max_duration_seconds: int | None
    idle_timeout_seconds: int
    metadata: dict[str, MetadataValue]


def _common(body: JSONObject) -> _CommonFields:
    avatar_id = required_str(body, "avatar_id", "")
    quality = optional_choice(body, "quality", "", QUALITIES)
    max_duration = optional_int(body, "max_duration_seconds", "", MAX_DURATION_RANGE)
    idle = optional_int(body, "idle_timeout_seconds", "", IDLE_TIMEOUT_RANGE)
    return _CommonFields(
        avatar_id=avatar_id,
        quality=cast(Quality, quality or DEFAULT_QUALITY),
        max_duration_seconds=max_duration,
        idle_timeout_seconds=idle or DEFAULT_IDLE_TIMEOUT_SECONDS,
        metadata=parse_metadata(body),
    )


def parse_session_create(body: JSONObject) -> SessionCreate:
    """Validate a `POST /v1/sessions` body (the SessionCreateRequest model).

    Raises:
        ApiError: 400 naming the first offending field.
    """
    reject_unknown_fields(body, _SESSION_FIELDS, "")
    for required in ("avatar_id", "transport"):
        if required not in body:
            raise invalid(CODE_MISSING_FIELD, f"{required} is required.", required)
    # Then the transport: an unsupported transport is the most useful thing to hear.
    transport = _transport(body)
    common = _common(body)
    return SessionCreate(
        avatar_id=common.avatar_id,
        transport=transport,
        quality=common.quality,
        max_duration_seconds=common.max_duration_seconds,
        idle_timeout_seconds=common.idle_timeout_seconds,
        metadata=common.metadata,
    )


_PIPECAT_FIELDS = (
    "avatar_id",
    "quality",
    "relay_mode",
    "max_duration_seconds",
    "idle_timeout_seconds",
    "metadata",
)


def validate_pipecat_create(body: JSONObject) -> str:
    """Validate a `POST /v1/pipecat/sessions` body; returns its avatar id.

    The emulator does not serve Pipecat relays, but a malformed request still
    hears what is malformed about it before hearing that.
    """
    reject_unknown_fields(body, _PIPECAT_FIELDS, "")
    common = _common(body)
    optional_choice(body, "relay_mode", "", ("websocket",))
    return common.avatar_id


def parse_no_body(body: JSONObject) -> None:
    """A call that takes no fields (`POST .../end`): an empty body or `{}`."""
    if body:
        first = next(iter(body))
        raise invalid(
            CODE_UNKNOWN_FIELD, f"Unknown field {first!r}; this call takes no body.", first
        )


def request_fingerprint(body: JSONObject) -> str:
    """What makes two creates "the same request" for idempotency: the canonical body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class AvatarCreate:
    """A validated `POST /v1/avatars` upload, defaults applied."""

    name: str
    runtime_type: str
    # The uploaded file: the avatar's workers show it (face.style_for).
    image: bytes = field(default=b"", repr=False)


_AVATAR_FORM_FIELDS = ("image", "name", "runtime_type")


def parse_avatar_upload(form: Sequence[tuple[str, str | bytes]]) -> AvatarCreate:
    """Validate the parts of a multipart upload: text parts as str, file parts as bytes.

    Raises:
        ApiError: 400 naming the first offending form field.
    """
    fields: dict[str, str | bytes] = {}
    for key, value in form:
        if key not in _AVATAR_FORM_FIELDS:
            raise invalid(
                CODE_UNKNOWN_FIELD,
                f"Unknown form field {key!r}; the accepted fields are "
                f"{', '.join(_AVATAR_FORM_FIELDS)}.",
                key,
            )
        if key in fields:
            raise invalid(CODE_DUPLICATE_FIELD, f"Send the form field {key!r} once.", key)
        fields[key] = value
    image = fields.get("image")
    if image is None:
        raise invalid(CODE_MISSING_FIELD, "image is required (a PNG or JPEG file).", "image")
    data = image.encode() if isinstance(image, str) else image
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")):
        raise invalid(CODE_INVALID_IMAGE, "image must be a PNG or JPEG file.", "image")
    name = _form_text(fields, "name") or DEFAULT_AVATAR_NAME
    if len(name) > AVATAR_NAME_MAX_LENGTH:
        raise invalid(
            CODE_INVALID_VALUE, f"name must be at most {AVATAR_NAME_MAX_LENGTH} characters.", "name"
        )
    if not name.isprintable():
        raise invalid(
            CODE_INVALID_VALUE,
            "name must be one line of printable text (no control characters).",
            "name",
        )
    runtime_type = _form_text(fields, "runtime_type") or DEFAULT_AVATAR_RUNTIME_TYPE
    if runtime_type not in AVATAR_RUNTIME_TYPES:
        raise invalid(
            CODE_INVALID_VALUE,
            f"runtime_type must be one of {', '.join(AVATAR_RUNTIME_TYPES)}; got {runtime_type!r}.",
            "runtime_type",
        )
    return AvatarCreate(name=name, runtime_type=runtime_type, image=data)


def _form_text(fields: Mapping[str, str | bytes], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(CODE_INVALID_TYPE, f"{name} must be a text field, not a file.", name)
    return value.strip() or None

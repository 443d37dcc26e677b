"""The wire shapes: request validation and the resources the API returns.

Validation mirrors the official SDK's models (`protoface_sdk._generated`, which
forbid unknown fields) but is stricter about JSON types, as the hosted API is: an
integer field takes a JSON integer only (not `true`, not `30.0`, not `"30"`).
Every failure is an `ApiError` naming the first offending field as a dot path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeAlias, TypedDict, cast
from urllib.parse import urlsplit

from multidict import MultiMapping

from protoface_emulator.api.errors import (
    CODE_DUPLICATE_FIELD,
    CODE_EXPECTATION_FAILED,
    CODE_INVALID_API_KEY,
    CODE_INVALID_BODY,
    CODE_INVALID_IDEMPOTENCY_KEY,
    CODE_INVALID_IMAGE,
    CODE_INVALID_JSON,
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_METADATA_RESERVED_KEY,
    CODE_METADATA_TOO_LARGE,
    CODE_MISSING_API_KEY,
    CODE_MISSING_FIELD,
    CODE_OUT_OF_RANGE,
    CODE_REQUEST_TOO_LARGE,
    CODE_TRANSPORT_UNSUPPORTED,
    CODE_UNKNOWN_FIELD,
    CODE_UNKNOWN_PARAMETER,
    CODE_UNSUPPORTED_MEDIA_TYPE,
    ApiError,
    invalid,
    shown,
)
from protoface_emulator.contract import (
    AUDIO_SOURCES,
    AVATAR_NAME_MAX_LENGTH,
    AVATAR_RUNTIME_TYPES,
    AVATAR_SCOPES,
    DEFAULT_AUDIO_SOURCE,
    DEFAULT_AVATAR_NAME,
    DEFAULT_AVATAR_RUNTIME_TYPE,
    DEFAULT_IDLE_TIMEOUT_SECONDS,
    DEFAULT_PAGE_LIMIT,
    DEFAULT_QUALITY,
    DEFAULT_WORKER_IDENTITY,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDLE_TIMEOUT_RANGE,
    MAX_DURATION_RANGE,
    METADATA_MAX_BYTES,
    PAGE_LIMIT_RANGE,
    QUALITIES,
    RESERVED_METADATA_PREFIX,
    SESSION_STATUSES,
    TRANSPORT_TYPE_LIVEKIT,
    TRANSPORT_URL_SCHEMES,
    UNSUPPORTED_TRANSPORTS,
    AudioSource,
    AvatarStatus,
    Quality,
    SessionStatus,
    is_valid_idempotency_key,
)

# Recursive JSON, as `json.loads` produces it.
JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = "dict[str, JSONValue]"
MetadataValue: TypeAlias = "str | int | float | bool | None"


# --- requests -------------------------------------------------------------------


@dataclass(frozen=True)
class LiveKitTransport:
    """A validated LiveKit transport from a create request."""

    url: str
    room_name: str
    worker_identity: str
    audio_source: AudioSource
    subscribe_to_identity: str | None
    synthetic_audio_if_no_input: bool
    # Write-only: goes to the worker and nowhere else; kept out of repr() so it
    # cannot reach a log line by accident.
    worker_token: str = field(repr=False)


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


def _reject_constant(name: str) -> JSONValue:
    # json.loads accepts NaN and Infinity by default; they are not JSON.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e400 decodes to inf, which would go back out as the non-JSON `Infinity`.
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


class _ObjectWithDuplicate(dict[str, JSONValue]):
    """A decoded JSON object that had a key twice; reported with its path later."""

    duplicate: str = ""


def _object_without_duplicates(pairs: list[tuple[str, JSONValue]]) -> JSONObject:
    result: JSONObject = {}
    for key, value in pairs:
        if key in result:
            # Which of two values wins is parser-specific, so the body is refused. The
            # hook cannot see where this object sits; `_check_decoded` names the path.
            marked = _ObjectWithDuplicate(result)
            marked.duplicate = key
            return marked
        result[key] = value
    return result


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_decoded(value: JSONValue) -> None:
    """Refuse what `json.loads` lets through: duplicate keys and unpaired surrogates.

    An escape such as `\\ud800` is legal JSON syntax but no character: it could be
    neither stored nor sent back as UTF-8. Iterative, so deep documents cost no stack;
    depth-first in document order, so the first offence is the one reported.
    """
    stack: list[tuple[str, JSONValue]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                raise invalid(
                    CODE_INVALID_JSON,
                    "The request body contains an unpaired UTF-16 surrogate escape (such as "
                    "\\ud800); JSON strings must be valid Unicode.",
                )
        elif isinstance(item, dict):
            if isinstance(item, _ObjectWithDuplicate):
                name = _path(path, item.duplicate)
                if _has_surrogate(name):
                    raise invalid(CODE_INVALID_JSON, "The request body repeats a key.")
                raise invalid(
                    CODE_DUPLICATE_FIELD,
                    f"The field {name!r} appears more than once in a JSON object; send it once.",
                    name,
                )
            for key, child in reversed(list(item.items())):
                stack.append((_path(path, key), child))
                stack.append((path, key))  # the key itself must be valid Unicode too
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append((_path(path, str(index)), item[index]))


def parse_json_object(raw: bytes) -> JSONObject:
    """Decode a request body that must be one JSON object.

    Raises:
        ApiError: 400 `invalid_json` (empty, not UTF-8, not JSON, NaN/Infinity, a
            number out of range, an unpaired surrogate), `duplicate_field` (param: the
            key's dot path) or `invalid_body` (JSON but not an object).
    """
    if not raw.strip():
        raise invalid(CODE_INVALID_JSON, "The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
        value = cast(
            JSONValue,
            json.loads(
                text,
                parse_constant=_reject_constant,
                parse_float=_finite_float,
                object_pairs_hook=_object_without_duplicates,
            ),
        )
    except UnicodeDecodeError:
        raise invalid(CODE_INVALID_JSON, "The request body is not UTF-8 encoded JSON.") from None
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, NaN/Infinity and over-long numbers.
        raise invalid(CODE_INVALID_JSON, f"The request body is not valid JSON: {exc}.") from None
    _check_decoded(value)
    if not isinstance(value, dict):
        raise invalid(
            CODE_INVALID_BODY,
            f"The request body must be a JSON object, not {_json_type(value)}.",
        )
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def reject_unknown_fields(obj: Mapping[str, object], allowed: Iterable[str], prefix: str) -> None:
    """Raise `unknown_field` for the first key of `obj` not in `allowed`."""
    allowed_set = set(allowed)
    for key in obj:
        if key not in allowed_set:
            known = ", ".join(sorted(allowed_set))
            raise invalid(
                CODE_UNKNOWN_FIELD,
                f"Unknown field {_path(prefix, key)!r}; the accepted fields here are: {known}.",
                _path(prefix, key),
            )


def _required_str(obj: JSONObject, key: str, prefix: str) -> str:
    if key not in obj:
        raise invalid(CODE_MISSING_FIELD, f"{_path(prefix, key)} is required.", _path(prefix, key))
    value = _optional_str(obj, key, prefix)
    if value is None:
        raise invalid(
            CODE_INVALID_TYPE,
            f"{_path(prefix, key)} must be a string, not null.",
            _path(prefix, key),
        )
    return value


def _optional_str(obj: JSONObject, key: str, prefix: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(
            CODE_INVALID_TYPE,
            f"{_path(prefix, key)} must be a string, not {_json_type(value)}.",
            _path(prefix, key),
        )
    if not value.strip():
        raise invalid(
            CODE_INVALID_VALUE,
            f"{_path(prefix, key)} must not be empty.",
            _path(prefix, key),
        )
    return value


def _optional_int(obj: JSONObject, key: str, prefix: str, bounds: tuple[int, int]) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    name = _path(prefix, key)
    low, high = bounds
    # bool is a subclass of int in Python; JSON `true` is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(
            CODE_INVALID_TYPE,
            f"{name} must be an integer between {low} and {high}, not {_json_type(value)}.",
            name,
        )
    if not low <= value <= high:
        raise invalid(
            CODE_OUT_OF_RANGE,
            f"{name} must be between {low} and {high}; got {value}.",
            name,
        )
    return value


def _optional_bool(obj: JSONObject, key: str, prefix: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid(
            CODE_INVALID_TYPE,
            f"{_path(prefix, key)} must be true or false, not {_json_type(value)}.",
            _path(prefix, key),
        )
    return value


def _optional_choice(
    obj: JSONObject, key: str, prefix: str, choices: tuple[str, ...]
) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    name = _path(prefix, key)
    if not isinstance(value, str):
        raise invalid(
            CODE_INVALID_TYPE,
            f"{name} must be one of {', '.join(choices)}; not {_json_type(value)}.",
            name,
        )
    if value not in choices:
        raise invalid(
            CODE_INVALID_VALUE,
            f"{name} must be one of {', '.join(choices)}; got {value!r}.",
            name,
        )
    return value


def _metadata(obj: JSONObject) -> dict[str, MetadataValue]:
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(
            CODE_INVALID_TYPE,
            f"metadata must be an object of string keys to scalar values, not {_json_type(value)}.",
            "metadata",
        )
    result: dict[str, MetadataValue] = {}
    for key, item in value.items():
        name = f"metadata.{key}"
        if key.startswith(RESERVED_METADATA_PREFIX):
            raise invalid(
                CODE_METADATA_RESERVED_KEY,
                f"Metadata keys starting with {RESERVED_METADATA_PREFIX!r} are reserved for "
                f"Protoface; rename {key!r}.",
                name,
            )
        if isinstance(item, (list, dict)):
            raise invalid(
                CODE_INVALID_TYPE,
                f"{name} must be a string, number, boolean or null, not {_json_type(item)}.",
                name,
            )
        result[key] = item
    size = len(json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > METADATA_MAX_BYTES:
        raise invalid(
            CODE_METADATA_TOO_LARGE,
            f"metadata is {size} bytes as JSON; the limit is {METADATA_MAX_BYTES} bytes.",
            "metadata",
        )
    return result


_SESSION_FIELDS = (
    "avatar_id",
    "transport",
    "quality",
    "max_duration_seconds",
    "idle_timeout_seconds",
    "metadata",
)
_LIVEKIT_FIELDS = (
    "type",
    "url",
    "room_name",
    "worker_token",
    "worker_identity",
    "audio_source",
    "subscribe_to_identity",
    "synthetic_audio_if_no_input",
)


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


def _transport(body: JSONObject) -> LiveKitTransport:
    if "transport" not in body:
        raise invalid(CODE_MISSING_FIELD, "transport is required.", "transport")
    value = body["transport"]
    if not isinstance(value, dict):
        raise invalid(
            CODE_INVALID_TYPE,
            f"transport must be an object with a `type`, not {_json_type(value)}.",
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
        shown = repr(kind) if isinstance(kind, str) else _json_type(kind)
        raise invalid(
            CODE_INVALID_VALUE,
            f"transport.type must be 'livekit'; got {shown}.",
            "transport.type",
        )
    reject_unknown_fields(value, _LIVEKIT_FIELDS, "transport")
    url = _transport_url(_required_str(value, "url", "transport"))
    room_name = _required_str(value, "room_name", "transport")
    worker_token = _required_str(value, "worker_token", "transport")
    identity = _optional_str(value, "worker_identity", "transport")
    audio_source = _optional_choice(value, "audio_source", "transport", AUDIO_SOURCES)
    subscribe_to = _optional_str(value, "subscribe_to_identity", "transport")
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
    synthetic = _optional_bool(value, "synthetic_audio_if_no_input", "transport")
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
    avatar_id = _required_str(body, "avatar_id", "")
    quality = _optional_choice(body, "quality", "", QUALITIES)
    max_duration = _optional_int(body, "max_duration_seconds", "", MAX_DURATION_RANGE)
    idle = _optional_int(body, "idle_timeout_seconds", "", IDLE_TIMEOUT_RANGE)
    return _CommonFields(
        avatar_id=avatar_id,
        quality=cast(Quality, quality or DEFAULT_QUALITY),
        max_duration_seconds=max_duration,
        idle_timeout_seconds=idle or DEFAULT_IDLE_TIMEOUT_SECONDS,
        metadata=_metadata(body),
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
    _optional_choice(body, "relay_mode", "", ("websocket",))
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


# --- avatar uploads -------------------------------------------------------------


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


# --- headers --------------------------------------------------------------------

# Codings aiohttp decodes while reading a body (br and zstd only when their packages
# are installed; without them aiohttp refuses the request before the app sees it).
DECODED_CONTENT_ENCODINGS = frozenset({"identity", "gzip", "deflate", "br", "zstd"})


def check_bearer(authorization: Sequence[str], key_digest: bytes) -> None:
    """Authenticate `Authorization` header values against the SHA-256 of the API key.

    Raises:
        ApiError: 401 `missing_api_key` without a key, `invalid_api_key` for a wrong
            one, another scheme, or two Authorization headers (which would count?).
    """
    challenge = {"WWW-Authenticate": 'Bearer realm="protoface"'}
    if not authorization or (len(authorization) == 1 and not authorization[0].strip()):
        raise ApiError(
            401,
            CODE_MISSING_API_KEY,
            "No API key: send the header 'Authorization: Bearer <api key>'.",
            headers=challenge,
        )
    # RFC 9110 separates scheme and credentials by one or more spaces.
    scheme, _, token = authorization[0].strip().partition(" ")
    presented = token.strip().encode("utf-8", "backslashreplace")
    # Digests of equal length, compared even for a malformed header, so neither the
    # key's length nor its content shows in the timing.
    valid = hmac.compare_digest(hashlib.sha256(presented).digest(), key_digest)
    if len(authorization) != 1 or scheme.lower() != "bearer" or not valid:
        raise ApiError(
            401,
            CODE_INVALID_API_KEY,
            "The API key is not valid; send 'Authorization: Bearer <api key>' with the "
            "key the emulator printed or was started with.",
            headers=challenge,
        )


def check_expectation(expect: str) -> None:
    """`Expect` must be `100-continue`; anything else is a 417."""
    if expect.strip().lower() != "100-continue":
        raise ApiError(
            417,
            CODE_EXPECTATION_FAILED,
            f"The only expectation supported is 'Expect: 100-continue'; got {expect!r}.",
        )


def too_large(limit: int) -> ApiError:
    """The 413 for a body over `limit` bytes."""
    return ApiError(
        413,
        CODE_REQUEST_TOO_LARGE,
        f"The request body is larger than the {limit} bytes allowed here.",
    )


def check_body_headers(
    content_encoding: str | None, content_length: int | None, limit: int
) -> None:
    """What the headers alone say about a body: its coding, and a declared length.

    Raises:
        ApiError: 415 for a Content-Encoding aiohttp would pass through undecoded,
            413 for a Content-Length over `limit`.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in DECODED_CONTENT_ENCODINGS:
        raise ApiError(
            415,
            CODE_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is not supported; send the body "
            "uncompressed, or as gzip or deflate.",
        )
    if content_length is not None and content_length > limit:
        raise too_large(limit)


def undecodable_body() -> ApiError:
    """The 400 for a body whose coding or framing is broken."""
    return invalid(
        CODE_INVALID_BODY,
        "The request body could not be decoded; check its Content-Encoding and Transfer-Encoding.",
    )


def check_json_media_type(content_type: str | None, media: str, charset: str | None) -> None:
    """A non-empty JSON body must say `application/json` (or `+json`) in UTF-8.

    Args:
        content_type: the Content-Type header as sent (None if absent).
        media: its media type, lower case; charset: its charset parameter.
    """
    is_json = content_type is not None and (
        media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    )
    if not is_json or (charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise ApiError(
            415,
            CODE_UNSUPPORTED_MEDIA_TYPE,
            f"Send the body as Content-Type: application/json (UTF-8); got "
            f"{content_type or 'no Content-Type'!r}.",
        )


def check_multipart(content_type: str | None, media: str) -> None:
    """An avatar upload must be `multipart/form-data`."""
    if media != "multipart/form-data":
        raise ApiError(
            415,
            CODE_UNSUPPORTED_MEDIA_TYPE,
            "Upload an avatar as multipart/form-data with an 'image' file part; got "
            f"{content_type or 'no Content-Type'!r}.",
        )


def unparseable_multipart(detail: object) -> ApiError:
    """The 400 for a multipart body aiohttp's reader gave up on."""
    return invalid(CODE_INVALID_BODY, f"The multipart body could not be parsed: {detail}.")


def parse_idempotency_key(values: Sequence[str]) -> str | None:
    """The `Idempotency-Key` header: absent, or once with 1..255 printable ASCII."""
    if not values:
        return None
    if len(values) > 1 or not is_valid_idempotency_key(values[0]):
        raise invalid(
            CODE_INVALID_IDEMPOTENCY_KEY,
            f"Idempotency-Key must be sent once, 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
            "printable ASCII characters (a UUID is ideal).",
        )
    return values[0]


# --- query strings --------------------------------------------------------------


def reject_unknown_parameters(query: MultiMapping[str], allowed: Iterable[str]) -> None:
    """Raise `unknown_parameter` for the first query parameter not in `allowed`."""
    allowed_set = set(allowed)
    for key in query:
        if key not in allowed_set:
            known = ", ".join(sorted(allowed_set)) or "none"
            raise invalid(
                CODE_UNKNOWN_PARAMETER,
                f"Unknown query parameter {key!r}; accepted here: {known}.",
                key,
            )


def query_single(query: MultiMapping[str], name: str) -> str | None:
    """The one value of a non-repeatable query parameter, or None."""
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise invalid(CODE_INVALID_VALUE, f"Query parameter {name!r} may appear once.", name)
    return values[0]


def query_limit(query: MultiMapping[str]) -> int:
    """The `limit` of a list call (1..100, default 10)."""
    raw = query_single(query, "limit")
    if raw is None:
        return DEFAULT_PAGE_LIMIT
    low, high = PAGE_LIMIT_RANGE
    if not raw.isascii() or not raw.isdigit():
        raise invalid(
            CODE_INVALID_TYPE,
            f"limit must be an integer from {low} to {high}; got {shown(raw)}.",
            "limit",
        )
    # int() refuses strings over 4300 digits; anything past a few is out of range anyway.
    digits = raw.lstrip("0")
    if len(digits) > len(str(high)) or not low <= int(digits or "0") <= high:
        raise invalid(
            CODE_OUT_OF_RANGE,
            f"limit must be between {low} and {high}; got {shown(raw, 20)}.",
            "limit",
        )
    return int(digits)


def parse_timestamp(raw: str, name: str) -> datetime:
    """An ISO 8601 date or date-time, or Unix seconds; naive values are UTC."""
    text = raw.strip()
    try:
        if text.isascii() and text.isdigit():
            return datetime.fromtimestamp(int(text), tz=timezone.utc)
        # An unencoded `+00:00` in a query string arrives as ` 00:00`; read it as meant.
        text = re.sub(r"([T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\2", text)
        if text[-1:] in ("Z", "z"):
            # Python 3.10's fromisoformat does not take the Z suffix.
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        # In UTC now, so that nothing later (comparisons, the answer) can overflow:
        # 0001-01-01T00:00:00+14:00 has no UTC equivalent.
        value = value.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise invalid(
            CODE_INVALID_VALUE,
            f"{name} must be an ISO 8601 timestamp such as 2025-01-31T12:00:00Z; got {shown(raw)}.",
            name,
        ) from None
    return value


def query_timestamp(query: MultiMapping[str], name: str) -> datetime | None:
    """An optional timestamp query parameter."""
    raw = query_single(query, name)
    return None if raw is None else parse_timestamp(raw, name)


def query_statuses(query: MultiMapping[str]) -> frozenset[SessionStatus] | None:
    """`status`, repeatable (`?status=running&status=queued`) or comma separated."""
    values = query.getall("status", [])
    if not values:
        return None
    result: set[SessionStatus] = set()
    for value in values:
        for item in value.split(","):
            name = item.strip()
            if name not in SESSION_STATUSES:
                raise invalid(
                    CODE_INVALID_VALUE,
                    f"status must be one of {', '.join(SESSION_STATUSES)}; got {shown(name)}.",
                    "status",
                )
            result.add(name)
    return frozenset(result)


@dataclass(frozen=True)
class SessionFilter:
    """The filters of `GET /v1/sessions`; `created_after` inclusive, `created_before` not."""

    statuses: frozenset[SessionStatus] | None = None
    avatar_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class ListQuery:
    """A cursor page request: `limit` and `starting_after`."""

    limit: int = DEFAULT_PAGE_LIMIT
    starting_after: str | None = None


@dataclass(frozen=True)
class SessionListQuery(ListQuery):
    """`GET /v1/sessions`'s query."""

    filters: SessionFilter = field(default_factory=SessionFilter)


@dataclass(frozen=True)
class AvatarListQuery(ListQuery):
    """`GET /v1/avatars`'s query; `scope` None means all."""

    scope: str | None = None
    q: str | None = None


def parse_no_query(query: MultiMapping[str]) -> None:
    """A route that takes no query parameters."""
    reject_unknown_parameters(query, ())


def parse_session_list_query(query: MultiMapping[str]) -> SessionListQuery:
    """Validate `GET /v1/sessions`'s query."""
    reject_unknown_parameters(
        query, ("status", "avatar_id", "created_after", "created_before", "limit", "starting_after")
    )
    return SessionListQuery(
        limit=query_limit(query),
        starting_after=query_single(query, "starting_after"),
        filters=SessionFilter(
            statuses=query_statuses(query),
            avatar_id=query_single(query, "avatar_id"),
            created_after=query_timestamp(query, "created_after"),
            created_before=query_timestamp(query, "created_before"),
        ),
    )


def parse_avatar_list_query(query: MultiMapping[str]) -> AvatarListQuery:
    """Validate `GET /v1/avatars`'s query."""
    reject_unknown_parameters(query, ("limit", "starting_after", "scope", "q"))
    scope = query_single(query, "scope")
    if scope is not None and scope not in AVATAR_SCOPES:
        raise invalid(
            CODE_INVALID_VALUE,
            f"scope must be {', '.join(AVATAR_SCOPES[:-1])} or {AVATAR_SCOPES[-1]}; "
            f"got {shown(scope)}.",
            "scope",
        )
    return AvatarListQuery(
        limit=query_limit(query),
        starting_after=query_single(query, "starting_after"),
        scope=scope,
        q=query_single(query, "q"),
    )


def current_month(now: datetime) -> tuple[datetime, datetime]:
    """[first of `now`'s month, first of the next month), in `now`'s time zone."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def parse_usage_query(query: MultiMapping[str], now: datetime) -> tuple[datetime, datetime]:
    """`GET /v1/usage`'s window: `period=current_month` (default) or `period_start`[/`period_end`].

    Returns:
        [start, end); `period_end` defaults to `now`.
    """
    reject_unknown_parameters(query, ("period", "period_start", "period_end"))
    period = query_single(query, "period")
    start = query_timestamp(query, "period_start")
    end = query_timestamp(query, "period_end")
    if period is not None:
        if period != "current_month":
            raise invalid(
                CODE_INVALID_VALUE,
                f"period must be 'current_month'; got {shown(period)}. For another window "
                "pass period_start and period_end.",
                "period",
            )
        if start is not None or end is not None:
            raise invalid(
                CODE_INVALID_VALUE,
                "Pass either period or period_start/period_end, not both.",
                "period",
            )
    if start is None and end is None:
        return current_month(now)
    if start is None:
        raise invalid(CODE_MISSING_FIELD, "period_end needs a period_start.", "period_start")
    if end is None:
        if start >= now:
            raise invalid(
                CODE_INVALID_VALUE,
                "period_start is in the future; without period_end the window ends now.",
                "period_start",
            )
        end = now
    if start >= end:
        raise invalid(CODE_INVALID_VALUE, "period_start must be before period_end.", "period_end")
    return start, end


# --- resources ------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. `2025-01-31T12:00:00.000Z`."""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ceil_seconds(seconds: float) -> int:
    """Billable whole seconds: any started second counts."""
    return max(0, math.ceil(seconds - 1e-9))


class TransportView(TypedDict):
    """`Session.transport`; never carries the worker token."""

    type: Literal["livekit"]
    url: str
    room_name: str
    worker_identity: str
    audio_source: AudioSource
    subscribe_to_identity: str | None
    synthetic_audio_if_no_input: bool


class FailureView(TypedDict):
    """`Session.failure`."""

    code: str
    message: str


class SessionUsageView(TypedDict):
    """`Session.usage`."""

    billable_seconds: int
    frames: int


class SessionView(TypedDict):
    """The session resource."""

    object: Literal["session"]
    id: str
    avatar_id: str
    status: SessionStatus
    created_at: str
    started_at: str | None
    first_frame_at: str | None
    ended_at: str | None
    failed_at: str | None
    failure: FailureView | None
    idle_timeout_seconds: int
    max_duration_seconds: int
    metadata: dict[str, MetadataValue]
    quality: Quality
    transport: TransportView
    usage: SessionUsageView


class SessionListView(TypedDict):
    """A cursor page of sessions."""

    object: Literal["list"]
    data: list[SessionView]
    has_more: bool
    next_cursor: str | None


class AvatarView(TypedDict):
    """The avatar resource."""

    object: Literal["avatar"]
    id: str
    name: str
    status: AvatarStatus
    is_demo: bool
    runtime_type: str
    created_at: str
    default_voice: str | None
    default_custom_instructions: str | None
    failure_reason: str | None


class AvatarListView(TypedDict):
    """A cursor page of avatars."""

    object: Literal["list"]
    data: list[AvatarView]
    has_more: bool
    next_cursor: str | None


class PlanView(TypedDict):
    """A billing plan."""

    key: str
    name: str
    max_concurrency: int
    session_time_limit_seconds: int
    included_credits: int
    monthly_price_cents: int
    custom_avatar_slots: int
    extra_avatar_slot_cents: int | None
    extra_credit_unit_micros: int | None


ComponentStatus = Literal["operational", "degraded", "outage"]


class StatusComponentView(TypedDict):
    """One component of `GET /v1/status`."""

    name: str
    status: ComponentStatus


class StatusView(TypedDict):
    """`GET /v1/status`."""

    status: ComponentStatus
    components: list[StatusComponentView]
    updated_at: str


class UsageSummaryView(TypedDict):
    """`GET /v1/usage`."""

    billable_seconds: int
    sessions: int
    period_start: str
    period_end: str
    by_quality: dict[Quality, int]

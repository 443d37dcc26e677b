"""The HTTP and auth checks a request passes before its body is read.

`check_bearer` authenticates the API key, the others refuse a body the API cannot
read (size, coding, media type, `Expect`) and a malformed `Idempotency-Key`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from protoface_emulator.api.errors import (
    CODE_EXPECTATION_FAILED,
    CODE_INVALID_API_KEY,
    CODE_INVALID_BODY,
    CODE_INVALID_IDEMPOTENCY_KEY,
    CODE_MISSING_API_KEY,
    CODE_REQUEST_TOO_LARGE,
    CODE_UNSUPPORTED_MEDIA_TYPE,
    ApiError,
    invalid,
)
from protoface_emulator.contract import (
    IDEMPOTENCY_KEY_MAX_CHARS,
    is_valid_idempotency_key,
)

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
            f"Idempotency-Key must be sent once, 1 to {IDEMPOTENCY_KEY_MAX_CHARS} "
            "printable ASCII characters (a UUID is ideal).",
        )
    return values[0]

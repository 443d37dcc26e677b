"""Decoding request JSON strictly: no NaN, no duplicate keys, no lone surrogates, typed fields.

The readers here mirror the official SDK's models (`protoface_sdk._generated`, which
forbid unknown fields) but are stricter about JSON types, as the hosted API is: an
integer field takes a JSON integer only (not `true`, not `30.0`, not `"30"`).
Every failure is an `ApiError` naming the first offending field as a dot path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import TypeAlias, TypeVar, cast

from protoface_emulator.api.errors import (
    CODE_DUPLICATE_FIELD,
    CODE_INVALID_BODY,
    CODE_INVALID_JSON,
    CODE_INVALID_TYPE,
    CODE_INVALID_VALUE,
    CODE_METADATA_RESERVED_KEY,
    CODE_METADATA_TOO_LARGE,
    CODE_MISSING_FIELD,
    CODE_OUT_OF_RANGE,
    CODE_UNKNOWN_FIELD,
    invalid,
)
from protoface_emulator.contract import (
    METADATA_MAX_BYTES,
    RESERVED_METADATA_PREFIX,
)

# Recursive JSON, as `json.loads` produces it.
JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = "dict[str, JSONValue]"
MetadataValue: TypeAlias = "str | int | float | bool | None"


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
            f"The request body must be a JSON object, not {json_type(value)}.",
        )
    return value


def json_type(value: object) -> str:
    """A decoded value's JSON type as a message names it (`a string`, `an integer`, `null`)."""
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


def required_str(obj: JSONObject, key: str, prefix: str) -> str:
    """The string at `key`: `missing_field` when absent, `invalid_type` when null or not one."""
    if key not in obj:
        raise invalid(CODE_MISSING_FIELD, f"{_path(prefix, key)} is required.", _path(prefix, key))
    value = optional_str(obj, key, prefix)
    if value is None:
        raise invalid(
            CODE_INVALID_TYPE,
            f"{_path(prefix, key)} must be a string, not null.",
            _path(prefix, key),
        )
    return value


_Scalar = TypeVar("_Scalar", str, int, bool)


def _typed(
    obj: JSONObject, key: str, prefix: str, kind: type[_Scalar], must_be: str
) -> _Scalar | None:
    """The value at `key` if it is a JSON `kind`, None when absent or null.

    `must_be` is what the error says the field must be, up to its "not …",
    e.g. "a string,".
    """
    value = obj.get(key)
    if value is None:
        return None
    # bool is a subclass of int in Python; JSON `true` is not a number.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        name = _path(prefix, key)
        raise invalid(CODE_INVALID_TYPE, f"{name} must be {must_be} not {json_type(value)}.", name)
    return value


def optional_str(obj: JSONObject, key: str, prefix: str) -> str | None:
    """The non-blank string at `key`, None when absent or null."""
    value = _typed(obj, key, prefix, str, "a string,")
    if value is not None and not value.strip():
        raise invalid(
            CODE_INVALID_VALUE,
            f"{_path(prefix, key)} must not be empty.",
            _path(prefix, key),
        )
    return value


def optional_int(obj: JSONObject, key: str, prefix: str, bounds: tuple[int, int]) -> int | None:
    """The JSON integer at `key` within `bounds` (inclusive), None when absent or null."""
    low, high = bounds
    value = _typed(obj, key, prefix, int, f"an integer between {low} and {high},")
    if value is not None and not low <= value <= high:
        name = _path(prefix, key)
        raise invalid(
            CODE_OUT_OF_RANGE,
            f"{name} must be between {low} and {high}; got {value}.",
            name,
        )
    return value


def optional_bool(obj: JSONObject, key: str, prefix: str) -> bool | None:
    """The JSON boolean at `key`, None when absent or null."""
    return _typed(obj, key, prefix, bool, "true or false,")


def optional_choice(obj: JSONObject, key: str, prefix: str, choices: tuple[str, ...]) -> str | None:
    """The string at `key` if it is one of `choices`, None when absent or null."""
    listed = ", ".join(choices)
    value = _typed(obj, key, prefix, str, f"one of {listed};")
    if value is not None and value not in choices:
        name = _path(prefix, key)
        raise invalid(CODE_INVALID_VALUE, f"{name} must be one of {listed}; got {value!r}.", name)
    return value


def parse_metadata(obj: JSONObject) -> dict[str, MetadataValue]:
    """The body's `metadata`: flat scalars, no reserved keys, within the size limit."""
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(
            CODE_INVALID_TYPE,
            f"metadata must be an object of string keys to scalar values, not {json_type(value)}.",
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
                f"{name} must be a string, number, boolean or null, not {json_type(item)}.",
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

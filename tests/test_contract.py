"""One contract: the plugin, the emulator and `protoface-sdk` agree on every API rule.

Each side keeps its own copy of the rules (the plugin must not depend on the
emulator, nor either on the SDK); this test is what keeps them in step. A
constant changed on one side only is a red test here, not a bug report.
"""

from __future__ import annotations

import re
from typing import Any

import protoface_sdk
from protoface_sdk import _generated as sdk
from pydantic.fields import FieldInfo

from livekit.plugins.protoface import types as plugin
from protoface_emulator import contract as emulator


def _bounds(field: FieldInfo) -> tuple[int, int]:
    """The (ge, le) bounds pydantic keeps for a field, wherever it keeps them."""
    found: dict[str, Any] = {}
    for item in field.metadata:
        for name in ("ge", "le"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found["ge"], found["le"]


def _root_bounds(model: type[Any]) -> tuple[int, int]:
    return _bounds(model.model_fields["root"])


def test_qualities_agree() -> None:
    sdk_values = tuple(q.value for q in sdk.QualityTier)
    assert plugin.QUALITIES == emulator.QUALITIES == sdk_values


def test_session_statuses_and_terminal_statuses_agree() -> None:
    sdk_values = tuple(s.value for s in sdk.SessionStatus)
    assert plugin.SESSION_STATUSES == emulator.SESSION_STATUSES == sdk_values
    sdk_terminal = {s.value for s in protoface_sdk.TERMINAL_SESSION_STATUSES}
    assert plugin.TERMINAL_SESSION_STATUSES == emulator.TERMINAL_STATUSES == sdk_terminal


def test_duration_and_idle_ranges_agree() -> None:
    create = sdk.SessionCreateRequest.model_fields
    assert plugin.IDLE_TIMEOUT_RANGE == emulator.IDLE_TIMEOUT_RANGE
    assert _bounds(create["idle_timeout_seconds"]) == plugin.IDLE_TIMEOUT_RANGE
    assert plugin.DEFAULT_IDLE_TIMEOUT_SECONDS == emulator.DEFAULT_IDLE_TIMEOUT_SECONDS
    assert create["idle_timeout_seconds"].default == plugin.DEFAULT_IDLE_TIMEOUT_SECONDS
    assert plugin.MAX_DURATION_RANGE == emulator.MAX_DURATION_RANGE
    assert _root_bounds(sdk.MaxDurationSeconds1) == plugin.MAX_DURATION_RANGE


def test_metadata_limit_and_reserved_prefix_agree() -> None:
    description = sdk.SessionCreateRequest.model_fields["metadata"].description or ""
    kilobytes = re.search(r"<= (\d+) KB", description)
    prefix = re.search(r"`([^`]+)`", description)
    assert kilobytes is not None and prefix is not None, description
    assert plugin.METADATA_MAX_BYTES == emulator.METADATA_MAX_BYTES
    assert int(kilobytes.group(1)) * 1024 == plugin.METADATA_MAX_BYTES
    assert plugin.RESERVED_METADATA_PREFIX == emulator.RESERVED_METADATA_PREFIX
    assert prefix.group(1) == plugin.RESERVED_METADATA_PREFIX
    assert plugin.END_REASON_METADATA_KEY == emulator.END_REASON_KEY
    assert plugin.END_REASON_METADATA_KEY.startswith(prefix.group(1))


def test_stock_avatar_agrees() -> None:
    description = sdk.Avatar.model_fields["id"].description or ""
    assert plugin.DEFAULT_STOCK_AVATAR_ID == emulator.STOCK_AVATAR_ID
    assert f"`{plugin.DEFAULT_STOCK_AVATAR_ID}`" in description


def test_idempotency_key_rule_agrees() -> None:
    assert plugin.IDEMPOTENCY_KEY_MAX_CHARS == emulator.IDEMPOTENCY_KEY_MAX_LENGTH
    longest = "k" * plugin.IDEMPOTENCY_KEY_MAX_CHARS
    for key, accepted in [
        (longest, True),
        (longest + "k", False),
        ("with spaces ok", True),
        ("tab\tnot", False),
        ("ünicode", False),
    ]:
        assert emulator.is_valid_idempotency_key(key) is accepted, key
        try:
            plugin.check_idempotency_key(key)
        except ValueError:
            assert not accepted, key
        else:
            assert accepted, key

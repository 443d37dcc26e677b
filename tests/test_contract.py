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
from protoface_emulator.lifecycle import WorkerSpec


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


# The constants both packages keep, under one name each. A rename on one side
# only, or a value changed on one side only, is red here.
SHARED_CONSTANTS = (
    "DEFAULT_IDLE_TIMEOUT_SECONDS",
    "END_REASON_METADATA_KEY",
    "IDEMPOTENCY_KEY_MAX_CHARS",
    "IDLE_TIMEOUT_RANGE",
    "MAX_DURATION_RANGE",
    "METADATA_MAX_BYTES",
    "QUALITIES",
    "RESERVED_METADATA_PREFIX",
    "SESSION_STATUSES",
    "TERMINAL_SESSION_STATUSES",
)


def _constants(module: object) -> set[str]:
    return {name for name in vars(module) if name.isupper() and not name.startswith("_")}


def test_each_shared_constant_has_one_name_and_one_value_on_both_sides() -> None:
    for name in SHARED_CONSTANTS:
        assert hasattr(plugin, name), f"the plugin's types.py has no {name}"
        assert hasattr(emulator, name), f"the emulator's contract.py has no {name}"
        assert getattr(plugin, name) == getattr(emulator, name), name


def test_a_constant_both_sides_define_is_one_of_the_shared_ones() -> None:
    # A new constant kept on both sides joins SHARED_CONSTANTS, so the check above covers it.
    assert _constants(plugin) & _constants(emulator) == set(SHARED_CONSTANTS)


def test_qualities_agree() -> None:
    sdk_values = tuple(q.value for q in sdk.QualityTier)
    assert plugin.QUALITIES == emulator.QUALITIES == sdk_values


def test_session_statuses_and_terminal_statuses_agree() -> None:
    sdk_values = tuple(s.value for s in sdk.SessionStatus)
    assert plugin.SESSION_STATUSES == emulator.SESSION_STATUSES == sdk_values
    sdk_terminal = {s.value for s in protoface_sdk.TERMINAL_SESSION_STATUSES}
    assert plugin.TERMINAL_SESSION_STATUSES == emulator.TERMINAL_SESSION_STATUSES == sdk_terminal


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
    assert plugin.END_REASON_METADATA_KEY == emulator.END_REASON_METADATA_KEY
    assert plugin.END_REASON_METADATA_KEY.startswith(prefix.group(1))


def test_stock_avatar_agrees() -> None:
    description = sdk.Avatar.model_fields["id"].description or ""
    assert plugin.DEFAULT_STOCK_AVATAR_ID == emulator.STOCK_AVATAR_ID
    assert f"`{plugin.DEFAULT_STOCK_AVATAR_ID}`" in description


def test_idempotency_key_rule_agrees() -> None:
    assert plugin.IDEMPOTENCY_KEY_MAX_CHARS == emulator.IDEMPOTENCY_KEY_MAX_CHARS
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


def test_a_worker_spec_defaults_to_the_contracts_values() -> None:
    # A spec built without them renders what a create without them asks for.
    spec = WorkerSpec(session_id="ses_1", url="ws://127.0.0.1:7880", room_name="r", identity="i")
    assert spec.audio_source == emulator.DEFAULT_AUDIO_SOURCE
    assert spec.quality == emulator.DEFAULT_QUALITY
    assert spec.avatar_id == emulator.STOCK_AVATAR_ID == plugin.DEFAULT_STOCK_AVATAR_ID

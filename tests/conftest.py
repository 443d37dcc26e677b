"""Fixtures shared by every test folder.

The real servers come from the kit users get, the pytest plugin that
`protoface-emulator` registers (`protoface_emulator.testing.plugin`):
`livekit_server` (session-scoped, skipped when the binary is missing, failed
under CI=true), `protoface_emulator` and `avatar_viewer`. Our suites use them as
any user's would; nothing here starts a server of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from protoface_emulator.server import Emulator


@pytest.fixture
def emulator(protoface_emulator: Emulator) -> Emulator:
    """The kit's `protoface_emulator` under the short name the end-to-end tests use."""
    return protoface_emulator

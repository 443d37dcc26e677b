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


# Real-room tests that run twice: as fast as the emulator goes, and as slow as the
# hosted service (`hosted`: cold starts of 1-5 s, API answers of 20-80 ms, late
# first frames and acknowledgements), through the kit's own `protoface_timing`
# mark, as a user's suite would. All of tests/e2e: `--protoface-timing=hosted`.
ALSO_HOSTED = ("test_avatar_speaks.py", "test_interruption.py")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of `ALSO_HOSTED` under the `fast` and the `hosted` timing."""
    if metafunc.definition.path.name in ALSO_HOSTED and "emulator" in metafunc.fixturenames:
        hosted = pytest.param("hosted", marks=pytest.mark.protoface_timing("hosted"))
        metafunc.parametrize("emulator", ["fast", hosted], indirect=True)


@pytest.fixture
def emulator(protoface_emulator: Emulator) -> Emulator:
    """The kit's `protoface_emulator` under the short name the end-to-end tests use.

    Parametrized (`fast`, `hosted`) for the tests of `ALSO_HOSTED`: the name is
    the test id's, the `protoface_timing` mark on the `hosted` one slows it.
    """
    return protoface_emulator

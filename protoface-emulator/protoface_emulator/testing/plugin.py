"""The pytest plugin: fixtures for testing an agent with a Protoface avatar in a real room.

Installing `protoface-emulator` registers it (the `pytest11` entry point
`protoface_emulator`); nothing needs importing. Fixtures:

- `livekit_server` (session): a real `livekit-server --dev` on 127.0.0.1
  (`LiveKitServer`: `url`, `api_key`, `api_secret`, `token(identity, room)`,
  `api()`, and `stall(seconds)`, which freezes the whole server for a while).
  When the binary is missing the test is skipped, or fails when `CI=true`.
- `protoface_emulator` (function): the in-process emulator (`Emulator`: `url`,
  `api_key`, `store`, `faults`) with its real avatar worker, and the environment
  set so that `protoface.AvatarSession()` uses it and its avatars join
  `livekit_server` (`PROTOFACE_API_URL`, `PROTOFACE_API_KEY`, `LIVEKIT_URL`,
  `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`; restored afterwards).
  Override `protoface_emulator_options` to pass `Emulator(**options)`.
  To meet the hosted service's delays (cold starts of 1-5 s, API answers of
  20-80 ms, late first frames and acknowledgements; `protoface_emulator.hosting.timing`),
  mark a test `@pytest.mark.protoface_timing("hosted")` (or a module, with
  `pytestmark`), run pytest with `--protoface-timing=hosted` for every test, or
  return `{"timing": "hosted"}` (or a `Timing`) from the options. The options
  win over the mark, the mark over the command line; the default is `fast`.
- `avatar_viewer` (function): an `AvatarViewer` already in a fresh room
  (`avatar_viewer.room_name`), recording what the avatar shows and says, through
  replacements and handovers (every participant speaking for an agent).

The async fixtures are `pytest_asyncio` fixtures, so they work in both
`asyncio_mode = "auto"` and `"strict"` (in strict mode, mark the tests
`@pytest.mark.asyncio`). This module imports no LiveKit code until a fixture runs:
registering the plugin costs a pytest run nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from protoface_emulator.hosting.timing import Timing
    from protoface_emulator.local.livekit_dev import LiveKitServer
    from protoface_emulator.server import Emulator
    from protoface_emulator.testing.viewer import AvatarViewer

try:
    import pytest_asyncio
except ImportError:  # the fixtures below then say how to get it
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = [
    "avatar_viewer",
    "livekit_server",
    "protoface_emulator",
    "protoface_emulator_options",
]

_NEEDS_PYTEST_ASYNCIO = (
    "the protoface_emulator and avatar_viewer fixtures need pytest-asyncio: "
    "pip install 'protoface-emulator[testing]' (or pytest-asyncio)"
)


TIMING_OPTION = "--protoface-timing"
TIMING_MARK = "protoface_timing"


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--protoface-timing=PROFILE`: every `protoface_emulator` that slow."""
    parser.getgroup("protoface").addoption(
        TIMING_OPTION,
        default=None,
        metavar="PROFILE",
        help="timing profile of the protoface_emulator fixture: fast (default) or hosted",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the `protoface_timing` mark."""
    config.addinivalue_line(
        "markers",
        f"{TIMING_MARK}(profile): the protoface_emulator fixture of this test uses this "
        "timing profile (fast, hosted) or protoface_emulator.hosting.timing.Timing",
    )


def requested_timing(request: pytest.FixtureRequest) -> str | Timing | None:
    """The timing a test asks for: its `protoface_timing` mark, else `--protoface-timing`."""
    mark = request.node.get_closest_marker(TIMING_MARK)
    if mark is not None:
        if len(mark.args) != 1 or mark.kwargs:
            raise pytest.UsageError(
                f"@pytest.mark.{TIMING_MARK} takes one profile name or Timing, e.g. "
                f'@pytest.mark.{TIMING_MARK}("hosted"); got args={mark.args} kwargs={mark.kwargs}'
            )
        value: str | Timing = mark.args[0]
        return value
    option: str | None = request.config.getoption(TIMING_OPTION, default=None)
    return option


def in_ci() -> bool:
    """Whether `CI` says this is a CI run (`1`, `true` or `yes`)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def livekit_server() -> Iterator[LiveKitServer]:
    """A real `livekit-server --dev` on 127.0.0.1 with free ports, shared by the session.

    The binary comes from `LIVEKIT_SERVER_BIN`, `PATH`, `.tools/bin` in the
    working directory or a parent (this repository's copy), or the per-user
    directory `protoface-emulator install-livekit-server` installs into
    (`protoface_emulator.local.livekit_binary`). Missing: the test is skipped, or fails
    under `CI=true` (a real-room test that cannot find its server must not pass
    quietly), saying how to get it.
    """
    from protoface_emulator.local.livekit_binary import find_livekit_server, not_found_message
    from protoface_emulator.local.livekit_dev import start_livekit_server

    binary = find_livekit_server()
    if binary is None:
        message = not_found_message()
        if in_ci():
            pytest.fail(message + " (CI=true: a missing server fails the run)", pytrace=False)
        pytest.skip(message)
    server = start_livekit_server(binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def protoface_emulator_options() -> dict[str, Any]:
    """Keyword arguments for the `protoface_emulator` fixture's `Emulator`.

    Override it in a conftest.py or a test module, e.g. to arm faults or shorten
    the join timeout: `return {"join_timeout": 5.0}`.
    """
    return {}


def _emulator_env(server: LiveKitServer, emulator: Emulator) -> dict[str, str]:
    return {
        "PROTOFACE_API_URL": emulator.url,
        "PROTOFACE_API_KEY": emulator.api_key,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
    }


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def protoface_emulator(
        request: pytest.FixtureRequest,
        livekit_server: LiveKitServer,
        protoface_emulator_options: dict[str, Any],
    ) -> AsyncIterator[Emulator]:
        """The in-process emulator, serving on loopback, its avatars joining `livekit_server`.

        While the test runs, the environment points the plugin at both
        (`PROTOFACE_API_URL`, `PROTOFACE_API_KEY`, `LIVEKIT_URL`,
        `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`), so an agent's unchanged
        `protoface.AvatarSession()` gets a real avatar in the room. Afterwards
        every session is ended, every avatar has left, and the environment is
        restored. Its timing: `protoface_emulator_options["timing"]`, else the
        test's `protoface_timing` mark, else `--protoface-timing`, else `fast`.
        """
        from protoface_emulator.server import Emulator

        options = dict(protoface_emulator_options)
        if options.get("timing") is None:
            options["timing"] = requested_timing(request)
        async with Emulator(**options) as emulator:
            with pytest.MonkeyPatch.context() as env:
                for name, value in _emulator_env(livekit_server, emulator).items():
                    env.setenv(name, value)
                yield emulator

    @pytest_asyncio.fixture
    async def avatar_viewer(livekit_server: LiveKitServer) -> AsyncIterator[AvatarViewer]:
        """A viewer already in a fresh room, following whichever avatar speaks for the agent.

        Put the agent in `avatar_viewer.room_name`; then `wait_for_video()`,
        `wait_for_mouth_open()`, `wait_for_mouth_closed()`, `wait_for_audio(seconds)`
        wait for what the avatar shows and says, and `video` / `audio` hold every
        frame received, each naming its avatar's `identity`. It records every
        participant publishing on an agent's behalf (`lk.publish_on_behalf`), so
        replacements and successors (`protoface-avatar-agent-2`, ...) are seen as a
        person in the room sees them; `wait_for_new_avatar()` waits for one. It
        leaves the room after the test.
        """
        from protoface_emulator.testing.viewer import viewer_in

        async with viewer_in(livekit_server, f"test-{uuid.uuid4().hex[:10]}") as viewer:
            yield viewer

else:

    @pytest.fixture
    def protoface_emulator() -> None:
        """Unavailable: pytest-asyncio is not installed."""
        pytest.fail(_NEEDS_PYTEST_ASYNCIO, pytrace=False)

    @pytest.fixture
    def avatar_viewer() -> None:
        """Unavailable: pytest-asyncio is not installed."""
        pytest.fail(_NEEDS_PYTEST_ASYNCIO, pytrace=False)

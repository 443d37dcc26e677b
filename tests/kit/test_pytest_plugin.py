"""The pytest plugin users get with protoface-emulator, run as they run it.

Each test runs pytest in a child process on a small test file: the plugin comes
from the package's `pytest11` entry point alone (no conftest, no `-p`), with the
test file's own asyncio mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protoface_emulator.testing import LiveKitServer

pytest_plugins = ["pytester"]

MISSING = "/nonexistent/livekit-server"
NOT_FOUND = "*livekit-server not found*protoface-emulator install-livekit-server*"


def _without_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)


def test_installing_the_package_registers_the_fixtures(
    pytester: pytest.Pytester,
) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    text = result.stdout.str()
    for name in ("livekit_server", "protoface_emulator", "avatar_viewer"):
        assert name in text, f"{name} is not registered:\n{text}"


def _nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LIVEKIT_SERVER_BIN, no livekit-server on PATH, an empty per-user directory."""
    monkeypatch.delenv("LIVEKIT_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "empty-data-home"))


def test_a_missing_livekit_server_skips_with_the_way_to_install_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without_ci(monkeypatch)
    _nowhere(monkeypatch, tmp_path)
    pytester.makepyfile("def test_needs_a_server(livekit_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([NOT_FOUND])
    result.stdout.fnmatch_lines(["*empty-data-home/protoface-emulator/bin*LIVEKIT_SERVER_BIN*"])


def test_a_missing_livekit_server_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CI", "true")
    _nowhere(monkeypatch, tmp_path)
    pytester.makepyfile("def test_needs_a_server(livekit_server):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([NOT_FOUND])


def test_a_livekit_server_bin_that_is_no_binary_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_ci(monkeypatch)
    monkeypatch.setenv("LIVEKIT_SERVER_BIN", MISSING)
    pytester.makepyfile("def test_needs_a_server(livekit_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*LIVEKIT_SERVER_BIN={MISSING} is not an executable file*"])


STRICT_MODE_TEST = """
import os

import pytest

from protoface_emulator.testing import agent_in, speech

SEEN = {}


@pytest.fixture
def protoface_emulator_options():
    return {"api_key": "pf_emu_chosen_by_the_test"}


@pytest.mark.asyncio
async def test_an_avatar_speaks_in_strict_mode(livekit_server, protoface_emulator, avatar_viewer):
    SEEN["url"] = os.environ["PROTOFACE_API_URL"]
    assert SEEN["url"] == protoface_emulator.url
    assert protoface_emulator.api_key == "pf_emu_chosen_by_the_test"
    assert os.environ["PROTOFACE_API_KEY"] == protoface_emulator.api_key
    assert os.environ["LIVEKIT_URL"] == livekit_server.url
    async with agent_in(livekit_server, avatar_viewer.room_name) as agent:
        await agent.avatar.wait_for_join(timeout=30)
        agent.say(speech(1.5))
        await avatar_viewer.wait_for_mouth_open(timeout=20)
        await avatar_viewer.wait_for_audio(0.5, timeout=20)


def test_the_environment_is_restored_afterwards():
    assert os.environ.get("PROTOFACE_API_URL") != SEEN["url"]
"""


@pytest.mark.e2e
def test_the_async_fixtures_work_in_strict_mode_take_options_and_restore_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, livekit_server: LiveKitServer
) -> None:
    # The child runs in a folder of its own: it starts its own server from the
    # binary this run found.
    monkeypatch.setenv("LIVEKIT_SERVER_BIN", livekit_server.binary)
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(STRICT_MODE_TEST)
    env_url = os.environ.get("PROTOFACE_API_URL")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=240)
    result.assert_outcomes(passed=2)
    assert os.environ.get("PROTOFACE_API_URL") == env_url

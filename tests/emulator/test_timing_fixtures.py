"""The kit's `protoface_emulator` fixture takes a timing the ways a user asks for one.

Run as users run it: pytest in a child process, the plugin from the package's
entry point. The child's `livekit_server` is a stand-in (no session is created,
so no avatar needs a real server): only which `Timing` the fixture's emulator
got is checked. Options win over the `protoface_timing` mark, the mark over
`--protoface-timing`; the default is `fast`.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CHILD_CONFTEST = """
import types

import pytest


@pytest.fixture(scope="session")
def livekit_server():
    return types.SimpleNamespace(url="ws://127.0.0.1:9", api_key="k", api_secret="s")
"""

CHILD_TESTS = """
import pytest

from protoface_emulator.hosting.timing import Timing


async def test_unmarked(protoface_emulator, pytestconfig):
    expected = pytestconfig.getoption("--protoface-timing") or "fast"
    assert protoface_emulator.timing == Timing.profile(expected)


@pytest.mark.protoface_timing("hosted")
async def test_marked_hosted(protoface_emulator):
    assert protoface_emulator.timing == Timing.profile("hosted")


@pytest.mark.protoface_timing(Timing(cold_start=2.0))
async def test_marked_with_a_timing(protoface_emulator):
    assert protoface_emulator.timing.cold_start == 2.0


class TestOptionsWin:
    @pytest.fixture
    def protoface_emulator_options(self):
        return {"timing": Timing(api_latency=0.01)}

    @pytest.mark.protoface_timing("hosted")
    async def test_options_over_the_mark(self, protoface_emulator):
        assert protoface_emulator.timing == Timing(api_latency=0.01)
"""


def _child(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CHILD_CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(CHILD_TESTS)


def test_the_mark_and_the_options_pick_the_fixtures_timing(pytester: pytest.Pytester) -> None:
    _child(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=4)


def test_the_command_line_option_sets_every_unmarked_test(pytester: pytest.Pytester) -> None:
    _child(pytester)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--protoface-timing=hosted", timeout=120
    )
    result.assert_outcomes(passed=4)


def test_an_unknown_profile_on_the_command_line_is_named(pytester: pytest.Pytester) -> None:
    _child(pytester)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--protoface-timing=hostd", "-k", "unmarked", timeout=120
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown timing profile 'hostd'; use one of fast, hosted*"])


def test_the_mark_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*protoface_timing(profile)*"])

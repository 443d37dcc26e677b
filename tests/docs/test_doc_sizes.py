"""The pages stay short enough to read: README.md at most 250 lines, each guide 200,
the plugin's PyPI page 250 and the emulator's 300.

A newcomer reads the README, then the one guide for what they are doing; the
package READMEs are what PyPI shows, and the measurements live in benchmarks/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDES = sorted((REPO / "docs").glob("*.md"))
PACKAGE_READMES = [
    REPO / "livekit-plugins-protoface" / "README.md",
    REPO / "protoface-emulator" / "README.md",
]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_the_readme_is_at_most_250_lines() -> None:
    assert lines(REPO / "README.md") <= 250


def test_there_is_a_guide_per_journey() -> None:
    names = {p.stem for p in GUIDES}
    assert {"offline", "testing", "production", "lifetime", "usage", "switching"} <= names


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.name)
def test_each_guide_is_at_most_200_lines(path: Path) -> None:
    assert lines(path) <= 200


@pytest.mark.parametrize(
    ("path", "most"),
    [(PACKAGE_READMES[0], 250), (PACKAGE_READMES[1], 300)],
    ids=["plugin", "emulator"],
)
def test_a_package_readme_stays_short(path: Path, most: int) -> None:
    # A PyPI page says what a user needs once; the guides hold the detail.
    assert lines(path) <= most


def test_the_emulator_readme_has_no_cpu_profile() -> None:
    text = (REPO / "protoface-emulator" / "README.md").read_text()
    # (`--profile hosted`, the emulator's timing, is not a CPU profile)
    assert not re.search(r"(?i)CPU profil|profiling|py-spy|CPU goes|per thread", text)


@pytest.mark.parametrize("path", PACKAGE_READMES, ids=lambda p: p.parent.name)
def test_a_package_readme_links_nothing_relative(path: Path) -> None:
    # What PyPI shows has no repository around it: a relative link leads nowhere.
    assert re.findall(r"\]\((?!https?://|#)[^)]*\)", path.read_text()) == []

"""What the package metadata promises a user who installs by name.

The built wheels themselves are checked by `scripts/check-wheels` (in CI); these
are the fast checks of the same promises, on the metadata of the workspace's
installs (which `uv sync` builds from the pyproject files).
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest
from livekit.plugins import protoface

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["livekit-plugins-protoface", "protoface-emulator"]
PUBLISHED = (1, 8, 9)  # the release on PyPI this repository replaces


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_ours_is_newer_than_the_published_plugin() -> None:
    assert version_tuple(protoface.__version__) > PUBLISHED


def test_the_emulators_extras_ask_for_our_plugin() -> None:
    requires = md.metadata("protoface-emulator").get_all("Requires-Dist") or []
    pins = [r for r in requires if r.startswith("livekit-plugins-protoface")]
    assert any(pin.endswith("extra == 'testing'") for pin in pins), requires
    for pin in pins:
        match = re.fullmatch(r"livekit-plugins-protoface>=([\d.]+); extra == '\w+'", pin)
        assert match, f"{pin}: pin a lower bound that has what the kit uses"
        assert PUBLISHED < version_tuple(match.group(1)) <= version_tuple(protoface.__version__)


@pytest.mark.parametrize("package", PACKAGES)
def test_the_readme_pypi_shows_has_no_relative_links(package: str) -> None:
    # PyPI renders the README alone: a link into the repository would be dead there.
    text = (REPO / package / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    relative = [link for link in links if not re.match(r"(https?:|mailto:|#)", link)]
    assert relative == []


@pytest.mark.parametrize("package", PACKAGES)
def test_the_metadata_is_complete(package: str) -> None:
    meta = md.metadata(package)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert (REPO / package / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert meta.get_all("Project-URL") and meta.get_all("Classifier") and meta["Summary"]
    assert meta["Description-Content-Type"] == "text/markdown"

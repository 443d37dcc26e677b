"""One virtualenv per test session with the built wheels installed by name.

As `scripts/check-wheels` does: `uv build` both packages, export uv.lock's
versions as pip constraints, and `pip install` the wheels by name from a folder
outside the repository. The documents' blocks then run with that virtualenv
first on PATH and `PIP_FIND_LINKS` at the built wheels, so the docs' own
`pip install livekit-plugins-protoface ...` picks them (every other package at
uv.lock's version, already installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DocsVenv:
    """Where the wheels and the virtualenv are, and the environment blocks start from."""

    root: Path
    dist: Path
    venv: Path
    livekit_server: str

    def environment(self, home: Path) -> dict[str, str]:
        keep = {"LANG", "LC_ALL", "TERM", "TMPDIR", "CI", "USER", "HOME", "GOPATH", "GOFLAGS"}
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(
            PATH=f"{self.venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            VIRTUAL_ENV=str(self.venv),
            PIP_FIND_LINKS=str(self.dist),
            PIP_CONSTRAINT=str(self.root / "constraints.txt"),
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INPUT="1",
            LIVEKIT_SERVER_BIN=self.livekit_server,
            XDG_DATA_HOME=str(home / "data"),
            PYTHONUNBUFFERED="1",
        )
        return env


def _run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def _livekit_server() -> str:
    try:
        from protoface_emulator.local.livekit_binary import find_livekit_server, not_found_message
    except ImportError:  # before the emulator's modules moved into subpackages
        from protoface_emulator.livekit_binary import (  # type: ignore[no-redef]
            find_livekit_server,
            not_found_message,
        )

    found = find_livekit_server()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the docs need livekit-server: {not_found_message()}")
        pytest.skip(not_found_message())
    return found


@pytest.fixture(scope="session")
def docs_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsVenv]:
    """Build the wheels and install them by name into a fresh virtualenv (once per session)."""
    server = _livekit_server()
    root = tmp_path_factory.mktemp("docs-venv")
    dist, venv = root / "dist", root / "venv"
    _run(["uv", "build", "--quiet", "--all-packages", "--out-dir", str(dist)], REPO)
    _run(
        ["uv", "export", "--quiet", "--frozen", "--all-packages", "--all-extras", "--no-dev",
         "--no-hashes", "--no-emit-workspace", "--output-file", str(root / "constraints.txt")],
        REPO,
    )  # fmt: skip
    _run([sys.executable, "-m", "venv", str(venv)], root)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, "--upgrade", "pip"], root)
    _run(
        [*pip, "--only-binary", ":all:", "--find-links", str(dist), "--constraint",
         str(root / "constraints.txt"), "livekit-plugins-protoface",
         "protoface-emulator[testing]"],
        root,
    )  # fmt: skip
    yield DocsVenv(root, dist, venv, server)

"""The code stays lint- and type-clean: ruff over the repository, mypy --strict on the packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_check_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "target",
    ["livekit-plugins-protoface/livekit", "protoface-emulator/protoface_emulator", "examples"],
)
def test_mypy_strict_is_clean(target: str) -> None:
    result = _run("mypy", "--strict", target)
    assert result.returncode == 0, result.stdout + result.stderr

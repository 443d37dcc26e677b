"""Finding and installing livekit-server the way a pip user does: the order, the messages.

The binaries here are small shell scripts that answer `--version` as
livekit-server does, so the search order and the installer's decisions run for
real without building anything (the build itself runs in CI through
scripts/install-livekit-server, which calls the same command).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from protoface_emulator.local.livekit_binary import (
    INSTALL_HINT,
    PINNED_TAG,
    LiveKitInstallError,
    find_livekit_server,
    install_livekit_server,
    user_bin_dir,
)


def _fake_server(folder: Path, version: str = PINNED_TAG.removeprefix("v")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "livekit-server"
    binary.write_text(f"#!/bin/sh\necho 'livekit-server version {version}'\n")
    binary.chmod(0o755)
    return binary


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LIVEKIT_SERVER_BIN, a PATH without livekit-server or go, a fresh data home."""
    monkeypatch.delenv("LIVEKIT_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return tmp_path


def test_the_per_user_directory_follows_xdg_data_home(bare: Path) -> None:
    assert user_bin_dir() == bare / "data" / "protoface-emulator" / "bin"


def test_search_order_env_then_path_then_tools_bin_then_the_user_directory(
    bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_livekit_server() is None
    installed = _fake_server(user_bin_dir())
    assert find_livekit_server() == str(installed)
    repo_copy = _fake_server(bare / "work" / ".tools" / "bin")  # a parent of the cwd
    assert find_livekit_server() == str(repo_copy)
    on_path = _fake_server(bare / "path-bin")
    monkeypatch.setenv("PATH", f"{on_path.parent}:/usr/bin:/bin")
    assert find_livekit_server() == str(on_path)
    explicit = _fake_server(bare / "chosen")
    monkeypatch.setenv("LIVEKIT_SERVER_BIN", str(explicit))
    assert find_livekit_server() == str(explicit)
    # A LIVEKIT_SERVER_BIN that is not a binary finds nothing, not another one.
    monkeypatch.setenv("LIVEKIT_SERVER_BIN", str(bare / "missing"))
    assert find_livekit_server() is None


def test_the_hint_names_the_command_and_the_directory(bare: Path) -> None:
    assert "protoface-emulator install-livekit-server" in INSTALL_HINT
    assert "LIVEKIT_SERVER_BIN" in INSTALL_HINT


def test_an_installed_pinned_binary_is_used_without_go(bare: Path) -> None:
    target = _fake_server(bare / "tools")
    assert install_livekit_server(bare / "tools", log=lambda _: None) == target


def test_without_go_it_says_how_to_get_go_or_the_binary(bare: Path) -> None:
    _fake_server(bare / "tools", version="1.9.0")  # another version: must build
    with pytest.raises(LiveKitInstallError) as error:
        install_livekit_server(bare / "tools", log=lambda _: None)
    message = str(error.value)
    assert "Go is needed to build livekit-server v1.13.5" in message
    assert "https://go.dev/dl/" in message and "brew install livekit" in message


def test_a_bad_livekit_server_bin_is_named(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_SERVER_BIN", str(bare / "nope"))
    with pytest.raises(LiveKitInstallError, match=r"LIVEKIT_SERVER_BIN=.*nope is not an exec"):
        install_livekit_server(log=lambda _: None)


def test_the_command_prints_only_the_path_on_stdout(bare: Path) -> None:
    on_path = _fake_server(bare / "path-bin")
    env = {**os.environ, "PATH": f"{on_path.parent}:/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "protoface_emulator.cli", "install-livekit-server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{on_path}\n"
    assert "using livekit-server from PATH" in result.stderr

    missing_go = subprocess.run(
        [sys.executable, "-m", "protoface_emulator.cli", "install-livekit-server", "--force"],
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing_go.returncode == 1
    assert missing_go.stdout == ""
    assert "Go is needed" in missing_go.stderr

"""The dev commands' answers without a room: `token`, `livekit-server` without a binary,
and what `install-livekit-server` says about running what it installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from livekit import api as lkapi

from protoface_emulator.local.dev_livekit import DEV_API_KEY, DEV_API_SECRET, dev_exports
from protoface_emulator.local.livekit_binary import run_hint, user_bin_dir

COMMAND = [sys.executable, "-m", "protoface_emulator.cli"]


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(values)
    return env


def test_token_without_livekit_variables_is_signed_with_the_dev_pair_for_the_room() -> None:
    result = _run("token", "--room", "lobby", "--identity", "ada", env=_env())
    assert result.returncode == 0, result.stderr
    claims = lkapi.TokenVerifier(DEV_API_KEY, DEV_API_SECRET).verify(result.stdout.strip())
    assert claims.identity == "ada"
    assert claims.video is not None and claims.video.room == "lobby"
    assert "ws://127.0.0.1:7880" in result.stderr and DEV_API_SECRET not in result.stderr


def test_token_is_signed_with_the_exported_pair_and_never_prints_it() -> None:
    secret = "a-secret-of-the-users-own-0123456789"
    env = _env(LIVEKIT_URL="ws://127.0.0.1:7999", LIVEKIT_API_KEY="mine", LIVEKIT_API_SECRET=secret)
    result = _run("token", "--room", "r", "--agent-name", "helper", env=env)
    assert result.returncode == 0, result.stderr
    claims = lkapi.TokenVerifier("mine", secret).verify(result.stdout.strip())
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == ["helper"]
    assert secret not in result.stderr


@pytest.mark.parametrize(
    ("given", "missing"),
    [("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"), ("LIVEKIT_API_SECRET", "LIVEKIT_API_KEY")],
)
def test_token_with_half_a_pair_names_the_missing_variable(given: str, missing: str) -> None:
    result = _run("token", env=_env(**{given: "x" * 40}))
    assert result.returncode == 2
    assert f"{missing} is not set" in result.stderr
    assert "x" * 40 not in result.stderr


def test_livekit_server_without_a_binary_says_how_to_install_one(tmp_path: Path) -> None:
    env = _env(PATH="/usr/bin:/bin", XDG_DATA_HOME=str(tmp_path))
    env.pop("LIVEKIT_SERVER_BIN", None)
    result = subprocess.run(
        [*COMMAND, "livekit-server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert "protoface-emulator install-livekit-server" in result.stderr


def _fake_binary(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "livekit-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return binary


def test_after_installing_into_the_user_directory_it_says_how_to_run_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LIVEKIT_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    binary = _fake_binary(user_bin_dir())
    hint = run_hint(binary)
    # Found there by the command, which needs no PATH change...
    assert "run it (dev mode on ws://127.0.0.1:7880): protoface-emulator livekit-server\n" in hint
    # ...and the line that puts it on PATH for running it by name.
    assert f'export PATH={binary.parent}:"$PATH"' in hint


def test_a_binary_installed_elsewhere_is_run_through_livekit_server_bin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LIVEKIT_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    binary = _fake_binary(tmp_path / "elsewhere")
    assert f"LIVEKIT_SERVER_BIN={binary} protoface-emulator livekit-server" in run_hint(binary)


def test_the_exports_line_names_the_dev_pair() -> None:
    assert dev_exports("ws://127.0.0.1:7880") == (
        "export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey "
        f"LIVEKIT_API_SECRET={DEV_API_SECRET}"
    )


def test_install_livekit_server_ends_by_saying_how_to_run_it(tmp_path: Path) -> None:
    from protoface_emulator.local.livekit_binary import PINNED_TAG

    folder = tmp_path / "tools"
    binary = _fake_binary(folder)  # already the pinned version: nothing to build
    binary.write_text(f"#!/bin/sh\necho 'livekit-server version {PINNED_TAG[1:]}'\n")
    env = _env(PATH="/usr/bin:/bin", XDG_DATA_HOME=str(tmp_path / "data"))
    env.pop("LIVEKIT_SERVER_BIN", None)
    result = subprocess.run(
        [*COMMAND, "install-livekit-server", "--dir", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{binary}\n"  # stdout stays the path alone, for scripts
    assert f"LIVEKIT_SERVER_BIN={binary} protoface-emulator livekit-server" in result.stderr
    assert f'export PATH={folder}:"$PATH"' in result.stderr

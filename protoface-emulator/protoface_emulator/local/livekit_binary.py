"""Where the `livekit-server` binary is, and how to get it without cloning anything.

The test kit's `livekit_server` fixture and the playground both run a real
`livekit-server --dev`. They look for the binary, in order:

1. `$LIVEKIT_SERVER_BIN` (that file, and nothing else when it is set);
2. `livekit-server` on `PATH` (`brew install livekit`, LiveKit's install script);
3. `.tools/bin/livekit-server` in the current directory or a parent (where this
   repository's `scripts/install-livekit-server` keeps it);
4. the per-user directory `protoface-emulator install-livekit-server` installs
   into: `$XDG_DATA_HOME/protoface-emulator/bin`, by default
   `~/.local/share/protoface-emulator/bin`.

`install_livekit_server()` (the `protoface-emulator install-livekit-server`
command) builds the pinned release with `go install` into that directory, or
into `--dir DIR`, and says how to run it (`run_hint()`): `protoface-emulator
livekit-server` (`protoface_emulator.local.dev_livekit`) runs whatever is found here,
on PATH or not. The pin is v1.13.5: later tags carry `replace` directives in
their go.mod, which `go install pkg@version` refuses.

Nothing here imports LiveKit: the command answers in milliseconds.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "BINARY_NAME",
    "GO_PACKAGE",
    "INSTALL_HINT",
    "PINNED_TAG",
    "LiveKitInstallError",
    "binary_version",
    "find_livekit_server",
    "install_livekit_server",
    "not_found_message",
    "run_hint",
    "user_bin_dir",
]

PINNED_TAG = "v1.13.5"
"""The livekit-server release the kit and the playground are tested with."""

GO_PACKAGE = "github.com/livekit/livekit-server/cmd/server"
BINARY_NAME = "livekit-server"


def user_bin_dir() -> Path:
    """The per-user directory `install-livekit-server` installs into by default."""
    data_home = os.environ.get("XDG_DATA_HOME") or ""
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "protoface-emulator" / "bin"


INSTALL_HINT = (
    "run `protoface-emulator install-livekit-server` (builds livekit-server "
    f"{PINNED_TAG} with Go into {user_bin_dir()}, where it is found), or set "
    "LIVEKIT_SERVER_BIN to a livekit-server binary, or put livekit-server on PATH "
    "(macOS: brew install livekit)"
)
"""What to do when no binary is found, for error messages."""


def not_found_message() -> str:
    """Why `find_livekit_server()` found nothing, and what to do, for a person to read."""
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        return (
            f"LIVEKIT_SERVER_BIN={explicit} is not an executable file: point it at a "
            "livekit-server binary, or unset it to use the one on PATH or the one "
            "`protoface-emulator install-livekit-server` installs"
        )
    return f"livekit-server not found: {INSTALL_HINT}"


def run_hint(binary: Path) -> str:
    """How to run `binary` once installed, for a person to read (the end of the install).

    `protoface-emulator livekit-server` runs it in dev mode wherever it was found
    (the per-user directory is not on PATH); when the kit would not find it (a
    `--dir` elsewhere), the line sets LIVEKIT_SERVER_BIN. The PATH line is for
    running `livekit-server` by its own name.
    """
    found = find_livekit_server()
    quoted = shlex.quote(str(binary))
    command = "protoface-emulator livekit-server"
    if found is None or Path(found).resolve() != binary.resolve():
        command = f"LIVEKIT_SERVER_BIN={quoted} {command}"
    lines = [f"run it (dev mode on ws://127.0.0.1:7880): {command}"]
    on_path = shutil.which(BINARY_NAME)
    if on_path is None or Path(on_path).resolve() != binary.resolve():
        folder = shlex.quote(str(binary.parent))
        lines.append(f'or put it on PATH: export PATH={folder}:"$PATH"')
    return "\n".join(lines)


class LiveKitInstallError(RuntimeError):
    """livekit-server could not be installed; the message says why and what to do."""


def find_livekit_server() -> str | None:
    """The livekit-server binary to run (see the module docstring for the order), or None.

    A `LIVEKIT_SERVER_BIN` that is not an executable file gives None rather than
    a binary found elsewhere: the user asked for that one.
    """
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        return explicit if _executable(Path(explicit)) else None
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return on_path
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        local = folder / ".tools" / "bin" / BINARY_NAME
        if _executable(local):
            return str(local)
    installed = user_bin_dir() / BINARY_NAME
    return str(installed) if _executable(installed) else None


def binary_version(binary: Path | str) -> str | None:
    """The version a livekit-server binary reports (`1.13.5`), or None if it will not say."""
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = result.stdout.split()
    # `livekit-server version 1.13.5`
    if result.returncode == 0 and len(words) >= 3 and words[-2] == "version":
        return words[-1]
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _say(message: str) -> None:
    print(f"install-livekit-server: {message}", file=sys.stderr, flush=True)


def install_livekit_server(
    target_dir: Path | None = None,
    *,
    tag: str = PINNED_TAG,
    use_existing: bool = True,
    log: Callable[[str], None] = _say,
) -> Path:
    """Find livekit-server, or build the pinned release with `go install`; returns its path.

    Args:
        target_dir: Where to install (default: `user_bin_dir()`).
        tag: The release tag to build (`v1.13.5`).
        use_existing: Return `$LIVEKIT_SERVER_BIN` or a `livekit-server` on PATH
            when there is one, as the kit would use it, instead of building.
        log: Where progress lines go (stderr by default; never stdout, whose one
            line is the path for scripts).

    Raises:
        LiveKitInstallError: `LIVEKIT_SERVER_BIN` names no executable, Go is
            missing, or the build failed; the message says what to do.
    """
    if use_existing:
        existing = _existing_binary(log)
        if existing is not None:
            return existing

    folder = (target_dir or user_bin_dir()).expanduser().resolve()
    target = folder / BINARY_NAME
    want = tag.removeprefix("v")
    if _executable(target) and binary_version(target) == want:
        return target

    go = _find_go(tag)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiveKitInstallError(
            f"cannot create {folder} ({exc.strerror}): pass --dir with a folder you can write"
        ) from None
    log(f"building livekit-server {tag} with go install into {folder} (minutes the first time)")
    _go_install(go, tag, target)
    log(f"installed {target} (version {binary_version(target)})")
    return target


def _existing_binary(log: Callable[[str], None]) -> Path | None:
    """`$LIVEKIT_SERVER_BIN`, or a `livekit-server` on PATH, or None.

    Raises:
        LiveKitInstallError: `LIVEKIT_SERVER_BIN` names no executable.
    """
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        if _executable(Path(explicit)):
            return Path(explicit)
        raise LiveKitInstallError(
            f"LIVEKIT_SERVER_BIN={explicit} is not an executable file; unset it or "
            "point it at a livekit-server binary"
        )
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        log(f"using livekit-server from PATH ({on_path}, version {binary_version(on_path)})")
        return Path(on_path)
    return None


def _find_go(tag: str) -> str:
    """The `go` command on PATH.

    Raises:
        LiveKitInstallError: There is none; the message says how to get Go or the binary.
    """
    go = shutil.which("go")
    if go is None:
        raise LiveKitInstallError(
            f"Go is needed to build livekit-server {tag} and was not found on PATH: install "
            "Go (https://go.dev/dl/, or your package manager) and run this again; "
            "or install livekit-server another way (macOS: brew install livekit; Linux: "
            "curl -sSL https://get.livekit.io | bash) and put it on PATH or in LIVEKIT_SERVER_BIN"
        )
    return go


def _go_install(go: str, tag: str, target: Path) -> None:
    """Build livekit-server `tag` in a scratch folder and move it to `target` whole.

    Raises:
        LiveKitInstallError: The build failed (its output went to stderr).
    """
    with tempfile.TemporaryDirectory(prefix="livekit-server-build-") as scratch:
        gobin = Path(scratch) / "bin"
        env = {
            **os.environ,
            "GOBIN": str(gobin),
            "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -trimpath".strip(),
        }
        # stdout to stderr: the caller's stdout carries only the path.
        result = subprocess.run(
            [go, "install", f"{GO_PACKAGE}@{tag}"],
            cwd=scratch,
            env=env,
            stdout=sys.stderr,
            stderr=sys.stderr,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        built = gobin / "server"  # `go install` names it after the package's folder
        if result.returncode != 0 or not built.is_file():
            raise LiveKitInstallError(
                f"`go install {GO_PACKAGE}@{tag}` failed with exit code {result.returncode} "
                "(its output is above); check your network access to the Go module proxy "
                "and your Go version"
            )
        # Moved into place whole, so a half-written binary never sits at `target`.
        staged = target.parent / f".{BINARY_NAME}.partial"
        shutil.copy2(built, staged)
        os.replace(staged, target)

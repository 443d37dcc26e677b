"""A livekit-server to develop against by hand: `protoface-emulator livekit-server`.

    protoface-emulator livekit-server [--port 7880] [--log-level warn] [-- LIVEKIT-SERVER ARGS]

It runs the livekit-server the kit would find (`livekit_binary`: LIVEKIT_SERVER_BIN,
PATH, a clone's `.tools/bin`, or where `protoface-emulator install-livekit-server`
put it), so a binary installed into a directory that is not on PATH runs without
touching PATH. The server runs in dev mode on 127.0.0.1 only (WebRTC included),
with the dev key pair `DEV_API_KEY` / `DEV_API_SECRET`; once it answers, the
command prints `export LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...`
on stdout and runs until Ctrl-C or SIGTERM, which it passes on.

Why not `livekit-server --dev`'s own `devkey` / `secret`: that secret is 6 bytes,
and HS256 wants at least 32 (PyJWT warns on every token signed with less), so
the documented path would not be the tested one. `DEV_API_SECRET` is public and
for loopback development only; a secret of your own never goes through here.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import FrameType

from protoface_emulator.local.livekit_binary import find_livekit_server, not_found_message
from protoface_emulator.local.loopback import (
    DEV_API_KEY,
    DevServerPorts,
    loopback_command,
    loopback_config,
)

__all__ = [
    "DEFAULT_DEV_PORT",
    "DEV_API_KEY",
    "DEV_API_SECRET",
    "DevServerPorts",
    "dev_exports",
    "loopback_config",
    "main",
]

DEV_API_SECRET = "protoface-dev-secret-local-livekit-only"
"""The secret beside `DEV_API_KEY` of a server started by `protoface-emulator livekit-server`:
public, 39 bytes (HS256 wants 32 or more), for loopback development only."""

DEFAULT_DEV_PORT = 7880
"""livekit-server's own default port: `ws://127.0.0.1:7880`."""

READY_TIMEOUT_SECONDS = 30.0
DRAIN_SECONDS = 2.0
_PREFIX = "protoface-emulator livekit-server"


def dev_exports(url: str) -> str:
    """The shell line that points an agent, the emulator's tools and `token` at a dev server."""
    return (
        f"export LIVEKIT_URL={url} LIVEKIT_API_KEY={DEV_API_KEY} "
        f"LIVEKIT_API_SECRET={DEV_API_SECRET}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The arguments of `protoface-emulator livekit-server`."""
    parser = argparse.ArgumentParser(
        prog=_PREFIX,
        description="Run livekit-server in dev mode on 127.0.0.1 with the dev key pair "
        f"({DEV_API_KEY} / {DEV_API_SECRET}) and print the LIVEKIT_* exports for it. "
        "Arguments after `--` go to livekit-server as they are.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_DEV_PORT,
        help="HTTP/WebSocket port; WebRTC takes the next two (default %(default)s; "
        "0 picks free ones)",
    )
    parser.add_argument(
        "--log-level",
        default="warn",
        choices=["debug", "info", "warn", "error"],
        help="livekit-server's log level, on stderr (default %(default)s; --dev alone "
        "logs every signalling message)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the dev server until Ctrl-C or SIGTERM; its exit status (1 if it failed to start)."""
    argv = list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args = parser.parse_args(ours)
    if not 0 <= args.port <= 65533:
        parser.error(f"--port {args.port} is not usable: pass 1..65533 (it takes 3 ports) or 0")
    binary = find_livekit_server()
    if binary is None:
        print(f"{_PREFIX}: {not_found_message()}", file=sys.stderr)
        return 1
    ports = DevServerPorts.from_port(args.port)
    process = _launch(binary, loopback_config(ports, args.log_level), extra)
    stopping = _pass_signals_on(process)
    if not _wait_ready(process, ports):
        if process.poll() is None:
            process.kill()
        process.wait()
        if not stopping():
            print(_start_failure(process, ports, binary), file=sys.stderr)
            return 1
        return 0
    print(f"livekit-server {ports.url} is ready (dev key pair, loopback only); run:", flush=True)
    print(dev_exports(ports.url), flush=True)
    code = _wait_exit(process, stopping)
    return 0 if stopping() else code


def _wait_exit(process: subprocess.Popen[bytes], stopping: _Stopping) -> int:
    """The server's exit code; a stop it was asked for is pressed after `DRAIN_SECONDS`.

    On a first SIGTERM livekit-server waits for its rooms to empty, sometimes for
    minutes even with none; nothing of a dev server's is worth that wait, and a
    second SIGTERM makes it go at once.
    """
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        since = stopping.since
        if since is not None and not stopping.pressed and time.monotonic() - since > DRAIN_SECONDS:
            stopping.pressed = True
            process.send_signal(signal.SIGTERM)


def _launch(binary: str, config: str, extra: list[str]) -> subprocess.Popen[bytes]:
    # The keys go in the environment, out of the process list.
    env = {**os.environ, "LIVEKIT_KEYS": f"{DEV_API_KEY}: {DEV_API_SECRET}"}
    command = [*loopback_command(binary, config), *extra]
    # Its logs go to stderr: stdout carries only the ready and export lines.
    return subprocess.Popen(command, env=env, stdout=sys.stderr, stdin=subprocess.DEVNULL)


def _pass_signals_on(process: subprocess.Popen[bytes]) -> _Stopping:
    stopping = _Stopping()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        if process.poll() is not None:
            return
        # livekit-server waits for rooms to empty on the first SIGTERM; a second
        # signal from the user means now.
        process.send_signal(signal.SIGKILL if stopping.requested else signal.SIGTERM)
        stopping.requested = True
        stopping.since = stopping.since or time.monotonic()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    return stopping


class _Stopping:
    def __init__(self) -> None:
        self.requested = False
        self.since: float | None = None  # when the first stop signal came
        self.pressed = False  # the second SIGTERM was sent

    def __call__(self) -> bool:
        return self.requested


def _wait_ready(process: subprocess.Popen[bytes], ports: DevServerPorts) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(ports.http_url, timeout=1) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def _start_failure(process: subprocess.Popen[bytes], ports: DevServerPorts, binary: str) -> str:
    if process.returncode not in (None, 0, -signal.SIGKILL):
        return (
            f"{_PREFIX}: {binary} exited with code {process.returncode} (its output is above); "
            f"if a port of {ports.http}-{ports.http + 2} is in use (another livekit-server?), "
            "stop that one or pass --port with another port"
        )
    return (
        f"{_PREFIX}: {binary} did not answer on {ports.http_url} within "
        f"{READY_TIMEOUT_SECONDS:.0f} s (its output is above)"
    )

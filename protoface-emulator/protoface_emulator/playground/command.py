"""`protoface-emulator playground`: see, hear and talk to a Protoface avatar in a browser.

    protoface-emulator playground [--port PORT] [--agent FILE] [--open] [--verbose]
                                  [--profile fast|hosted]

Starts `livekit-server --dev`, the `protoface-emulator` command and an agent
worker on 127.0.0.1, serves a page, and prints `playground: http://127.0.0.1:PORT/`
on a line of its own once everything is ready. The bundled agent
(`echo_agent.py`) says your own words back through the avatar when you pause;
`--agent FILE` runs your agent file instead (one that defines
`server = AgentServer()`, or hands an `AgentServer` or `WorkerOptions` to
`cli.run_app`; see `run_agent`), with `LIVEKIT_*` and `PROTOFACE_*` pointing at
the local servers. `--profile hosted` makes the emulator as slow as the hosted
service (cold starts of 1-5 s, API answers of 20-80 ms; `protoface_emulator.hosting.timing`).
Ctrl-C or SIGTERM stops everything.

This process only supervises: it runs `stack` in a process group of its own,
passes it SIGINT/SIGTERM as SIGTERM, and once it has exited (or after a grace
period) kills whatever is left in that group, so no process outlives it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from protoface_emulator.hosting.timing import add_timing_arguments

BUNDLED_AGENT = Path(__file__).resolve().parent / "echo_agent.py"
DEFAULT_PORT = 8800
GRACE_SECONDS = 40.0  # the agent drains its jobs, the emulator ends its sessions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked: a port in range, an agent file that exists."""
    parser = argparse.ArgumentParser(
        prog="protoface-emulator playground",
        description="See, hear and talk to a Protoface avatar in a browser, with your agent "
        "or the bundled echo agent.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port of the page on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--agent",
        type=Path,
        default=BUNDLED_AGENT,
        metavar="FILE",
        help="your LiveKit Agents file to run instead of the bundled echo agent",
    )
    parser.add_argument("--open", action="store_true", help="open the page in your browser")
    parser.add_argument(
        "--verbose", action="store_true", help="show every line the agent logs, not only warnings"
    )
    add_timing_arguments(parser, overrides=False)
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="how long the agent may take to register as a worker (default 90)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port: use 0..65535 (0 picks a free one)")
    if not args.agent.is_file():
        parser.error(f"--agent {args.agent}: no such file; pass the path of your agent's .py file")
    if args.ready_timeout <= 0:
        parser.error(f"--ready-timeout {args.ready_timeout} must be a positive number of seconds")
    if importlib.util.find_spec("livekit.plugins.protoface") is None:
        # Both the bundled agent and any agent with a Protoface avatar import it.
        parser.error(
            "livekit-plugins-protoface is not installed: "
            "pip install 'protoface-emulator[playground]'"
        )
    return args


def _kill_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False when nothing is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies of ours remain
        return False
    return True


def _group_alive(pgid: int) -> bool:
    return _kill_group(pgid, 0)


def run(args: argparse.Namespace) -> int:
    """Run the stack in its own process group until it ends or we are told to stop."""
    command = [sys.executable, "-m", "protoface_emulator.playground.stack"]
    command += ["--port", str(args.port), "--agent", str(args.agent.resolve())]
    command += ["--ready-timeout", str(args.ready_timeout), "--profile", args.profile]
    if args.open:
        command.append("--open")
    if args.verbose:
        command.append("--verbose")
    stopping = False

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C: no more waiting
            _kill_group(child.pid, signal.SIGKILL)
            return
        stopping = True
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    child = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    deadline: float | None = None
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if stopping and deadline is None:
            deadline = time.monotonic() + GRACE_SECONDS
        if deadline is not None and time.monotonic() > deadline:
            print("playground: still stopping after the grace period; killing", file=sys.stderr)
            _kill_group(child.pid, signal.SIGKILL)
    # The stack has exited: whatever it left in its group goes now.
    if _group_alive(child.pid):
        _kill_group(child.pid, signal.SIGTERM)
        end = time.monotonic() + 5
        while _group_alive(child.pid) and time.monotonic() < end:
            time.sleep(0.1)
        _kill_group(child.pid, signal.SIGKILL)
    return 0 if stopping else code


def main(argv: list[str] | None = None) -> int:
    """`protoface-emulator playground ARGS`: run until Ctrl-C or SIGTERM; the exit status."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""The `protoface-emulator` command: the emulator as a standalone server.

    protoface-emulator [--host 127.0.0.1] [--port 8790] [--api-key KEY]
                       [--faults SPEC ...] [--faults-seed N]
                       [--max-concurrency N] [--join-timeout SECONDS]
                       [--profile fast|hosted] [--cold-start S|LOW-HIGH]
                       [--first-frame-delay S|LOW-HIGH] [--api-latency S|LOW-HIGH]
                       [--ack-delay S|LOW-HIGH] [--timing-seed N]
                       [--worker-processes N] [--worker-factory MODULE:NAME]
                       [--dispatch [--agent-name NAME] [--dispatch-port PORT]
                        [--dispatch-public-url ws://HOST:PORT]]
                       [--log-level LEVEL]
    protoface-emulator worker [--agent-name NAME] [--capacity N] [--name HOST]
    protoface-emulator install-livekit-server [--dir DIR] [--tag TAG] [--force]
    protoface-emulator livekit-server [--port 7880] [-- LIVEKIT-SERVER-ARGS]
    protoface-emulator token [--room ROOM] [--identity ID] [--name NAME] [--agent-name NAME]
    protoface-emulator join [--port 8801] [--room ROOM] [--agent-name NAME] [--open]
    protoface-emulator playground [--port PORT] [--agent FILE] [--open] [--verbose]

Once it accepts requests it prints `listening on http://HOST:PORT` on stdout
(after `api key: KEY` when it generated the key). SIGINT or SIGTERM end every
session, wait for every worker to leave its room, and exit 0. Logs go to stderr
and never contain the API key or worker tokens.

`--profile hosted` is as slow as the hosted service (`protoface_emulator.hosting.timing`);
`--cold-start` and the other delays override the profile's, as S or LOW-HIGH seconds.

Avatars render in worker processes, one per core by default
(`--worker-processes N`; 0 renders in this process, as `Emulator()` does).
With `--dispatch` they render on worker hosts instead: `protoface-emulator worker`
processes on any number of machines, registered with the developer's own
livekit-server, each session one job placed by LiveKit's agent dispatch. Both
sides read that server from `--livekit-url`, `--livekit-api-key` and
`--livekit-api-secret`, or `$LIVEKIT_URL`, `$LIVEKIT_API_KEY`, `$LIVEKIT_API_SECRET`
(the environment keeps the secret out of `ps`).

`install-livekit-server` finds livekit-server as the test kit would, or builds
the pinned release with `go install` into a per-user directory the kit then
finds (`protoface_emulator.local.livekit_binary`); it prints the binary's path, and
on stderr how to run it. `livekit-server` runs that binary in dev mode on
127.0.0.1 with a dev key pair and prints the `LIVEKIT_*` exports for it
(`protoface_emulator.local.dev_livekit`). `token` prints a participant token for a
room on that server (or the one in `LIVEKIT_*`), and `join` serves the
playground's page for it, so a person can see, hear and talk to the avatar of an
agent run by hand (`protoface_emulator.playground.join`).
`playground` serves a page to see, hear and talk to an avatar, with your agent
or the bundled echo agent (`protoface_emulator.playground`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

from protoface_emulator.api.limits import DEFAULT_JOIN_TIMEOUT_SECONDS, DEFAULT_MAX_CONCURRENCY
from protoface_emulator.hosting.agent_worker import DEFAULT_CAPACITY
from protoface_emulator.hosting.dispatch import DEFAULT_AGENT_NAME
from protoface_emulator.hosting.timing import add_timing_arguments, timing_from_args
from protoface_emulator.lifecycle import WorkerFactory
from protoface_emulator.server import Emulator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8790
API_KEY_ENV = "PROTOFACE_API_KEY"

logger = logging.getLogger("protoface_emulator.cli")

N = TypeVar("N", int, float)


def _checked(
    read: Callable[[str], N], noun: str, accept: Callable[[N], bool], rule: str
) -> Callable[[str], N]:
    """An argparse `type`: the text read as a number (`not {noun}` if it is none), then
    checked by `accept`; `rule` is the message when it fails, formatted with the
    number as `value` and what was typed as `text`."""

    def parse(text: str) -> N:
        try:
            value = read(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(rule.format(value=value, text=text))
        return value

    return parse


_port = _checked(
    int,
    "a port number",
    lambda value: 0 <= value <= 65535,
    "a port is 0..65535 (0 picks a free one); got {value}",
)
_seconds = _checked(
    float,
    "a number of seconds",
    lambda value: math.isfinite(value) and value > 0,
    "must be a positive number of seconds; got {text!r}",
)
_processes = _checked(
    int,
    "a number of processes",
    lambda value: value >= 0,
    "must be 0 (render in the API's process) or more worker processes; got {value}",
)
_capacity = _checked(
    int,
    "a number of avatars",
    lambda value: value >= 1,
    "a worker host runs at least 1 avatar; got {value}",
)


def _add_livekit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--livekit-url", default=None, help="the livekit-server (default: $LIVEKIT_URL)"
    )
    parser.add_argument(
        "--livekit-api-key", default=None, help="its API key (default: $LIVEKIT_API_KEY)"
    )
    parser.add_argument(
        "--livekit-api-secret",
        default=None,
        help="its API secret (default: $LIVEKIT_API_SECRET; prefer the environment)",
    )
    parser.add_argument(
        "--agent-name",
        default=DEFAULT_AGENT_NAME,
        help="the agent name worker hosts register and jobs go to (default %(default)s)",
    )


def _livekit(args: argparse.Namespace) -> tuple[str, str, str]:
    return (
        args.livekit_url or os.environ.get("LIVEKIT_URL", ""),
        args.livekit_api_key or os.environ.get("LIVEKIT_API_KEY", ""),
        args.livekit_api_secret or os.environ.get("LIVEKIT_API_SECRET", ""),
    )


def build_worker_parser() -> argparse.ArgumentParser:
    """The arguments of `protoface-emulator worker`."""
    parser = argparse.ArgumentParser(
        prog="protoface-emulator worker",
        description="A worker host: renders the avatars an emulator started with --dispatch "
        "sends through LiveKit's agent dispatch.",
    )
    _add_livekit_arguments(parser)
    parser.add_argument(
        "--capacity",
        type=_capacity,
        default=DEFAULT_CAPACITY,
        help="avatars this host renders at once (default %(default)s)",
    )
    parser.add_argument(
        "--name", default=None, help="how the emulator names this host (default: hostname:pid)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="protoface-emulator",
        description="A local Protoface: the public API plus a real LiveKit avatar worker.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the bearer key clients must send (default: ${API_KEY_ENV}, else generated)",
    )
    parser.add_argument(
        "--faults",
        action="append",
        default=[],
        metavar="SPEC",
        help="arm a fault, ROUTE=KIND[,key=value...], e.g. "
        "'POST /v1/sessions=error,status=503,count=2,retry_after=1' (repeatable)",
    )
    parser.add_argument(
        "--faults-seed", type=int, default=None, help="seed for probabilistic faults"
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        help="concurrent sessions the plan allows (default %(default)s)",
    )
    parser.add_argument(
        "--join-timeout",
        type=_seconds,
        default=DEFAULT_JOIN_TIMEOUT_SECONDS,
        help="seconds a worker may take to publish its first frame (default %(default)s)",
    )
    add_timing_arguments(parser)
    _add_worker_arguments(parser)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level; debug adds an access log",
    )
    return parser


def _add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the avatars render: worker processes, a factory, or dispatched jobs."""
    parser.add_argument(
        "--worker-processes",
        type=_processes,
        default=None,
        metavar="N",
        help="worker processes that render the avatars (default: one per core; "
        "0: in the API's process)",
    )
    parser.add_argument(
        "--worker-factory",
        default=None,
        metavar="MODULE:NAME",
        help="use this WorkerFactory instead of the real LiveKit worker "
        "(for API tests and benchmarks without a LiveKit server)",
    )
    parser.add_argument(
        "--dispatch",
        action="store_true",
        help="render on `protoface-emulator worker` hosts through LiveKit's agent dispatch",
    )
    _add_livekit_arguments(parser)
    parser.add_argument(
        "--dispatch-port",
        type=_port,
        default=0,
        help="port worker hosts report to (default: a free one; it travels in each job)",
    )
    parser.add_argument(
        "--dispatch-public-url",
        default=None,
        metavar="ws://HOST:PORT",
        help="where worker hosts reach that port, when not at --host:--dispatch-port",
    )


def load_worker_factory(reference: str) -> WorkerFactory:
    """Import `MODULE:NAME` and return it as a worker factory.

    Raises:
        ValueError: if the reference is malformed or does not name a callable.
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--worker-factory takes MODULE:NAME; got {reference!r}")
    try:
        target: object = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load worker factory {reference!r}: {exc}") from exc
    if not callable(target):
        raise ValueError(f"worker factory {reference!r} is not callable")
    return cast(WorkerFactory, target)


def _default_workers(args: argparse.Namespace) -> WorkerFactory | None:
    """The real worker: a process pool unless `--worker-processes 0` (None: in-process)
    or `--dispatch` (LiveKit's agent dispatch to worker hosts)."""
    if args.dispatch:
        if args.worker_processes is not None:
            raise ValueError("--dispatch renders on worker hosts; drop --worker-processes")
        from protoface_emulator.hosting.dispatch import AgentDispatch

        url, key, secret = _livekit(args)
        return AgentDispatch(
            url,
            key,
            secret,
            agent_name=args.agent_name,
            host=args.host,
            port=args.dispatch_port,
            public_url=args.dispatch_public_url,
            # A job no host took fails the session before the join timeout would, saying why.
            pickup_timeout=min(20.0, 2 * args.join_timeout / 3),
        )
    if args.worker_processes == 0:
        return None
    from protoface_emulator.hosting import ProcessPool

    return ProcessPool(args.worker_processes, log_level=args.log_level)


async def _serve(args: argparse.Namespace) -> int:
    api_key: str | None = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        worker_factory = (
            _default_workers(args)
            if args.worker_factory is None
            else load_worker_factory(args.worker_factory)
        )
        emulator = Emulator(
            api_key=api_key,
            host=args.host,
            port=args.port,
            worker_factory=worker_factory,
            max_concurrency=args.max_concurrency,
            join_timeout=args.join_timeout,
            fault_seed=args.faults_seed,
            timing=timing_from_args(args),
        )
        for spec in args.faults:
            emulator.faults.add_spec(spec)
    except ValueError as exc:
        print(f"protoface-emulator: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        # The real worker needs livekit-agents; say so rather than print a traceback.
        print(f"protoface-emulator: cannot load the LiveKit worker: {exc}", file=sys.stderr)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows; Ctrl-C then arrives as KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)

    try:
        await emulator.start()
    except (OSError, UnicodeError) as exc:
        # UnicodeError: a host name that cannot even be encoded (IDNA) for lookup.
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    try:
        if api_key is None:
            print(f"api key: {emulator.api_key}", flush=True)
        print(f"listening on {emulator.url}", flush=True)
        await stop.wait()
        logger.info("shutting down; ending %d session(s)", emulator.store.active_count)
    finally:
        await emulator.aclose()
    logger.info("stopped")
    return 0


async def _work(args: argparse.Namespace) -> int:
    from protoface_emulator.hosting.agent_worker import WorkerHost
    from protoface_emulator.hosting.dispatch import LiveKitAgents

    url, key, secret = _livekit(args)
    try:
        livekit = LiveKitAgents.checked(
            url, key, secret, args.agent_name, needed_by="a worker host"
        )
        host = WorkerHost(livekit, capacity=args.capacity, name=args.name)
    except ValueError as exc:
        print(f"protoface-emulator worker: {exc}", file=sys.stderr)
        return 2
    run = asyncio.ensure_future(host.run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, run.cancel)
    try:
        await run
    except asyncio.CancelledError:
        logger.info("worker host %s: leaving", host.name)
    except Exception as exc:  # registration refused, server unreachable after retries
        print(f"protoface-emulator worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await host.aclose()
    return 0


def build_install_parser() -> argparse.ArgumentParser:
    """The arguments of `protoface-emulator install-livekit-server`."""
    from protoface_emulator.local.livekit_binary import PINNED_TAG, user_bin_dir

    parser = argparse.ArgumentParser(
        prog="protoface-emulator install-livekit-server",
        description="Find livekit-server as the test kit and the playground do, or build the "
        f"pinned release ({PINNED_TAG}) with `go install`; print the binary's path on stdout.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"install into DIR (default {user_bin_dir()}, where the kit looks)",
    )
    parser.add_argument(
        "--tag",
        default=PINNED_TAG,
        help="the livekit-server release to build (default %(default)s, the tested one)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="build into DIR even when LIVEKIT_SERVER_BIN or PATH has a livekit-server",
    )
    return parser


def _install_livekit_server(argv: Sequence[str]) -> int:
    from protoface_emulator.local.livekit_binary import (
        LiveKitInstallError,
        install_livekit_server,
        run_hint,
    )

    args = build_install_parser().parse_args(argv)
    try:
        binary = install_livekit_server(args.dir, tag=args.tag, use_existing=not args.force)
    except LiveKitInstallError as exc:
        print(f"protoface-emulator install-livekit-server: {exc}", file=sys.stderr)
        return 1
    print(binary, flush=True)
    # stderr: stdout's one line stays the path, for scripts.
    print(f"install-livekit-server: {run_hint(binary)}", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator (or, with `worker`, a worker host) until SIGINT/SIGTERM.

    `install-livekit-server` installs livekit-server instead (and returns);
    `playground` runs the playground (`protoface_emulator.playground`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["install-livekit-server"]:
        return _install_livekit_server(argv[1:])
    if argv[:1] == ["livekit-server"]:
        from protoface_emulator.local.dev_livekit import main as dev_livekit

        return dev_livekit(argv[1:])
    if argv[:1] in (["token"], ["join"]):
        from protoface_emulator.playground.join import join_main, token_main

        return (token_main if argv[0] == "token" else join_main)(argv[1:])
    if argv[:1] == ["playground"]:
        # Its own process tree and signals (see protoface_emulator.playground).
        from protoface_emulator.playground.command import main as playground

        return playground(argv[1:])
    working = argv[:1] == ["worker"]
    args = (
        build_worker_parser().parse_args(argv[1:]) if working else build_parser().parse_args(argv)
    )
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_work(args) if working else _serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

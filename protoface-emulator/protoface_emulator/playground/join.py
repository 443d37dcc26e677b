"""Joining a room on a livekit-server run by hand: a token, or a page to open.

    protoface-emulator token [--room ROOM] [--identity ID] [--name NAME] [--agent-name NAME]
    protoface-emulator join  [--port 8801] [--room ROOM] [--agent-name NAME] [--open]

Both read the server from `LIVEKIT_URL`, `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET`,
the variables the agent reads; when the key and the secret are both unset, the dev
pair `protoface-emulator livekit-server` runs with (`dev_livekit`), and
`ws://127.0.0.1:7880` when the URL is unset too.

`token` prints a participant token on stdout (for any LiveKit frontend, or
`livekit.rtc.Room.connect`), and on stderr what it admits to. `join` serves the
playground's page (`protoface_emulator.playground`) for that server, offline,
and prints `join: http://127.0.0.1:PORT/` once the server has accepted the key:
each tab joins a room of its own (or ROOM), which the agent is dispatched to as
to any new room, and sees and hears its avatar. Its sessions panel lists the
emulator's sessions from `PROTOFACE_API_URL` and `PROTOFACE_API_KEY`
(default `http://127.0.0.1:8790`). The secret never leaves this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import signal
import sys
import uuid
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass, field

from protoface_emulator.local.dev_livekit import DEFAULT_DEV_PORT, DEV_API_KEY, DEV_API_SECRET

__all__ = ["LiveKitTarget", "UsageError", "join_main", "livekit_target", "token_main"]

DEFAULT_JOIN_PORT = 8801
DEFAULT_EMULATOR_URL = "http://127.0.0.1:8790"
TOKEN_TTL = datetime.timedelta(hours=6)


class UsageError(RuntimeError):
    """The environment or the arguments cannot work; the message says what to set."""


@dataclass(frozen=True)
class LiveKitTarget:
    """The livekit-server to mint tokens for, and whether it is the dev default."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)
    dev_pair: bool = False

    @property
    def http_url(self) -> str:
        """The server API's URL (`ws://` becomes `http://`, `wss://` `https://`)."""
        return "http" + self.url.removeprefix("ws") if self.url.startswith("ws") else self.url


def livekit_target() -> LiveKitTarget:
    """The server from `LIVEKIT_*`, or the dev defaults when the key and secret are unset.

    Raises:
        UsageError: Only one of the key and the secret is set, or the URL has no
            ws:// or wss:// scheme.
    """
    url = os.environ.get("LIVEKIT_URL") or f"ws://127.0.0.1:{DEFAULT_DEV_PORT}"
    if not url.startswith(("ws://", "wss://", "http://", "https://")):
        raise UsageError(f"LIVEKIT_URL={url} has no scheme: use ws://HOST:PORT or wss://HOST")
    key = os.environ.get("LIVEKIT_API_KEY", "")
    secret = os.environ.get("LIVEKIT_API_SECRET", "")
    if not key and not secret:
        return LiveKitTarget(url, DEV_API_KEY, DEV_API_SECRET, dev_pair=True)
    missing = [
        name
        for name, value in (("LIVEKIT_API_KEY", key), ("LIVEKIT_API_SECRET", secret))
        if not value
    ]
    if missing:
        raise UsageError(
            f"{missing[0]} is not set while the other of LIVEKIT_API_KEY / LIVEKIT_API_SECRET "
            "is: export both (those your livekit-server runs with), or neither for the dev "
            "pair of `protoface-emulator livekit-server`"
        )
    return LiveKitTarget(url, key, secret)


def _add_room_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agent-name",
        default="",
        metavar="NAME",
        help="have the server dispatch this named agent to the room (an agent registered "
        "with agent_name=...; an unnamed one joins every new room by itself)",
    )


def build_token_parser() -> argparse.ArgumentParser:
    """The arguments of `protoface-emulator token`."""
    parser = argparse.ArgumentParser(
        prog="protoface-emulator token",
        description="Print a participant token for a room on the livekit-server in "
        "LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET (default: the dev server of "
        "`protoface-emulator livekit-server`).",
    )
    parser.add_argument("--room", default="", help="the room (default: a new name, printed)")
    parser.add_argument("--identity", default="", help="the participant (default: person-XXXX)")
    parser.add_argument("--name", default="you", help="the display name (default %(default)s)")
    _add_room_arguments(parser)
    return parser


def token_main(argv: Sequence[str]) -> int:
    """`protoface-emulator token`: the token on stdout, what it is for on stderr."""
    from protoface_emulator.local.livekit_dev import mint_token

    args = build_token_parser().parse_args(list(argv))
    try:
        target = livekit_target()
    except UsageError as exc:
        print(f"protoface-emulator token: {exc}", file=sys.stderr)
        return 2
    room = args.room or f"room-{uuid.uuid4().hex[:8]}"
    identity = args.identity or f"person-{uuid.uuid4().hex[:6]}"
    token = mint_token(
        target.api_key,
        target.api_secret,
        identity,
        room,
        name=args.name,
        ttl=TOKEN_TTL,
        dispatch_agent=args.agent_name or None,
    )
    hours = TOKEN_TTL.total_seconds() / 3600
    print(
        f"token: {identity} in room {room} on {target.url}, valid {hours:.0f} h"
        + (" (dev key pair)" if target.dev_pair else ""),
        file=sys.stderr,
    )
    print(token, flush=True)
    return 0


def build_join_parser() -> argparse.ArgumentParser:
    """The arguments of `protoface-emulator join`."""
    parser = argparse.ArgumentParser(
        prog="protoface-emulator join",
        description="Serve the playground's page for a livekit-server run by hand: open it, "
        "click Join, and see, hear and talk to the avatar of the agent in that room.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_JOIN_PORT,
        help="port of the page on 127.0.0.1 (default %(default)s; 0 picks a free one)",
    )
    parser.add_argument("--room", default="", help="the room every tab joins (default: one each)")
    _add_room_arguments(parser)
    parser.add_argument("--open", action="store_true", help="open the page in your browser")
    return parser


def join_main(argv: Sequence[str]) -> int:
    """`protoface-emulator join`: serve the page until Ctrl-C or SIGTERM."""
    parser = build_join_parser()
    args = parser.parse_args(list(argv))
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port: use 0..65535 (0 picks a free one)")
    try:
        target = livekit_target()
        return asyncio.run(_serve_page(args, target))
    except UsageError as exc:
        print(f"protoface-emulator join: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


async def check_livekit(target: LiveKitTarget) -> None:
    """Make sure the server answers and accepts the key (a room list is enough).

    Raises:
        UsageError: It does not answer, or refuses the key; the message says what to do.
    """
    from livekit import api as lkapi

    async with lkapi.LiveKitAPI(target.http_url, target.api_key, target.api_secret) as lk:
        try:
            await asyncio.wait_for(lk.room.list_rooms(lkapi.ListRoomsRequest()), timeout=10)
        except lkapi.TwirpError as exc:
            raise UsageError(
                f"the livekit-server at {target.url} refused LIVEKIT_API_KEY={target.api_key} "
                f"(HTTP {exc.status}): export the key and secret it runs with"
            ) from None
        except Exception as exc:  # refused, reset, DNS, timeout: aiohttp's errors vary
            raise UsageError(
                f"no livekit-server answers at {target.url} ({type(exc).__name__}): start one "
                "with `protoface-emulator livekit-server`, or export LIVEKIT_URL with yours"
            ) from None


async def _serve_page(args: argparse.Namespace, target: LiveKitTarget) -> int:
    from aiohttp import web

    from protoface_emulator.playground.page_server import (
        EmulatorClient,
        Playground,
        livekit_client_bundle,
    )

    bundle = livekit_client_bundle()
    if bundle is None:
        raise UsageError(
            "the livekit-client bundle is missing from this installation: reinstall "
            "protoface-emulator from a wheel (in a clone: scripts/install-playground-deps)"
        )
    await check_livekit(target)
    emulator = EmulatorClient(
        os.environ.get("PROTOFACE_API_URL") or DEFAULT_EMULATOR_URL,
        os.environ.get("PROTOFACE_API_KEY", ""),
    )
    page = Playground(target, emulator, bundle, agent_name=args.agent_name, room=args.room)
    runner = web.AppRunner(page.app(), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, "127.0.0.1", args.port).start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}): pass --port with "
                "a free port, or --port 0 for any"
            ) from None
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        print(f"join: {url}", flush=True)
        if args.open:
            webbrowser.open(url)
        await _until_stopped()
    finally:
        await runner.cleanup()
        await emulator.aclose()
    return 0


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()

"""Everything the playground runs, in one process group: LiveKit, the emulator, an agent, the page.

`command` starts this module (`python -m protoface_emulator.playground.stack`) in
a process group of its own and stops it with SIGTERM (killing the group if
anything is left), so run `protoface-emulator playground` rather than this
directly. In order, it:

1. starts `livekit-server --dev` and the `protoface-emulator` command on 127.0.0.1;
2. starts the agent file as a LiveKit Agents worker (`agent_process`, `run_agent`)
   with `LIVEKIT_*` and `PROTOFACE_*` pointed at them, and waits until it registers;
3. serves the page and its API (`page_server`), then prints
   `playground: http://127.0.0.1:PORT/` on a line of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import webbrowser
from pathlib import Path
from typing import cast

from aiohttp import web

from protoface_emulator.hosting.timing import DEFAULT_PROFILE, PROFILES
from protoface_emulator.local.launch import EmulatorProcess, start_emulator_process
from protoface_emulator.local.livekit_dev import (
    LiveKitServer,
    LiveKitServerMissing,
    start_livekit_server,
)
from protoface_emulator.playground.agent_process import (
    AgentProcess,
    PlaygroundError,
    start_agent,
    wait_registered,
)
from protoface_emulator.playground.page_server import (
    EmulatorClient,
    Playground,
    livekit_client_bundle,
)

log = logging.getLogger("playground")


async def serve(args: argparse.Namespace) -> None:
    """Start everything, print the URL, run until SIGTERM/SIGINT, stop everything."""
    bundle = livekit_client_bundle()
    if bundle is None:
        raise PlaygroundError(
            "the livekit-client bundle is missing from this installation: reinstall "
            "protoface-emulator from a wheel, or in a clone of the repository run "
            "scripts/install-playground-deps"
        )
    agent_file: Path = args.agent.resolve()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    watch_parent = asyncio.create_task(_stop_when_orphaned(stop))

    livekit: LiveKitServer | None = None
    emulator: EmulatorProcess | None = None
    agent: AgentProcess | None = None
    runner: web.AppRunner | None = None
    protoface: EmulatorClient | None = None
    try:
        livekit, emulator = await _start_servers(args.profile)
        env = {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret,
            "PROTOFACE_API_URL": emulator.url,
            "PROTOFACE_API_KEY": emulator.api_key,
        }
        agent = start_agent(agent_file, env, verbose=args.verbose)
        protoface = EmulatorClient(emulator.url, emulator.api_key)
        page = Playground(livekit, protoface, bundle)
        runner = await _listen(page, args.port)
        await wait_registered(agent, agent_file, args.ready_timeout, stop)
        if stop.is_set():
            return
        page.agent_name = agent.agent_name
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/"
        print(f"playground: {url}", flush=True)
        if args.open:
            webbrowser.open(url)
        await stop.wait()
    finally:
        watch_parent.cancel()
        if runner is not None:
            await runner.cleanup()
        if agent is not None:
            await asyncio.to_thread(agent.stop)
        if protoface is not None:
            await protoface.aclose()
        if emulator is not None:
            await asyncio.to_thread(emulator.stop)
        if livekit is not None:
            await asyncio.to_thread(_stop_livekit, livekit)
        if agent is not None:
            agent.log_path.unlink(missing_ok=True)


async def _start_servers(profile: str) -> tuple[LiveKitServer, EmulatorProcess]:
    """livekit-server and the emulator command (with timing `profile`), both or neither."""
    # Both at once: each takes seconds on a busy machine.
    livekit, emulator = await asyncio.gather(
        asyncio.to_thread(start_livekit_server),
        asyncio.to_thread(
            start_emulator_process,
            args=["--log-level", "warning", "--profile", profile],
            stderr=sys.stderr,
        ),
        return_exceptions=True,
    )
    if isinstance(livekit, LiveKitServer) and isinstance(emulator, EmulatorProcess):
        return livekit, emulator
    # One failed: stop the other before saying why.
    if isinstance(emulator, EmulatorProcess):
        await asyncio.to_thread(emulator.stop)
    if isinstance(livekit, LiveKitServer):
        await asyncio.to_thread(_stop_livekit, livekit)
    raise livekit if isinstance(livekit, BaseException) else cast(BaseException, emulator)


async def _listen(page: Playground, port: int) -> web.AppRunner:
    """Serve the page on 127.0.0.1:`port`."""
    runner = web.AppRunner(page.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError as exc:
        await runner.cleanup()
        raise PlaygroundError(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): "
            "pass --port with a free port, or --port 0 for any"
        ) from None
    return runner


def _stop_livekit(livekit: LiveKitServer) -> None:
    """Stop livekit-server at once: a second SIGTERM skips its wait for rooms to empty.

    Everyone it would wait for (the agent, the avatars) has gone already, and the
    first SIGTERM alone keeps it up for 10 s while it drains the tabs' rooms.
    """
    process = livekit.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    livekit.stop()


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """Stop if the supervising `command` is gone (it would have killed us)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()
            return


def main(argv: list[str] | None = None) -> int:
    """Run the stack (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--agent", type=Path, required=True)
    parser.add_argument("--open", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("livekit").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(args))
    except (PlaygroundError, LiveKitServerMissing) as exc:
        print(f"playground: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A worker process: hosts the avatar workers a `ProcessPool` places on it.

Run as `python -m protoface_emulator.hosting.host [--options JSON]`. Commands
arrive on stdin and events leave on the original stdout (see `protocol.py`);
file descriptor 1 is pointed at stderr first, so that nothing else printed in
this process (a library, the native SDK) can corrupt the protocol. When stdin
closes (the pool closed it, or the emulator died), every worker leaves its room
and the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import IO, Any

from protoface_emulator.avatar.options import WorkerOptions
from protoface_emulator.avatar.worker import make_worker_factory
from protoface_emulator.hosting.protocol import EventWriter, decode, encode, spec_from_wire
from protoface_emulator.lifecycle import FAILURE_WORKER_CRASHED, WorkerHandle

logger = logging.getLogger("protoface_emulator.workers.host")


def _write(out: IO[bytes], message: dict[str, Any]) -> None:
    # The pool may be gone (the emulator was killed): then nobody is listening.
    with contextlib.suppress(OSError, ValueError):
        out.write(encode(message))
        out.flush()


async def serve(options: WorkerOptions, out: IO[bytes]) -> None:
    """Run workers as stdin commands them until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    factory = make_worker_factory(options)
    workers: dict[int, WorkerHandle] = {}
    closing: set[asyncio.Task[None]] = set()

    async def close(key: int, handle: WorkerHandle) -> None:
        await handle.aclose()
        _write(out, {"key": key, "event": "closed"})

    _write(out, {"event": "ready"})
    while line := await reader.readline():
        message = decode(line)
        key = int(message["key"])
        if message["op"] == "start":
            events = EventWriter(lambda message: _write(out, message), key)
            try:
                workers[key] = factory(spec_from_wire(message["spec"]), events)
            except Exception as exc:
                logger.exception("could not start an avatar worker")
                events.on_failed(FAILURE_WORKER_CRASHED, f"{type(exc).__name__}: {exc}")
        elif message["op"] == "close" and key in workers:
            task = asyncio.create_task(close(key, workers.pop(key)))
            closing.add(task)
            task.add_done_callback(closing.discard)
    # The pool is gone: leave every room before exiting.
    await asyncio.gather(*(close(k, h) for k, h in workers.items()), *closing)


def main() -> None:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser(description="a protoface-emulator worker process")
    parser.add_argument("--options", help="WorkerOptions fields as JSON")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--nice", type=int, default=0, help="added to this process's niceness")
    args = parser.parse_args()
    if args.nice:
        os.nice(args.nice)
    # The protocol gets the real stdout; anything else written to fd 1 goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s",
    )
    options = (
        WorkerOptions(**json.loads(args.options)) if args.options else WorkerOptions.from_env()
    )
    # Ctrl-C in a terminal reaches the whole process group; the emulator then ends
    # its sessions and closes our stdin, which is when we leave.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve(options, out))


if __name__ == "__main__":
    main()

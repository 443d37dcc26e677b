"""Sessions' avatar workers in a pool of worker processes.

`ProcessPool` is a `lifecycle.WorkerFactory`: the store calls it on the loop for
each session and gets a handle at once, as with the in-process worker. Each
session is placed on the worker process with the fewest sessions; the process
(`python -m protoface_emulator.hosting.host`) runs the same `AvatarWorker` it
would run in-process and reports its events back over a pipe (`protocol.py`).

A worker process that dies fails only its own sessions, with `worker_crashed`
and a message naming the process and its exit status; the pool starts a fresh
process in its place for the sessions that follow. The API's process never
renders, encodes or publishes, so its latency does not grow with the number of
avatars. A process left without its emulator (killed with SIGKILL) sees its
stdin close and takes its workers out of their rooms.

`hang()`, `thaw()` and `kill()` freeze, thaw or kill the process running a
session, for tests of avatars that die without leaving their room.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from ..lifecycle import FAILURE_WORKER_CRASHED, WorkerEvents, WorkerHandle, WorkerSpec
from .protocol import apply_event, decode, encode, spec_to_wire

__all__ = ["ProcessPool", "WorkerProcess", "default_pool_size"]

logger = logging.getLogger("protoface_emulator.workers")

# How long a closed worker may take to report that it left its room. The store
# abandons a close after 10 s anyway; the worker bounds its own cleanup at 5 s.
_CLOSE_TIMEOUT = 8.0
# How long `start()` waits for the processes to be ready (imports take seconds).
_READY_TIMEOUT = 60.0
# How long a worker process may take to exit once its stdin is closed.
_EXIT_TIMEOUT = 10.0


def default_pool_size() -> int:
    """One worker process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _PooledWorker:
    """The store's handle on a worker that runs in a worker process."""

    def __init__(self, process: WorkerProcess, key: int, events: WorkerEvents) -> None:
        self._process = process
        self._key = key
        self.events = events
        self.closed = asyncio.get_running_loop().create_future()
        self._close_requested = False

    async def aclose(self) -> None:
        """Ask the worker to leave its room and wait until it has (bounded)."""
        if not self._close_requested:
            self._close_requested = True
            self._process.send({"op": "close", "key": self._key})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), _CLOSE_TIMEOUT)


class WorkerProcess:
    """One worker process of a pool and the sessions placed on it.

    Args:
        index: Its number in the pool, for logs.
        argv: The command that runs it.
        env: Its environment; this process's by default.
    """

    def __init__(self, index: int, argv: list[str], env: Mapping[str, str] | None) -> None:
        self.index = index
        self._argv = argv
        self._env = dict(env) if env is not None else None
        self._process: asyncio.subprocess.Process | None = None
        self._pending: list[bytes] = []
        self._workers: dict[int, _PooledWorker] = {}
        self._session_ids: dict[int, str] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False
        self._exited = False
        self.ready = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        """The process id once it runs."""
        return None if self._process is None else self._process.pid

    @property
    def sessions(self) -> int:
        """How many workers it hosts now."""
        return len(self._workers)

    @property
    def alive(self) -> bool:
        """False once the process has exited (or failed to start)."""
        return not self._exited

    def hosts(self, session_id: str) -> bool:
        """Whether the worker of `session_id` runs here now."""
        return any(self._session_ids.get(key) == session_id for key in self._workers)

    def signal(self, signum: int) -> bool:
        """Send `signum` to the process; False if it does not run.

        `SIGSTOP` freezes it (`SIGCONT` thaws it), `SIGKILL` kills it: what a
        crashed or unplugged machine looks like from the room.
        """
        process = self._process
        if process is None or process.returncode is not None or self._exited:
            return False
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            return False
        if signum == signal.SIGSTOP:
            self._stopped = True
        elif signum in (signal.SIGCONT, signal.SIGKILL):
            self._stopped = False
        return True

    def spawn(self) -> None:
        """Start the process in the background."""
        self._reader = asyncio.get_running_loop().create_task(
            self._run(), name=f"protoface-worker-process-{self.index}"
        )

    def start_worker(self, key: int, spec: WorkerSpec, events: WorkerEvents) -> _PooledWorker:
        """Place a worker here; its events arrive on `events`."""
        worker = _PooledWorker(self, key, events)
        self._workers[key] = worker
        self._session_ids[key] = spec.session_id
        self.send({"op": "start", "key": key, "spec": spec_to_wire(spec)})
        return worker

    def send(self, message: dict[str, Any]) -> None:
        """Send a command, now or as soon as the process runs."""
        if self._exited:
            return
        line = encode(message)
        process = self._process
        if process is None or process.stdin is None:
            self._pending.append(line)
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            process.stdin.write(line)

    async def aclose(self) -> None:
        """Close its stdin (its workers leave their rooms) and wait for it to exit."""
        if self._reader is None:
            return
        process = self._process
        if self._stopped:
            self.signal(signal.SIGCONT)  # a frozen process could not exit
        if process is not None and process.stdin is not None and not self._exited:
            process.stdin.close()
        _, pending = await asyncio.wait({self._reader}, timeout=_EXIT_TIMEOUT)
        if pending and process is not None and process.returncode is None:
            logger.warning("worker process %d did not exit; killing it", self.index)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.wait({self._reader})

    async def _run(self) -> None:
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=self._env,
                limit=1 << 20,
            )
        except OSError as exc:
            logger.error("could not start worker process %d: %s", self.index, exc)
            self._exit(f"could not be started ({exc})")
            return
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        for line in self._pending:
            process.stdin.write(line)
        self._pending.clear()
        try:
            while line := await process.stdout.readline():
                self._dispatch(decode(line))
        except (ValueError, asyncio.LimitOverrunError):
            logger.exception("worker process %d broke the protocol; killing it", self.index)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        status = await process.wait()
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        self._exit(f"(pid {process.pid}) {how}")

    def _dispatch(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "ready":
            if not self.ready.done():
                self.ready.set_result(None)
            return
        worker = self._workers.get(int(message.get("key", -1)))
        if worker is None:
            return
        if apply_event(worker.events, message):
            del self._workers[int(message["key"])]
            if not worker.closed.done():
                worker.closed.set_result(None)

    def _exit(self, how: str) -> None:
        self._exited = True
        if not self.ready.done():
            self.ready.set_result(None)
        workers, self._workers = self._workers, {}
        if workers:
            logger.warning(
                "worker process %d %s; failing its %d session(s)", self.index, how, len(workers)
            )
        for worker in workers.values():
            if not worker.closed.done():
                worker.closed.set_result(None)
            # A session being closed is not failed; the store ignores reports on
            # sessions that are no longer live.
            worker.events.on_failed(FAILURE_WORKER_CRASHED, f"the avatar's worker process {how}")


class ProcessPool:
    """A `WorkerFactory` that runs each session's worker in a worker process.

        pool = ProcessPool(processes=2)
        async with Emulator(worker_factory=pool) as emu:  # starts and closes the pool
            ...

    Args:
        processes: How many worker processes; one per core by default.
        options: `worker.WorkerOptions` for every worker, as keyword arguments;
            by default each process reads `WorkerOptions.from_env()`.
        env: The processes' environment; this process's by default.
        log_level: The processes' log level name (`info`, `debug`, ...).
        nice: Added to the processes' niceness (Unix): when the cores are
            saturated the API's process is served first, so its latency holds
            while the avatars lose frames.

    Raises:
        ValueError: `processes` is below 1.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        log_level: str = "info",
        nice: int = 5,
    ) -> None:
        size = default_pool_size() if processes is None else processes
        if size < 1:
            raise ValueError(
                f"a process pool needs at least 1 worker process, got {processes!r}; "
                "use the in-process worker for none"
            )
        self.size = size
        argv = [sys.executable, "-m", "protoface_emulator.hosting.host", "--log-level", log_level]
        if nice and hasattr(os, "nice"):
            argv += ["--nice", str(nice)]
        if options is not None:
            argv += ["--options", json.dumps(dict(options))]
        self._argv = argv
        self._env = env
        self._processes: list[WorkerProcess] = []
        self._keys = itertools.count(1)
        self._spawned = itertools.count()
        self._closed = False

    @property
    def processes(self) -> list[WorkerProcess]:
        """The worker processes now running (or starting)."""
        return list(self._processes)

    async def start(self) -> None:
        """Start every worker process and wait (bounded) until each is ready.

        A worker process imports LiveKit and livekit-agents first, seconds of CPU;
        waiting here keeps the first session as quick as later ones, as with the
        in-process worker (whose import happens before the emulator serves). Past
        `_READY_TIMEOUT` it stops waiting: sessions then wait for their process.
        """
        self._fill()
        waiting = [p.ready for p in self._processes]
        _, pending = await asyncio.wait(waiting, timeout=_READY_TIMEOUT)
        if pending:
            logger.warning(
                "%d worker process(es) not ready after %.0f s; serving anyway",
                len(pending),
                _READY_TIMEOUT,
            )

    def hang(self, session_id: str | None = None) -> int:
        """Freeze the process running `session_id`'s worker (every process if None).

        Its avatars stop answering but stay in their rooms until LiveKit times
        their connections out, as when a worker's machine dies or is cut off;
        the API still reports their sessions running. `thaw()` undoes it.

        Returns:
            How many processes were frozen.
        """
        return self._signal(session_id, signal.SIGSTOP)

    def thaw(self) -> int:
        """Let every frozen process run again; returns how many were thawed."""
        return self._signal(None, signal.SIGCONT)

    def kill(self, session_id: str | None = None) -> int:
        """SIGKILL the process running `session_id`'s worker (every process if None).

        Its avatars vanish without leaving their rooms (LiveKit drops them
        after its timeout); the API fails their sessions with `worker_crashed`.

        Returns:
            How many processes were killed.
        """
        return self._signal(session_id, signal.SIGKILL)

    def _signal(self, session_id: str | None, signum: int) -> int:
        targets = [p for p in self._processes if session_id is None or p.hosts(session_id)]
        if session_id is not None and not targets:
            raise LookupError(
                f"no worker process of this pool runs session {session_id!r}; "
                "is it a session of this emulator, and still live?"
            )
        return sum(p.signal(signum) for p in targets)

    def __call__(self, spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
        """Place a session's worker on the least loaded process; returns at once.

        Raises:
            RuntimeError: the pool is closed.
        """
        if self._closed:
            raise RuntimeError("this ProcessPool is closed; start a new one")
        self._fill()
        process = min(self._processes, key=lambda p: (p.sessions, p.index))
        return process.start_worker(next(self._keys), spec, events)

    async def aclose(self) -> None:
        """Close every worker process (their workers leave their rooms). Idempotent."""
        self._closed = True
        processes, self._processes = self._processes, []
        await asyncio.gather(*(p.aclose() for p in processes))

    def _fill(self) -> None:
        """Replace dead processes and start missing ones."""
        self._processes = [p for p in self._processes if p.alive]
        while len(self._processes) < self.size:
            process = WorkerProcess(next(self._spawned), self._argv, self._env)
            process.spawn()
            self._processes.append(process)

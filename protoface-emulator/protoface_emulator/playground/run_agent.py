"""Run an agent file as a LiveKit Agents worker in development mode, without the deprecated CLI.

    python -m protoface_emulator.playground.run_agent FILE [--log-level LEVEL]

livekit-agents 1.8 deprecates its built-in Python CLI (`python FILE dev`, which
goes through `cli.run_app`) in favour of the LiveKit CLI (`lk agent dev`) and
`python -m livekit.agents start FILE --dev`, which imports FILE and runs the
`AgentServer` it defines (`server = AgentServer()` + `@server.rtc_session()`).
This module runs FILE that second way, so no deprecation warning is printed.

Files in the older style, which build their worker only under
`if __name__ == "__main__":` and hand it to `cli.run_app(...)` (an
`AgentServer` or `WorkerOptions(entrypoint_fnc=...)`), run too: FILE is imported
as a module (so its entrypoint can be pickled into job processes by name), then
that block runs with `cli.run_app` standing in to catch what it is given instead
of starting the deprecated CLI, and the worker it describes is run as above.

The worker reads `LIVEKIT_URL`, `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET`
from the environment (the playground sets them). `--inference-missing NAMES`
(the playground passes it when it found no LiveKit Inference credentials) has
each session that starts with Inference models log which variables to set.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from protoface_emulator.playground.inference_check import guard_job_processes

__all__ = ["AgentFileError", "load_agent_server", "main"]

# The name the worker of an older-style file is given in its module, where
# livekit-agents' discovery finds any AgentServer.
CAUGHT_SERVER = "protoface_playground_server"


class AgentFileError(RuntimeError):
    """The file defines no worker this module can run; the message says what to write."""


def _is_main_guard(node: ast.stmt) -> bool:
    """Whether `node` is `if __name__ == "__main__":` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _catch_run_app(module: ModuleType, path: Path) -> Any:
    """Run the file's `__main__` block in its module, catching what it gives `cli.run_app`."""
    from livekit.agents import cli

    tree = ast.parse(path.read_text(), filename=str(path))
    blocks = [node for node in tree.body if _is_main_guard(node)]
    body = [statement for block in blocks for statement in block.body]  # type: ignore[attr-defined]
    if not body:
        return None
    caught: list[Any] = []
    original = cli.run_app

    def catch(server: Any) -> None:
        caught.append(server)

    # `from livekit.agents.cli import run_app` bound the original in the module too.
    aliases = [name for name, value in vars(module).items() if value is original]
    saved_argv = sys.argv
    try:
        cli.run_app = catch
        for name in aliases:
            setattr(module, name, catch)
        sys.argv = [str(path)]
        code = compile(ast.Module(body=body, type_ignores=[]), str(path), "exec")
        exec(code, vars(module))  # the file's own code, as `python FILE` would run it
    finally:
        cli.run_app = original
        for name in aliases:
            setattr(module, name, original)
        sys.argv = saved_argv
    return caught[0] if caught else None


def _idle() -> float:
    return 0.0


def _report_idle(server: Any) -> None:
    # livekit-server dispatches a job only to a worker whose reported load is under
    # its threshold, and by default a worker reports the machine's CPU use. The
    # playground's worker is the only one, on a machine also rendering avatars
    # (and, in CI, running other tests): reported busy, a tab's room would get no
    # agent. So it reports itself idle, whatever the file set.
    server.load_fnc = _idle


def _prepare(server: Any, inference_missing: Sequence[str]) -> None:
    _report_idle(server)
    if inference_missing:
        guard_job_processes(server, list(inference_missing))


def load_agent_server(path: Path, *, inference_missing: Sequence[str] = ()) -> str:
    """Import `path` and make sure it holds an `AgentServer`; returns the module's name.

    Every `AgentServer` it holds then reports itself idle (see `_report_idle`).

    Args:
        path: The agent file.
        inference_missing: The LiveKit Inference variables the playground could
            not fill: when given, a session that starts with Inference models
            logs which to set (`inference_check.guard_job_processes`).

    Raises:
        AgentFileError: It has no `AgentServer` and hands none (nor `WorkerOptions`)
            to `cli.run_app`.
    """
    from livekit.agents import AgentServer, WorkerOptions
    from livekit.agents.cli.discover import get_module_data_from_path

    data = get_module_data_from_path(path)
    # As `python -m livekit.agents start FILE` does: job processes import it by this name.
    sys.path.insert(0, str(data.extra_sys_path))
    module = importlib.import_module(data.module_import_str)
    servers = [value for value in vars(module).values() if isinstance(value, AgentServer)]
    for server in servers:
        _prepare(server, inference_missing)
    if servers:
        return module.__name__
    given = _catch_run_app(module, path)
    if isinstance(given, WorkerOptions):
        given = AgentServer.from_server_options(given)
    if not isinstance(given, AgentServer):
        raise AgentFileError(
            f"{path} defines no AgentServer: write `server = AgentServer()` with "
            "`@server.rtc_session()` on your entrypoint (or hand an AgentServer or "
            "WorkerOptions to cli.run_app under `if __name__ == '__main__':`)"
        )
    _prepare(given, inference_missing)
    setattr(module, CAUGHT_SERVER, given)
    return module.__name__


def main(argv: list[str] | None = None) -> int:
    """Run FILE's worker in development mode until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m protoface_emulator.playground.run_agent",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("file", type=Path, help="the agent's .py file")
    parser.add_argument("--log-level", default="INFO", help="the worker's log level")
    parser.add_argument(
        "--inference-missing",
        default="",
        metavar="NAMES",
        help="comma-separated LiveKit Inference variables that are not set: a session "
        "with Inference models says to set them",
    )
    args = parser.parse_args(argv)
    path: Path = args.file.resolve()
    if not path.is_file():
        parser.error(f"{args.file}: no such file; pass the path of your agent's .py file")
    try:
        missing = [name for name in args.inference_missing.split(",") if name]
        load_agent_server(path, inference_missing=missing)
    except AgentFileError as exc:
        print(f"run_agent: {exc}", file=sys.stderr)
        return 2
    from livekit.agents.__main__ import main as agents_main

    return agents_main(["start", str(path), "--dev", "--log-level", args.log_level])


if __name__ == "__main__":
    sys.exit(main())

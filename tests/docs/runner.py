"""Runs the blocks of one document, in order, in one directory, as a reader would.

Shell blocks run in bash (`set -eo pipefail`); what a block exports and the
directory it ends in carry over to the next block, as in one terminal.
Background blocks run in a process group of their own, each with a log, and
are stopped when the document is done. Python blocks run with the document's
virtualenv, top-level `await` allowed (as in `python -m asyncio`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from .blocks import Block, shell_of

AWAIT_RUNNER = """\
import ast, asyncio, sys
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "__main__", "__file__": path})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


class BlockFailed(AssertionError):
    """A block did not do what the document says; the message shows its output."""


class DocumentRun:
    """The state one document's blocks share: directory, environment, background jobs."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.cwd = directory
        self.env = env
        self.background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
        self._count = 0
        (directory / ".doc-run").mkdir(parents=True, exist_ok=True)
        (directory / ".doc-run" / "await_runner.py").write_text(AWAIT_RUNNER)

    def _scratch(self, suffix: str) -> Path:
        self._count += 1
        return self.directory / ".doc-run" / f"block{self._count}{suffix}"

    def run(self, block: Block) -> None:
        """Run (or save) one block, failing with its output if it misbehaves."""
        self._run(block)
        if "logs" in block.run:
            self._wait_for_logs(block, block.run["logs"])

    def _run(self, block: Block) -> None:
        if block.file:
            target = self.cwd / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        elif block.language == "python":
            self._foreground(block, ["python", str(self._python_file(block))])
        elif "background" in block.run:
            self._start_background(block)
        else:
            self._foreground(block, ["bash", str(self._shell_file(block))])

    def _python_file(self, block: Block) -> Path:
        path = self._scratch(".py")
        path.write_text(block.code)
        return path

    def _shell_file(self, block: Block) -> Path:
        """The block as a script that saves its environment and directory on the way out."""
        env_file, cwd_file = (
            self.directory / ".doc-run" / "env",
            self.directory / ".doc-run" / "cwd",
        )
        script = self._scratch(".sh")
        script.write_text(
            "set -eo pipefail\n"
            f'trap \'env -0 > "{env_file}"; pwd > "{cwd_file}"\' EXIT\n' + shell_of(block)
        )
        return script

    def _foreground(self, block: Block, argv: list[str]) -> None:
        if argv[0] == "python":
            runner = self.directory / ".doc-run" / "await_runner.py"
            argv = ["python", str(runner), argv[1]]
        try:
            done = subprocess.run(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=block.timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            output = (exc.output or b"").decode(errors="replace")
            message = f"{block.where} took over {block.timeout:g} s:\n{output[-3000:]}"
            raise BlockFailed(message) from None
        output = done.stdout.decode(errors="replace")
        if argv[0] == "bash":
            self._take_environment()
        failed = done.returncode != 0
        if failed != ("fails" in block.run):
            raise BlockFailed(
                f"{block.where} exited {done.returncode}:\n{block.code}\n--- output ---\n"
                f"{output[-3000:]}"
            )
        expected = block.run.get("expect")
        if expected and expected not in output:
            raise BlockFailed(f"{block.where}: {expected!r} not in its output:\n{output[-3000:]}")

    def _take_environment(self) -> None:
        env_file, cwd_file = (
            self.directory / ".doc-run" / "env",
            self.directory / ".doc-run" / "cwd",
        )
        if env_file.exists():
            pairs = env_file.read_bytes().decode(errors="replace").split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)
            env_file.unlink()
        if cwd_file.exists():
            self.cwd = Path(cwd_file.read_text().strip())
            cwd_file.unlink()

    def _start_background(self, block: Block) -> None:
        log = self._scratch(".log")
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", "set -eo pipefail\n" + shell_of(block)],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((block, process, log))
        ready = block.run.get("ready")
        if ready:
            self._wait_for(block, process, log, ready)

    def _wait_for(
        self, block: Block, process: subprocess.Popen[bytes], log: Path, text: str
    ) -> None:
        deadline = time.monotonic() + block.timeout
        while time.monotonic() < deadline:
            output = log.read_text(errors="replace")
            if text in output:
                return
            if process.poll() is not None:
                raise BlockFailed(
                    f"{block.where} exited {process.returncode} before printing {text!r}:\n"
                    f"{output[-3000:]}"
                )
            time.sleep(0.2)
        output = log.read_text(errors="replace")
        raise BlockFailed(
            f"{block.where}: no {text!r} within {block.timeout:g} s:\n{output[-3000:]}"
        )

    def _wait_for_logs(self, block: Block, text: str) -> None:
        """What a block makes a server or an agent print (the background blocks' logs)."""
        deadline = time.monotonic() + block.timeout
        while time.monotonic() < deadline:
            if any(text in self.log_of(b) for b, _, _ in self.background):
                return
            time.sleep(0.5)
        raise BlockFailed(f"{block.where}: no {text!r} in the background blocks' output")

    def close(self) -> list[str]:
        """Stop the background jobs, newest first; what each printed if it died early."""
        died: list[str] = []
        for block, process, _ in reversed(self.background):
            if process.poll() is not None:
                died.append(f"{block.where} exited {process.returncode} while the document ran")
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # anything its job left behind
        return died

    def log_of(self, block: Block) -> str:
        for started, _, log in self.background:
            if started is block:
                return log.read_text(errors="replace")
        return ""

"""The code blocks of the docs, and the directives that say how each one runs.

The directives are described at the top of `test_doc_blocks.py`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

LANGUAGES = {"bash", "sh", "shell", "console", "python"}
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
DIRECTIVE = re.compile(r"^<!--\s*([\w-]+):\s*(.*?)\s*-->\s*$")
KNOWN = {"not-run", "file", "run"}
RUN_KEYS = {"background", "ready", "timeout", "fails", "expect", "logs"}


@dataclass
class Block:
    """One runnable-language block of a document, with its directives."""

    path: Path
    line: int
    language: str
    code: str
    directives: dict[str, str] = field(default_factory=dict)
    run: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def not_run(self) -> str | None:
        return self.directives.get("not-run")

    @property
    def file(self) -> str | None:
        return self.directives.get("file")

    @property
    def timeout(self) -> float:
        return float(self.run.get("timeout", "120"))

    def problems(self) -> list[str]:
        """What is wrong with the block's directives (empty when nothing is)."""
        found = [
            f"{self.where}: unknown directive {k!r}" for k in self.directives if k not in KNOWN
        ]
        if "not-run" in self.directives and not self.not_run:
            found.append(f"{self.where}: not-run needs a reason")
        found += [f"{self.where}: unknown run setting {k!r}" for k in self.run if k not in RUN_KEYS]
        if "ready" in self.run and "background" not in self.run:
            found.append(f"{self.where}: ready= is for background blocks")
        if "background" in self.run and self.language == "python":
            found.append(f"{self.where}: a python block cannot run in the background")
        return found


def parse_run(text: str) -> dict[str, str]:
    """`background ready="listening on" timeout=60` -> {background: "", ready: ..., ...}."""
    settings: dict[str, str] = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        settings[key] = value
    return settings


def blocks_of(path: Path) -> list[Block]:
    """Every block of `path` in a runnable language, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, language = opened.group(1), opened.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), len(lines))
        block = Block(path, i + 1, language, "\n".join(lines[i + 1 : end]) + "\n")
        _read_directives(block, lines, i)
        if language in LANGUAGES or block.file:  # any block can be saved as a file
            found.append(block)
        i = end + 1
    return found


def _read_directives(block: Block, lines: list[str], fence_index: int) -> None:
    j = fence_index - 1
    while j >= 0 and (match := DIRECTIVE.match(lines[j].strip())):
        key, value = match.group(1), match.group(2)
        if key == "run":
            block.run.update(parse_run(value))
        block.directives.setdefault(key, value)
        j -= 1


def shell_of(block: Block) -> str:
    """The shell commands of a block; a `console` block's are its `$ ` lines."""
    if block.language != "console":
        return block.code
    return "".join(ln[2:] + "\n" for ln in block.code.splitlines() if ln.startswith("$ "))

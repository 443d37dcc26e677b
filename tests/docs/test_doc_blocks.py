"""Every shell and Python block of the docs runs as written, or says why it cannot offline.

The documents: README.md, docs/*.md and the two package READMEs. A block is a
fenced block in `bash`, `sh`, `shell`, `console` (its `$ ` lines) or `python`.
The blocks of one document run in order in one fresh directory, in a
virtualenv with the built wheels installed by name (tests/docs/conftest.py),
with `PIP_FIND_LINKS` at those wheels and `LIVEKIT_SERVER_BIN` at this
machine's livekit-server. Shell blocks share exports and the working
directory, as in one terminal; Python blocks may use top-level `await`.

Directives are HTML comment lines right before a block's fence (no blank line
between; several may stack):

    <!-- not-run: REASON -->        not run offline; REASON (non-empty) says why,
                                     e.g. "needs a LiveKit Cloud project"
    <!-- file: NAME -->              save the block as NAME (relative to the working
                                     directory) for later blocks; not run
    <!-- run: background -->         start the block and leave it running for the
                                     document's later blocks (a server, an agent);
                                     its process group is stopped at the end
    <!-- run: ready=TEXT -->         (background) wait until its output shows TEXT
    <!-- run: timeout=SECONDS -->    how long the block (or the wait for TEXT) may
                                     take; 120 by default
    <!-- run: fails -->              the block must exit non-zero (a documented error)
    <!-- run: expect=TEXT -->        its output must show TEXT
    <!-- run: logs=TEXT -->          after it, a background block's output must show
                                     TEXT (what it made a server or agent say)

Several `run:` settings share one comment: `<!-- run: background
ready="listening on" timeout=60 -->` (quote a TEXT that has spaces).

A broken block fails its document's test. Without livekit-server the tests
skip, saying how to get it, except under CI=true, where they fail: there an
unmarked block that was not run fails CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .blocks import Block, blocks_of
from .conftest import REPO, DocsVenv
from .runner import DocumentRun

DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "livekit-plugins-protoface" / "README.md",
    REPO / "protoface-emulator" / "README.md",
]


def doc_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def to_run(path: Path) -> list[Block]:
    return [b for b in blocks_of(path) if not b.not_run]


@pytest.mark.parametrize("path", DOCUMENTS, ids=doc_id)
def test_every_directive_is_known_and_every_not_run_says_why(path: Path) -> None:
    problems = [p for block in blocks_of(path) for p in block.problems()]
    assert problems == []


@pytest.mark.e2e
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("path", DOCUMENTS, ids=doc_id)
def test_the_blocks_of_the_document_run_as_written(
    path: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    blocks = to_run(path)
    if not blocks:
        return
    venv: DocsVenv = request.getfixturevalue("docs_venv")
    work = tmp_path / "work"
    work.mkdir()
    run = DocumentRun(work, venv.environment(tmp_path))
    try:
        for block in blocks:
            try:
                run.run(block)
            except AssertionError as exc:  # what the servers and the agent said, to see why
                logs = "".join(
                    f"\n--- {b.where} (background) ---\n{run.log_of(b)[-2000:]}"
                    for b, _, _ in run.background
                )
                raise AssertionError(f"{exc}{logs}") from None
    finally:
        died = run.close()
    assert died == [], "a background block stopped while the document ran"


def test_the_parser_reads_the_directives(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- not-run: needs a LiveKit Cloud project -->\n```bash\nlk agent deploy\n```\n\n"
        '<!-- run: background ready="listening on" timeout=60 -->\n```bash\nserve\n```\n'
        "<!-- file: agent.py -->\n```python\nx = 1\n```\n"
        "```text\nnot a block\n```\n"
        "<!-- not-run: -->\n```sh\ntrue\n```\n"
        "```console\n$ echo hi\nhi\n```\n"
    )
    blocks = blocks_of(doc)
    assert [b.language for b in blocks] == ["bash", "bash", "python", "sh", "console"]
    assert blocks[0].not_run == "needs a LiveKit Cloud project"
    assert blocks[1].run == {"background": "", "ready": "listening on", "timeout": "60"}
    assert blocks[2].file == "agent.py"
    assert blocks[3].problems() == [f"{blocks[3].where}: not-run needs a reason"]


def test_a_document_run_carries_exports_and_fails_on_a_broken_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\nexport GREETING=hello\nmkdir sub && cd sub\n```\n"
        '<!-- file: say.py -->\n```python\nimport os\nprint(os.environ["GREETING"])\n```\n'
        "<!-- run: expect=hello -->\n```bash\npython say.py\n```\n"
        "```python\nimport asyncio\nawait asyncio.sleep(0)\n```\n"
        '<!-- run: background ready="up" timeout=20 -->\n```bash\necho up; sleep 600\n```\n'
        "<!-- run: logs=up -->\n```bash\ntrue\n```\n"
        "```bash\nfalse\n```\n"
    )
    (tmp_path / "work").mkdir()
    run = DocumentRun(tmp_path / "work", {"PATH": os.environ["PATH"]})
    blocks = blocks_of(doc)
    try:
        for block in blocks[:-1]:
            run.run(block)
        with pytest.raises(AssertionError, match="exited 1"):
            run.run(blocks[-1])
    finally:
        assert run.close() == []

"""The quickstart a README shows is the file the examples test starts, to the letter.

`test_examples_start.py` proves `examples/quickstart.py` starts; this proves the
code a reader copies from the root README and from the plugin's README (what
PyPI shows) is that file, so a copy-pasted quickstart is a tested one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.py"


def code_without_docstring(path: Path) -> str:
    """The file's code after its module docstring."""
    source = path.read_text()
    tree = ast.parse(source)
    first = tree.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    lines = source.splitlines()[first.end_lineno :]
    return "\n".join(lines).strip() + "\n"


def first_python_block_after(readme: Path, heading: str) -> str:
    text = readme.read_text()
    after = text.split(f"\n{heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, f"no python block after {heading!r} in {readme}"
    return match.group(1).strip() + "\n"


@pytest.mark.parametrize(
    ("readme", "heading"),
    [
        ("README.md", "## Quickstart"),
        ("livekit-plugins-protoface/README.md", "## Agent quickstart"),
    ],
)
def test_the_readme_quickstart_is_examples_quickstart(readme: str, heading: str) -> None:
    assert first_python_block_after(REPO / readme, heading) == code_without_docstring(QUICKSTART)


def test_the_readmes_run_it_the_way_livekit_agents_recommends() -> None:
    for readme in ("README.md", "livekit-plugins-protoface/README.md"):
        text = (REPO / readme).read_text()
        assert "python -m livekit.agents start" in text
        # The deprecated ways of running an agent are named only as what users may still have.
        assert not re.search(r"^\s*(?:uv run )?python \S+\.py (?:dev|start|console)\b", text, re.M)

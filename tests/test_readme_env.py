"""The environment-variable tables list every variable the packages read.

The names are found in the packages' sources: `os.environ[...]`,
`os.environ.get(...)`, `os.getenv(...)`, the plugin's
`resolve_setting(value, "NAME")`, and constants named `*_ENV`/`ENV_*` holding a
variable's name. Every one must be in the root README's table; the plugin's
own must also be in the plugin README (what PyPI shows).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "livekit-plugins-protoface" / "livekit"
EMULATOR = REPO / "protoface-emulator" / "protoface_emulator"

NAME = r"""["']([A-Z][A-Z0-9_]{1,})["']"""
READS = [
    re.compile(rf"environ\[\s*{NAME}"),
    re.compile(rf"environ\.get\(\s*{NAME}"),
    re.compile(rf"getenv\(\s*{NAME}"),
    re.compile(rf"resolve_setting\([^,()]+,\s*{NAME}"),
    re.compile(rf"^\s*(?:\w+_ENV|ENV_\w+)(?:\s*:\s*[\w\[\]]+)?\s*=\s*{NAME}", re.M),
]


def variables_read(root: Path) -> set[str]:
    """Every environment variable name the Python sources under `root` read."""
    found: set[str] = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        for pattern in READS:
            found.update(pattern.findall(text))
    return found


def table_names(readme: Path) -> set[str]:
    """The variables named in the first column of the README's tables."""
    rows = [ln for ln in readme.read_text().splitlines() if ln.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_the_scan_finds_what_the_code_reads() -> None:
    # A scan that finds nothing would pass the tests below for nothing.
    assert {"PROTOFACE_API_KEY", "LIVEKIT_URL", "LIVEKIT_API_SECRET"} <= variables_read(PLUGIN)
    assert {"PROTOFACE_EMULATOR_VIDEO_FPS", "LIVEKIT_SERVER_BIN"} <= variables_read(EMULATOR)


def test_the_root_readme_lists_every_variable_both_packages_read() -> None:
    missing = (variables_read(PLUGIN) | variables_read(EMULATOR)) - table_names(REPO / "README.md")
    assert missing == set(), "add these to the README's 'Environment variables' table"


def test_the_plugin_readme_lists_every_variable_the_plugin_reads() -> None:
    readme = REPO / "livekit-plugins-protoface" / "README.md"
    assert variables_read(PLUGIN) - table_names(readme) == set()

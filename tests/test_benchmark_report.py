"""`benchmarks/report.py` writes RESULTS.md from results.json without inventing or dropping.

Run against the committed `benchmarks/results.json` (a run of one section on top
of earlier ones, with missed targets), and against a copy altered the ways a
run can be: every section re-measured, a target report.py has no wording for.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import report  # noqa: E402


@pytest.fixture
def results() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BENCHMARKS / "results.json").read_text())
    return data


def render(results: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "RESULTS.md"
    report.write_markdown(results, path)
    return path.read_text()


def test_nothing_is_printed_as_none(results: dict[str, Any], tmp_path: Path) -> None:
    text = render(results, tmp_path)
    assert "None" not in text


def test_every_target_is_in_the_table_with_its_verdict(
    results: dict[str, Any], tmp_path: Path
) -> None:
    text = render(results, tmp_path)
    table = text.split("## Targets (ours)")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    targets = results["targets"]
    assert len(rows) - 1 == len(targets)  # minus the header row
    missed = sum(1 for t in targets.values() if not t["met"])
    assert sum("**missed**" in row for row in rows) == missed
    assert f"{missed} of {len(targets)} targets missed" in text


def test_a_target_without_wording_still_appears(results: dict[str, Any], tmp_path: Path) -> None:
    altered = copy.deepcopy(results)
    altered["targets"]["brand_new_target"] = {"value": 3, "limit": 2, "met": False}
    assert "| brand new target (limit 2) | 3 | **missed** |" in render(altered, tmp_path)


def test_a_run_of_one_section_is_not_called_a_full_run(
    results: dict[str, Any], tmp_path: Path
) -> None:
    sections = [k for k, v in results.items() if isinstance(v, dict) and "measured" in v]
    assert len(sections) > 1
    one = copy.deepcopy(results)
    for key in sections:
        one[key]["measured"]["date"] = "2000-01-01T00:00:00+00:00"
    one[sections[0]]["measured"]["date"] = one["date"]
    assert f"run of {sections[0]} only" in render(one, tmp_path).splitlines()[2]

    every = copy.deepcopy(results)
    for key in sections:
        every[key]["measured"]["date"] = every["date"]
    assert "run of every section" in render(every, tmp_path).splitlines()[2]


def test_the_committed_results_md_is_what_the_generator_writes(
    results: dict[str, Any], tmp_path: Path
) -> None:
    assert render(results, tmp_path) == (BENCHMARKS / "RESULTS.md").read_text()

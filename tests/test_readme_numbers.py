"""Every measured number a README quotes is in `benchmarks/RESULTS.md`, from a run it names.

A page quotes measurements between `<!-- numbers -->` and `<!-- /numbers -->`
(inline or around a table). Inside such a block every number must be one that
RESULTS.md prints (or that number rounded to fewer decimals), and the block must
name the date and the commit of a run that RESULTS.md records as having measured
a section (its table "Sections, and the run that measured each"), so a reader
can tie each number to the code that made it (`scripts/stale-numbers` lists the
quoted runs whose code changed since).
Outside the blocks, a line that reads like a measurement (a p50/p90/p99, or a
decimal number of %, ms, fps or a ratio) fails: it was typed, not quoted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
READMES = [
    "README.md",
    "CONTRIBUTING.md",
    "livekit-plugins-protoface/README.md",
    "protoface-emulator/README.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
    *sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "benchmarks").glob("*.md")
        if p.name != "RESULTS.md"
    ),
]

BLOCK = re.compile(r"<!-- numbers -->(.*?)<!-- /numbers -->", re.S)
DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})(?:T[\d:.+]+)?")
# A commit as the docs name it: 7 to 40 hex digits, at least one a letter (not a number).
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
CODE_SPAN = re.compile(r"`[^`]*`")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
UNIT = r"\d+(?:\.\d+)?\s*(?:ms|s|%|fps)\b"
PERCENTILE = r"\bp(?:50|90|99)\b"
MEASUREMENT = re.compile(
    rf"{UNIT}.*{PERCENTILE}|{PERCENTILE}.*{UNIT}|\d\.\d+\s*(?:%|ms\b|fps\b|\u00d7)"
)


def numbers_in(text: str) -> list[str]:
    """The numbers of `text`, thousands separators dropped."""
    return [n.replace(",", "") for n in NUMBER.findall(text)]


def results_text() -> str:
    return RESULTS.read_text()


def result_numbers() -> set[str]:
    return set(numbers_in(DATE.sub(" ", results_text())))


def recorded_runs() -> dict[str, str]:
    """The runs RESULTS.md records as having measured a section: commit -> date."""
    rows = re.findall(r"^\| \w+ \| \w+ run of (\S+) \| `([0-9a-f]+)` \|", results_text(), re.M)
    return {commit: DATE.findall(date)[0] for date, commit in rows}


def run_dates() -> set[str]:
    """The dates of the runs RESULTS.md records as having measured a section."""
    return set(recorded_runs().values())


def is_quoted(number: str, recorded: set[str]) -> bool:
    """`number` is in the results, as printed or rounded to its own decimals."""
    if number in recorded:
        return True
    decimals = len(number.split(".")[1]) if "." in number else 0
    value = float(number)
    for r in recorded:
        r_decimals = len(r.split(".")[1]) if "." in r else 0
        if r_decimals > decimals and abs(round(float(r), decimals) - value) < 1e-9:
            return True
    return False


def prose(path: Path) -> str:
    """The file without fenced code blocks (code is not a quotation)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def _commit_or_blank(span: re.Match[str]) -> str:
    """A code span naming a commit stays (a quote names its run's commit); others go."""
    inner = span.group(0).strip("`")
    return inner if COMMIT.fullmatch(inner) else " "


def unquoted_numbers(
    text: str, recorded: set[str], dates: set[str], runs: dict[str, str] | None = None
) -> list[str]:
    """What is wrong with the numbers blocks of `text` (empty when nothing is)."""
    runs = recorded_runs() if runs is None else runs
    problems = []
    for block in BLOCK.findall(CODE_SPAN.sub(_commit_or_blank, text)):
        named = set(DATE.findall(block))
        commits = set(COMMIT.findall(block))
        if not named:
            problems.append(f"a numbers block names no run: {block.strip()[:80]!r}")
        for date in sorted(named - dates):
            problems.append(f"a numbers block names {date}, a run RESULTS.md does not record")
        tied = {runs[r] for c in commits for r in runs if r.startswith(c) or c.startswith(r)}
        if named and not named <= tied:
            problems.append(
                f"a numbers block names the run of {sorted(named - tied)} without its commit "
                f"(RESULTS.md records it): {block.strip()[:60]!r}"
            )
        body = DATE.sub(" ", COMMIT.sub(" ", block))
        problems += [
            f"{n} (in {block.strip()[:60]!r}...) is not in RESULTS.md"
            for n in numbers_in(body)
            if not is_quoted(n, recorded)
        ]
    return problems


def typed_measurements(text: str) -> list[str]:
    """Lines outside the numbers blocks that read like a measurement."""
    outside = BLOCK.sub(" ", CODE_SPAN.sub(" ", text))
    return [ln.strip() for ln in outside.splitlines() if MEASUREMENT.search(ln)]


@pytest.mark.parametrize("name", READMES)
def test_quoted_numbers_are_in_the_results(name: str) -> None:
    problems = unquoted_numbers(prose(REPO / name), result_numbers(), run_dates())
    assert problems == []


@pytest.mark.parametrize("name", READMES)
def test_no_measurement_is_typed_outside_a_numbers_block(name: str) -> None:
    assert typed_measurements(prose(REPO / name)) == []


@pytest.mark.parametrize("name", READMES)
def test_markers_never_start_a_line_with_text_after_them(name: str) -> None:
    # A line that starts with an HTML comment is an HTML block in Markdown: the
    # text after the marker on that line would not be rendered as Markdown.
    starts = re.compile(r"^\s*<!-- /?numbers -->\S", re.M)
    assert starts.findall(prose(REPO / name)) == []


def test_the_check_catches_what_it_is_for() -> None:
    recorded, dates = {"0.41", "91.06", "1407.4", "8.80"}, {"2026-12-03"}
    runs = {"21b8c414d6ea": "2026-12-03"}
    good = (
        "<!-- numbers -->(0.41 s, 91.1 s, 1,407.4/s, 8.8 % in the run of 2026-12-03 at "
        "`21b8c41`)<!-- /numbers -->"
    )
    assert unquoted_numbers(good, recorded, dates, runs) == []
    assert len(unquoted_numbers(good.replace("0.41", "0.49"), recorded, dates, runs)) == 1
    # A date RESULTS.md does not record, and a run named without its commit, both fail.
    assert unquoted_numbers(good.replace("2026-12-03", "2026-11-21"), recorded, dates, runs)
    assert len(unquoted_numbers(good.replace("`21b8c41`", "x"), recorded, dates, runs)) == 1
    no_run = "<!-- numbers -->0.41 s<!-- /numbers -->"
    assert len(unquoted_numbers(no_run, recorded, dates, runs)) == 1
    assert typed_measurements("first frame 435 ms p50") != []
    assert typed_measurements("0.97\u00d7 before the reshape") != []
    assert typed_measurements("every 0.25 s until it joins, 20 ms of silence") == []


def test_results_md_ties_every_section_to_a_commit() -> None:
    assert recorded_runs(), "RESULTS.md's table of runs is missing or unreadable"

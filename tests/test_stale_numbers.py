"""`scripts/stale-numbers`: a quoted benchmark section whose measured code changed is listed.

The script compares each section's commit (results.json) with git history over
the paths that section measures (sections.json). These tests run it on a
throwaway repository, then on this one: a quoted number must come from a run
of the code as it is now (rerun the section, then update the quote).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "stale-numbers"


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--repo", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
    }
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.strip()


def make_repo(tmp_path: Path) -> tuple[Path, str]:
    """A repository with a measured module, a section measured at HEAD, and a quote of it."""
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "plugin").mkdir()
    (repo / "plugin" / "output.py").write_text("x = 1\n")
    (repo / "other.py").write_text("y = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "code")
    commit = git(repo, "rev-parse", "--short=12", "HEAD")
    measured = {"date": "2026-12-06T00:00:00+00:00", "mode": "full", "commit": commit}
    results = {"date": measured["date"], "parity": {"measured": measured}}
    (repo / "benchmarks" / "results.json").write_text(json.dumps(results))
    (repo / "benchmarks" / "sections.json").write_text(json.dumps({"parity": ["plugin"]}))
    quote = f"<!-- numbers -->0.06 s (the run of 2026-12-06 at `{commit[:7]}`)<!-- /numbers -->\n"
    (repo / "README.md").write_text(quote)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "results")
    return repo, commit


def test_a_quoted_section_is_stale_once_its_measured_code_changes(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    assert run(repo).returncode == 0  # results and docs changed, not the measured code

    (repo / "other.py").write_text("y = 2\n")
    git(repo, "commit", "-qam", "unmeasured change")
    assert run(repo).returncode == 0

    (repo / "plugin" / "output.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "output: a new rule")
    done = run(repo)
    assert done.returncode == 1
    assert (
        done.stdout.startswith("parity (run of 2026-12-06") and "output: a new rule" in done.stdout
    )


def test_an_unquoted_section_is_listed_only_with_all(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    (repo / "README.md").write_text("no numbers\n")
    (repo / "plugin" / "output.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "change")
    assert run(repo).returncode == 0
    assert run(repo, "--all").returncode == 1


def test_a_section_without_its_commit_or_its_paths_is_a_missing_record(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path)
    (repo / "benchmarks" / "sections.json").write_text("{}")
    done = run(repo)
    assert done.returncode == 2 and "sections.json names no code" in done.stderr


def test_no_quoted_number_in_these_docs_is_stale() -> None:
    # Fails after a change to code a quoted section measures: rerun that section
    # (`benchmarks/run --only SECTION`) and quote the new run, or stop quoting it.
    done = run(REPO)
    assert done.returncode == 0, done.stdout + done.stderr

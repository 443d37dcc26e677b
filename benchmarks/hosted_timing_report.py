"""The hosted-timing section of RESULTS.md and its targets, without importing LiveKit.

`hosted_timing.py` measures; this renders its section for `report.py` and gives
`bench.py` its targets.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]
FIRST_WORD_GOAL_S = 2.0
VARIANT_LABELS = {
    "none": "no avatar (its own track)",
    "avatar": "avatar, `wait_for_avatar=1.0` (default)",
    # Not the option's value: RESULTS.md never prints the word for a missing number.
    "avatar_always_wait": "avatar, always waiting for its face (published)",
}
SOURCES = {"avatar": "avatar", "own_track": "own track", "None": "nothing"}


def _s(value: object) -> str:
    return f"{value:g} s" if isinstance(value, (int, float)) else "-"


def _section(results: Json) -> Json | None:
    section = results.get("hosted_timing")
    return section if isinstance(section, dict) else None


def _part(section: Json, name: str) -> Json | None:
    part = section.get(name)
    return part if isinstance(part, dict) and "error" not in part else None


def _first_word(section: Json) -> list[str]:
    part = section.get("first_word")
    if not isinstance(part, dict) or "error" in part:
        error = part.get("error") if isinstance(part, dict) else "not measured"
        return [f"Time to first word: not measured ({error}).", ""]
    lines = [
        "| cold start | agent | first word p50 / max | face p50 / max | first heard from "
        "| greeting playout p50 | heard in all (max) | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cold, variants in part.get("cells", {}).items():
        for variant, cell in variants.items():
            cold_label = "any" if cold == "any" else f"{cold} s"
            sources = ", ".join(SOURCES.get(s, s) for s in cell.get("first_word_from", []))
            errors = f" ({len(cell['errors'])} failed)" if cell.get("errors") else ""
            lines.append(
                f"| {cold_label} | {VARIANT_LABELS.get(variant, variant)} "
                f"| {_s(cell.get('first_word_p50_s'))} / {_s(cell.get('first_word_max_s'))} "
                f"| {_s(cell.get('face_p50_s'))} / {_s(cell.get('face_max_s'))} "
                f"| {sources or '-'} | {_s(cell.get('playout_p50_s'))} "
                f"| {_s(cell.get('heard_max_s'))} | {cell.get('runs')}{errors} |"
            )
    return [*lines, ""]


def _long_line(section: Json) -> list[str]:
    part = _part(section, "long_line")
    if part is None:
        return ["The long line: not measured.", ""]
    runs = part.get("runs")
    samples = part.get("samples") or []
    heard = ", ".join(_s(s.get("heard_from_same_avatar_s")) for s in samples)
    own = ", ".join(_s(s.get("heard_from_own_track_s")) for s in samples)
    same = part.get("same_avatar_runs")
    return [
        f"A {_s(part.get('line_s'))} line handed over at once with "
        f"`idle_timeout_seconds={part.get('idle_timeout_s')}`: heard whole from the avatar that "
        f"began it in **{same} of {runs}** run(s) ({'yes' if same == runs and runs else 'no'}); "
        f"heard from it: {heard or '-'}; from the agent's own track: {own or '-'}; losses: "
        f"{part.get('losses')}; hosted sessions created per run: "
        f"{', '.join(str(n) for n in part.get('sessions_created', []))}.",
        "",
    ]


def _cpu(section: Json) -> list[str]:
    part = _part(section, "agent_cpu")
    if part is None:
        return ["The agent's CPU: not measured.", ""]
    lines = [
        f"The agent process's CPU (user + system), its own process apart from the emulator and "
        f"livekit-server, over {_s(part.get('window_s'))} of conversation speaking "
        f"{_s(part.get('speak_s'))} then quiet {_s(part.get('quiet_s'))} in turn, after one "
        "warm-up line (`benchmarks/hosted_timing_agent.py`):",
        "",
        "| agent | CPU s per conversation minute | user / system s | share of one core "
        "| heard in the window | start-up CPU s (imports, join, start, one line) | RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, label in (("none", "no avatar"), ("avatar", "avatar")):
        row = part.get(mode)
        if not isinstance(row, dict) or "error" in row:
            error = row.get("error") if isinstance(row, dict) else "not measured"
            lines.append(f"| {label} | failed: {error} | | | | | |")
            continue
        share = row.get("cpu_share_of_one_core")
        lines.append(
            f"| {label} | {row.get('cpu_per_minute_s')} | {row.get('cpu_user_s')} / "
            f"{row.get('cpu_system_s')} | {f'{share:.1%}' if share is not None else '-'} "
            f"| {_s(row.get('heard_in_window_s'))} of {_s(row.get('spoken_s'))} "
            f"| {row.get('setup_cpu_s')} | {row.get('rss_mb')} |"
        )
    ratio = part.get("avatar_to_none_ratio")
    if ratio is not None:
        lines += ["", f"With the avatar the agent process uses {ratio}x the CPU of without."]
    return [*lines, ""]


def markdown(results: Json) -> list[str]:
    """The section: time to first word and face, the long line, the agent's CPU."""
    section = _section(results)
    if section is None:
        return []
    lines = ["## A hosted service's timing: first word, face, a long line, the agent's CPU", ""]
    if "error" in section:
        return [*lines, f"Not measured: {section['error']}", ""]
    lines += [
        "The emulator made as slow as a hosted service (`Timing(cold_start=...)`), the same "
        "agent with its avatar and without one, heard by viewers in a real room "
        "(`benchmarks/hosted_timing.py`). A 3 s greeting is said right after "
        "`session.start()`; times run from the `say()` call: the first speech a viewer hears "
        "(from the avatar or the agent's own track), the avatar's first frame at the viewer "
        "(time to face). The avatar at the plugin's default (waiting at most 1 s for its face, "
        "then the agent's own track speaks) and always waiting for its face, as the published "
        f"plugin does. Goal: the first word within {FIRST_WORD_GOAL_S:g} s at the default. "
        "`heard in all` is the greeting's seconds heard from both (once: about 3 s).",
        "",
        *_first_word(section),
        *_long_line(section),
        *_cpu(section),
    ]
    return lines


def hosted_timing_targets(results: Json) -> Json:
    """The first word within 2 s at every cold start; the long line whole from one avatar."""
    section = _section(results)
    if section is None or "error" in section:
        return {}
    out: Json = {}
    first = _part(section, "first_word")
    if first is not None:
        worst = [
            variants.get("avatar", {}).get("first_word_max_s")
            for variants in first.get("cells", {}).values()
            if "avatar" in variants
        ]
        value = None if not worst or None in worst else max(worst)
        out["first_word_within_2_s_at_every_cold_start"] = {
            "value": value,
            "limit": FIRST_WORD_GOAL_S,
            "met": value is not None and value <= FIRST_WORD_GOAL_S,
        }
    long_line = _part(section, "long_line")
    if long_line is not None:
        runs, same = long_line.get("runs"), long_line.get("same_avatar_runs")
        out["a_line_twice_the_idle_timeout_heard_whole_from_one_avatar"] = {
            "value": {"same_avatar_runs": same, "runs": runs, "losses": long_line.get("losses")},
            "met": bool(runs) and same == runs and long_line.get("losses") == 0,
        }
    return out

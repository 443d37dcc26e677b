"""The parity section of RESULTS.md (`parity.py` measures it): avatar and no avatar side by side.

Kept apart from `parity.py` so that `report.py` renders RESULTS.md without
importing LiveKit.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def markdown(results: Json) -> list[str]:
    """The parity section of RESULTS.md: avatar and no avatar side by side."""
    parity = results.get("parity")
    if not isinstance(parity, dict):
        return []
    if "error" in parity:
        return ["## Parity: with and without the avatar", "", f"Failed: {parity['error']}", ""]
    avatar, none = parity.get("avatar", {}), parity.get("none", {})

    def get(row: Json, *path: str) -> object:
        value: object = row
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def fmt(value: object, unit: str = " s") -> str:
        return "-" if value is None else f"{value}{unit}" if unit else str(value)

    lines = [
        "## Parity: with and without the avatar",
        "",
        "The same agent in the same run, heard by a viewer: through the avatar, and through "
        f"its own audio track ({parity.get('runs')} runs per figure; `benchmarks/parity.py`).",
        "",
        "| measure | with avatar | without |",
        "|---|---|---|",
    ]
    rows = [
        ("say → first audio (p50)", ("first_audio_p50_s",), " s"),
        ("barge-in → silence (p50)", ("barge_in", "silence_p50_s"), " s"),
        ("barge-in → silence (p90)", ("barge_in", "silence_p90_s"), " s"),
        ("barge-in → handle settled (p50)", ("barge_in", "settled_p50_s"), " s"),
        (
            "barge-in → silence right after a replacement (p50)",
            ("barge_in_after_replacement", "silence_p50_s"),
            " s",
        ),
        ("12 interruptions: unsettled after 3 s", ("storm", "unsettled_after_3s"), ""),
        ("false interruption: resumed", ("false_interruption", "resumed"), ""),
        ("false interruption: heard of an 8 s line", ("false_interruption", "heard_s"), " s"),
        ("false interruption: audio gap", ("false_interruption", "audio_gap_s"), " s"),
    ]
    for label, path, unit in rows:
        with_avatar, without = fmt(get(avatar, *path), unit), fmt(get(none, *path), unit)
        lines.append(f"| {label} | {with_avatar} | {without} |")
    loaded = parity.get("barge_in_under_load")
    if isinstance(loaded, dict):
        burners = loaded.get("burners")
        for q in ("p50", "p90"):
            label = f"barge-in under load ({burners} CPU-bound processes) → silence ({q})"
            key = f"silence_{q}_s"
            with_avatar = fmt(get(loaded, "avatar", key))
            without = fmt(get(loaded, "none", key))
            lines.append(f"| {label} | {with_avatar} | {without} |")
    if isinstance(loaded, dict) and isinstance(loaded.get("measured"), dict):
        measured = loaded["measured"]
        lines += [
            "",
            f"Barge-in under load ({loaded.get('runs')} runs; `benchmarks/bargein_load.py`): "
            f"measured {measured.get('date')} at `{measured.get('commit')}`, load average "
            f"{measured.get('load_average')} at its start.",
        ]
    pause = avatar.get("pause") or {}
    lines += [
        "",
        f"Pause (avatar): audible for {fmt(pause.get('silent_after_s'))} after `pause()`; "
        f"after `resume()` {fmt(pause.get('heard_s'))} of the {fmt(pause.get('line_s'))} line "
        "heard.",
        "",
        "Hard deaths (avatar; a 3 s line said 2 s after the death; without an avatar the "
        f"room hears a line after {fmt(none.get('first_audio_p50_s'))}):",
        "",
        "| death | mute (p50) | mute (max) | `avatar_lost` after the line's start (p50) |",
        "|---|---|---|---|",
    ]
    for how, label in (
        ("worker_killed", "worker SIGKILLed"),
        ("worker_frozen", "worker frozen (SIGSTOP)"),
        ("emulator_killed", "whole emulator SIGKILLed"),
    ):
        row = (parity.get("hard_death") or {}).get(how) or {}
        lines.append(
            f"| {label} | {fmt(row.get('mute_p50_s'))} | {fmt(row.get('mute_max_s'))} | "
            f"{fmt(row.get('lost_after_line_start_p50_s'))} |"
        )
    lines.append("")
    return lines


def parity_targets(results: Json) -> Json:
    """The parity targets (issue 19's bounds), for the targets table."""
    parity = results.get("parity")
    if not isinstance(parity, dict) or "error" in parity:
        return {}
    avatar, none = parity.get("avatar") or {}, parity.get("none") or {}
    out: Json = {}
    mutes = [row.get("mute_max_s") for row in (parity.get("hard_death") or {}).values()]
    worst = None if not mutes or None in mutes else max(m for m in mutes if m is not None)
    out["parity_room_hears_a_line_within_3s_of_its_start_after_a_hard_death"] = {
        "value": worst,
        "limit": 3.0,
        "met": worst is not None and worst <= 3.0,
    }
    ours = (avatar.get("barge_in") or {}).get("silence_p50_s")
    theirs = (none.get("barge_in") or {}).get("silence_p50_s")
    out["parity_barge_in_silence_p50_within_100ms_of_the_agents_own_track"] = {
        "value": {"avatar_s": ours, "own_track_s": theirs},
        "met": ours is not None and theirs is not None and ours - theirs <= 0.1,
    }
    loaded = parity.get("barge_in_under_load")
    if isinstance(loaded, dict):
        ours = (loaded.get("avatar") or {}).get("silence_p50_s")
        theirs = (loaded.get("none") or {}).get("silence_p50_s")
        out["parity_barge_in_under_load_silence_p50_within_100ms_of_the_agents_own_track"] = {
            "value": {"avatar_s": ours, "own_track_s": theirs, "burners": loaded.get("burners")},
            "met": ours is not None and theirs is not None and ours - theirs <= 0.1,
        }
    storm = (avatar.get("storm") or {}).get("unsettled_after_3s")
    out["parity_12_interruptions_all_settled_within_3s"] = {
        "value": storm,
        "met": storm == 0,
    }
    silent = (avatar.get("pause") or {}).get("silent_after_s")
    out["parity_pause_silences_the_avatar_within_250ms"] = {
        "value": silent,
        "limit": 0.25,
        "met": silent is not None and silent <= 0.25,
    }
    false = avatar.get("false_interruption") or {}
    heard, line = false.get("heard_s"), false.get("line_s")
    out["parity_false_interruption_resumes_the_line_heard_once"] = {
        "value": {"resumed": false.get("resumed"), "heard_s": heard, "line_s": line},
        "met": bool(false.get("resumed"))
        and heard is not None
        and line is not None
        and line - 0.5 <= heard <= line + 0.2,
    }
    return out

"""`RESULTS.md` from `results.json`: what a reader needs, every number from the run.

Nothing here is measured and no result is written by hand: each sentence that
states a number or a verdict reads it from the results (explanations are only
added when the numbers show what they explain), so the note always matches the
run it sits next to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet_report import markdown as fleet_markdown
from hosted_timing_report import markdown as hosted_timing_markdown
from parity_report import markdown as parity_markdown

Json = dict[str, Any]

# Stage keys of e2e.py, in time order, and what each one is.
FIRST_FRAME_STAGES = {
    "avatar_start_returned": "`AvatarSession.start()` returned (token, hosted session created)",
    "worker_connecting": "emulator worker began joining the room (hosted `started_at`)",
    "session_start_returned": "`AgentSession.start()` returned",
    "worker_first_frame_out": "worker's generator handed its first frame to the runner",
    "avatar_joined_room": "viewer saw the avatar participant join",
    "worker_first_frame_sent": "first frame handed to WebRTC (`VideoSource.capture_frame`)",
    "first_frame_at_hosted": "hosted `first_frame_at` (runner came back for frame 2)",
    "video_subscribed": "viewer subscribed to the avatar's video track",
    "first_frame_received": "viewer received the first avatar frame",
}
# The first-frame path as consecutive segments: (from, to, who owns the time).
FIRST_FRAME_SEGMENTS = [
    (None, "avatar_start_returned", "our plugin + the emulator API (`start()`)"),
    (
        "avatar_start_returned",
        "worker_first_frame_out",
        "the emulator worker joining the room and waiting for the agent (livekit-server "
        "signalling, `AvatarRunner.start`)",
    ),
    (
        "worker_first_frame_out",
        "worker_first_frame_sent",
        "the runner publishing its tracks (it publishes audio and waits for a subscriber "
        "before the video) and the `AVSynchronizer` queue",
    ),
    (
        "worker_first_frame_sent",
        "video_subscribed",
        "livekit-server forwarding the new track and the viewer's subscription (WebRTC "
        "negotiation)",
    ),
    (
        "video_subscribed",
        "first_frame_received",
        "the first key frame: encode, SFU, jitter buffer, decode",
    ),
]
MOUTH_STAGES = {
    "worker_audio_in": "speech reached the worker's generator",
    "worker_mouth_frame_out": "worker drew the first open-mouth frame, handed it to the runner",
    "worker_mouth_frame_sent": "that frame left the runner's `AVSynchronizer` for WebRTC",
    "viewer_mouth_open": "viewer received the first open-mouth frame",
    "viewer_voiced_audio": "(for comparison) viewer received the avatar's voiced audio",
}
MOUTH_SEGMENTS = [
    (
        None,
        "worker_audio_in",
        "our plugin's hand-off + LiveKit data stream + the worker's `DataStreamAudioReceiver`",
    ),
    (
        "worker_audio_in",
        "worker_mouth_frame_out",
        "the worker's generator (it needs one frame period of audio, then draws)",
    ),
    (
        "worker_mouth_frame_out",
        "worker_mouth_frame_sent",
        "the worker's frame pipeline: livekit-agents `AvatarRunner` pushes each frame into "
        "`rtc.AVSynchronizer` (a 100 ms video queue, paced at the frame rate), and the "
        "generator renders ahead until that queue is full",
    ),
    (
        "worker_mouth_frame_sent",
        "viewer_mouth_open",
        "WebRTC: VP8 encode, livekit-server, the viewer's jitter buffer and decode",
    ),
]


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _held(row: Json) -> str:
    """A scale-curve row's verdict; the N = 0 baseline has no viewer to hold."""
    if not row["sessions"]:
        return "baseline"
    return "yes" if row["held"] else "no"


def _ms(seconds: object) -> str:
    return "n/a" if not isinstance(seconds, (int, float)) else f"{seconds * 1000:.0f} ms"


def _met(flag: object) -> str:
    return "met" if flag else "**missed**"


def _value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in value.items())
    return _fmt(value)


def _ok(section: Json | None) -> bool:
    return bool(section) and "error" not in (section or {})


def _header(results: Json) -> list[str]:
    m = results.get("machine", {})
    durations = results.get("phase_durations_s", {})
    return [
        "# Benchmarks: livekit-plugins-protoface (ours) vs the published 1.8.9",
        "",
        f"{_this_run(results)}, {results.get('date', '?')}, took "
        f"{_fmt(results.get('duration_s'), 's')} "
        f"({', '.join(f'{k} {v} s' for k, v in durations.items())}); processes left at exit: "
        f"{results.get('processes_left', 'n/a')}.",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('logical_cores')} logical cores "
        f"({m.get('physical_cores')} physical), {m.get('ram_gb')} GiB RAM, {m.get('os')}, "
        f"Python {m.get('python')}; load average at start {m.get('load_average_at_start')}.",
        "",
        _versions(results),
        "",
        "Reproduce from the repository root, after the README's set-up: `benchmarks/run` (full, "
        "under 30 minutes on 2 cores) or `benchmarks/run --quick` (under 5). It installs the "
        "published plugin into `benchmarks/.venv-published` on first use, then writes "
        "`benchmarks/results.json` (every number, per round, and the profiles) and this file. "
        "Each client runs in its own process (`benchmarks/client.py` under each plugin's "
        "interpreter), interleaved in rounds against the same emulator; logs of every process "
        "are in `benchmarks/.work/`.",
        "",
        *_measured_when(results),
    ]


def _sections_of_this_run(results: Json) -> list[str]:
    """The sections the latest run measured (a run of a subset keeps the others)."""
    date = results.get("date")
    return [
        key
        for key, section in results.items()
        if isinstance(section, dict)
        and isinstance(section.get("measured"), dict)
        and section["measured"].get("date") == date
    ]


def _all_sections(results: Json) -> list[str]:
    return [
        key
        for key, section in results.items()
        if isinstance(section, dict) and isinstance(section.get("measured"), dict)
    ]


def _this_run(results: Json) -> str:
    """What the latest run was: every section, or the ones it re-measured."""
    mode = results.get("mode", "?")
    mine, every = _sections_of_this_run(results), _all_sections(results)
    if not every or set(mine) == set(every):
        return f"**A {mode} run of every section**"
    return (
        f"**A {mode} run of {', '.join(mine) or 'no section'} only** (the other sections are "
        "kept from earlier runs, below)"
    )


def _versions(results: Json) -> str:
    """The versions measured, with the published env's from the run that recorded them.

    A run of a subset that did not start the published client records no versions
    for its environment; the latency section's hello (kept from the run that
    measured it) does.
    """
    v = dict(results.get("versions", {}))
    latency = results.get("start_latency") or {}
    hello = (latency.get("hello") or {}).get("published") or {}
    when = (latency.get("measured") or {}).get("date")
    source = ""
    if v.get("livekit_agents_published_env") is None and hello:
        v["livekit_agents_published_env"] = hello.get("livekit_agents_version")
        v["aiohttp_published_env"] = hello.get("aiohttp_version")
        source = f" (the published env's versions as recorded by the run of {when})"

    def ver(key: str) -> str:
        return str(v[key]) if v.get(key) is not None else "not recorded"

    return (
        f"Versions: ours {ver('ours')} (workspace), published {ver('published')} (PyPI, "
        f"in `benchmarks/.venv-published`), livekit-agents {ver('livekit_agents')} "
        f"(published env: {ver('livekit_agents_published_env')}), livekit (rtc) "
        f"{ver('livekit_rtc')}, aiohttp in the published env {ver('aiohttp_published_env')} "
        f"(pinned to the workspace's), livekit-server {ver('livekit_server')}{source}."
    )


def _measured_when(results: Json) -> list[str]:
    """When each section was measured, at which commit, and the code it measures.

    A run of a subset (`--only`) keeps the others. The paths come from
    `sections.json`; `scripts/stale-numbers` lists a section whose paths changed
    in git after its commit.
    """
    measures = _section_paths()
    rows = [
        f"| {key} | {section['measured'].get('mode')} run of {section['measured'].get('date')} "
        f"| `{section['measured'].get('commit') or 'not recorded'}` "
        f"| {', '.join(f'`{p}`' for p in measures.get(key, [])) or 'not recorded'} |"
        for key, section in results.items()
        if isinstance(section, dict) and isinstance(section.get("measured"), dict)
    ]
    if not rows:
        return []
    head = [
        "Sections, and the run that measured each:",
        "",
        "| section | run | commit | code it measures |",
    ]
    return [*head, "|---|---|---|---|", *rows, ""]


def _section_paths() -> dict[str, list[str]]:
    """`sections.json`: the git pathspecs each section measures."""
    path = Path(__file__).resolve().parent / "sections.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {k: list(v) for k, v in data.items() if isinstance(v, list)}


def _targets(results: Json) -> list[str]:
    t = results.get("targets", {})
    rows = [
        ("`start_session` within 5 % of the floor (p50)", "start_within_5pct_of_floor_p50"),
        ("1,000 concurrent sessions, zero errors", "scale_1000_concurrent_zero_errors"),
        (
            "faults: one hosted session per successful start, zero orphans",
            "faults_one_session_per_ok_start_zero_orphans",
        ),
        ("first avatar frame under 1 s (p50)", "first_frame_p50_under_1s"),
        ("mouth within 150 ms of the speech (p50)", "audio_to_mouth_p50_within_150ms"),
        (
            "the agent heard within 3 s after the avatar left (every run)",
            "agent_heard_within_3s_after_the_avatar_left",
        ),
        ("a replacement avatar after every recoverable loss", "avatar_restored_after_every_loss"),
        (
            "steady state: at most one request per 10 s per session",
            "steady_state_at_most_6_requests_per_session_minute",
        ),
        (
            "a call past its cap keeps its avatar (video gap at most 1 s)",
            "call_past_the_cap_keeps_its_avatar",
        ),
        (
            "16 `standard` sessions at ≥ 18 fps with the API's p99 under 20 ms (scale curve)",
            "16_standard_sessions_at_18_fps_p99_under_20ms",
        ),
        ("64 `mock` sessions held (scale curve)", "64_mock_sessions"),
        (
            "the API's p99 with 8 sessions rendering at most twice that with none (scale curve)",
            "api_p99_with_8_sessions_within_2x_of_none",
        ),
    ]
    lines = ["## Targets (ours)", "", "| target | measured | |", "|---|---|---|"]
    labels = {key: label for label, key in rows}
    # Every target the results hold, the known ones first in their order, then any
    # other (a new section's) under its key: a missed target is never left out.
    keys = [key for _, key in rows if key in t] + [key for key in t if key not in labels]
    for key in keys:
        label = labels.get(key) or _target_label(key, t[key])
        lines.append(f"| {label} | {_value(t[key]['value'])} | {_met(t[key]['met'])} |")
    missed = [key for key in keys if not t[key]["met"]]
    lines.append("")
    if missed:
        lines += [
            f"{len(missed)} of {len(keys)} targets missed; they are explained, with their "
            "profile, under [What bounds the missed targets](#what-bounds-the-missed-targets).",
            "",
        ]
    return lines


def _target_label(key: str, target: Json) -> str:
    """A readable label for a target `report.py` has no wording for."""
    label = key.replace("_", " ")
    if "limit" in target:
        label += f" (limit {target['limit']})"
    return label


def _latency(results: Json) -> list[str]:
    s = results.get("start_latency")
    if not s:
        return []
    if "error" in s:
        return ["## `start_session` latency", "", f"Failed: {s['error']}", ""]
    stats = s["stats_ms"]
    lines = [
        "## `start_session` latency",
        "",
        f"{s['samples_per_client']} timed creates per client (after {s['warmup_per_client']} "
        f"warm-up), in {s['rounds']} interleaved rounds, each client on one warm keep-alive "
        "connection (a caller-owned aiohttp session), against one in-process emulator whose "
        "workers join nothing (the transport names an unreachable LiveKit URL; each create is "
        "followed by an untimed end). `ours` and `published` call `ProtofaceAPI.start_session` "
        "on one client for every call; `ours_fresh_client` makes a new `ProtofaceAPI` per call "
        "(as each `AvatarSession` has its own). The floor is the same POST (body, bearer, "
        "`Idempotency-Key`) sent with bare aiohttp and decoded with `json.loads`; "
        "`floor_no_key` is the same without the key, which is what the published plugin sends.",
        "",
        "| client | p50 ms | p90 ms | p99 ms | mean ms | n |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("ours", "ours_fresh_client", "published", "floor", "floor_no_key"):
        st = stats.get(name, {})
        lines.append(
            f"| {name} | {_fmt(st.get('p50'))} | {_fmt(st.get('p90'))} | {_fmt(st.get('p99'))} "
            f"| {_fmt(st.get('mean'))} | {st.get('n')} |"
        )
    lines += [
        "",
        f"Ratios at the median: ours / floor **{_fmt(s['ratio_ours_to_floor_p50'])}** (median of "
        f"per-round ratios {_fmt(s['ratio_ours_to_floor_paired_rounds_median'])}); "
        f"ours_fresh_client / floor {_fmt(s.get('ratio_ours_fresh_client_to_floor_p50'))}; "
        f"published / floor_no_key {_fmt(s['ratio_published_to_floor_no_key_p50'])}; ours / "
        f"published {_fmt(s['ratio_ours_to_published_p50'])}. Connections opened per client: "
        f"{s['connections_opened']}.",
        "",
    ]
    return lines


def _scale(results: Json) -> list[str]:
    s = results.get("scale")
    if not s:
        return []
    if "error" in s:
        return ["## 1,000 concurrent sessions", "", f"Failed: {s['error']}", ""]
    lines = [
        "## 1,000 concurrent sessions through one client",
        "",
        f"{s['sessions_per_round']} concurrent `start_session` calls through one `ProtofaceAPI` "
        "in one process, then, once every create has answered (so all are live at once on the "
        f"server), {s['sessions_per_round']} concurrent `end_session` calls; {s['rounds']} "
        "round(s) per client, interleaved. Both get the same kind of caller-owned aiohttp "
        "session, with the connector LiveKit Agents gives a job (`limit_per_host=50`). "
        "Connections: an aiohttp `TraceConfig` (`on_connection_create_end`), same method for "
        "both. RSS: sampled every 10 ms and `ru_maxrss`; growth is the sampled peak minus the "
        "RSS before the run. Server peak live: sessions live at once on the emulator, counted "
        "exactly. The emulator's workers join nothing (`benchmarks/null_worker.py`): this "
        "measures the API path, not rooms.",
        "",
        "| client | sessions | errors | sessions/s (create+end) | peak RSS MB | RSS growth MB "
        "| connections opened | server peak live |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("ours", "published"):
        c = s[name]
        lines.append(
            f"| {name} | {c['sessions']} | {c['errors']} | {_fmt(c['sessions_per_s'])} | "
            f"{_fmt(c['peak_rss_mb'])} | {_fmt(c.get('rss_growth_mb'))} | "
            f"{c['connections_opened']} | {c['server_peak_active_sessions']} |"
        )
    runs = s["ours"]["runs"]
    lines += [
        "",
        f"Throughput ratio ours / published: {_fmt(s['ratio_ours_to_published_sessions_per_s'])}"
        f". Ours per round: create phase {[r['create_phase_s'] for r in runs]} s, end phase "
        f"{[r['end_phase_s'] for r in runs]} s; published: create phase "
        f"{[r['create_phase_s'] for r in s['published']['runs']]} s, end phase "
        f"{[r['end_phase_s'] for r in s['published']['runs']]} s.",
        "",
    ]
    return lines


def _faults(results: Json) -> list[str]:
    f = results.get("faults")
    if not f:
        return []
    if "error" in f:
        return ["## Starts under faults", "", f"Failed: {f['error']}", ""]
    inj = f["injected"]
    co = f["conn_options"]
    lines = [
        "## Starts under faults",
        "",
        f"{f['starts_per_round'] * f['rounds']} starts per client ({f['rounds']} interleaved "
        f"rounds, {f['concurrency']} at a time). A start is the real `AvatarSession.start()` "
        "with a real `AgentSession` and a real room on `livekit-server --dev`, then `aclose()` "
        "(what a job's shutdown does, whether `start()` succeeded or not), inside "
        "`utils.http_context.open()` so both use the job's shared HTTP session as in a job. "
        f"Both use `APIConnectOptions(timeout={co['timeout_s']}, max_retry={co['max_retry']}, "
        f"retry_interval={co['retry_interval_s']})`. Injected on `POST /v1/sessions`: "
        f"{inj['late_probability']:.0%} answered after {inj['late_delay_s']} s (the session is "
        f"created at once), {inj['error_503_probability']:.0%} 503 with `Retry-After: "
        f"{inj['retry_after_s']:g}`, {inj['drop_probability']:.0%} connection dropped after the "
        f"session was created; seed {inj['seed']}, reseeded per round so both clients draw the "
        "same sequence. Hosted sessions are counted from the emulator's store, per start (each "
        "start has its own avatar identity, which the emulator stores as "
        "`transport.worker_identity`); an orphan is a session nobody asked to end. Requests and "
        "the waits before retries are traced client-side (aiohttp `TraceConfig`).",
        "",
        "| client | starts | ok | hosted sessions created | orphaned | ok starts with exactly "
        "one session | ok starts with duplicates | max sessions for one start | failed starts "
        "that created a session | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("ours", "published"):
        c = f[name]
        lines.append(
            f"| {name} | {c['starts_attempted']} | {c['starts_ok']} | "
            f"{c['hosted_sessions_created']} | {c['orphaned']} | "
            f"{c['ok_starts_with_one_session']} | {c['ok_starts_with_duplicates']} | "
            f"{c['max_sessions_for_one_start']} | {c['failed_starts_that_created_sessions']} | "
            f"{_fmt(c['wall_s'])} |"
        )
    lines.append("")
    for name in ("ours", "published"):
        c = f[name]
        waits = c.get("wait_before_retry_s", {})
        wait_text = "; ".join(
            f"after {kind}: p50 {_ms(w.get('p50'))} (n={w.get('n')})"
            for kind, w in waits.items()
            if w.get("n")
        )
        lines.append(
            f"- {name}: {c['create_requests_sent']} create requests sent "
            f"({c['create_requests_seen']} reached the emulator), at most "
            f"{c['max_create_requests_for_one_start']} for one start; faults fired "
            f"{c['faults_fired']}; start errors {c['errors_by_type'] or 'none'}; median start "
            f"{_ms(c['start_s_p50'])}; wait before retrying a create: {wait_text or 'n/a'}."
        )
    lines.append("")
    for lost in f.get("rounds_lost", []):
        lines.append(
            f"- Round {lost['round']} of {lost['client']} is not counted: its client process "
            f"died ({lost['error']})."
        )
    if f.get("rounds_lost"):
        lines.append("")
    lines += _faults_story(f)
    return lines


def _faults_story(f: Json) -> list[str]:
    ours, pub = f["ours"], f["published"]
    retry_after = float(f["injected"]["retry_after_s"])
    lines = ["What each does, read from the counts above:", ""]
    text = (
        f"- ours: {ours['starts_ok']} of {ours['starts_attempted']} starts succeeded; "
        f"{ours['ok_starts_with_one_session']} of them have exactly one hosted session "
        f"({ours['ok_starts_with_duplicates']} have more); {ours['orphaned']} sessions were left "
        "running."
    )
    if ours["ok_starts_with_duplicates"] == 0:
        text += (
            " Its retries reuse the create's `Idempotency-Key`, so a retry after a late answer "
            "or a dropped connection gets the session the first attempt created."
        )
    if ours["failed_starts_that_created_sessions"]:
        text += (
            f" {ours['failed_starts_that_created_sessions']} failed starts had created a "
            f"session; {ours['failed_starts_sessions_ended']} of those sessions were ended "
            "(the plugin replays the create with the same key to learn the id, then ends it)."
        )
    wait_503 = (ours.get("wait_before_retry_s", {}).get("503") or {}).get("p50")
    if isinstance(wait_503, (int, float)) and wait_503 >= 0.9 * retry_after:
        text += f" After a 503 it waited {_ms(wait_503)} (p50): it honours `Retry-After`."
    lines.append(text)
    text = (
        f"- published: {pub['starts_ok']} of {pub['starts_attempted']} starts succeeded and "
        f"created {pub['hosted_sessions_created']} hosted sessions, {pub['orphaned']} of which "
        f"were never ended; {pub['ok_starts_with_duplicates']} successful starts left "
        f"duplicates behind (up to {pub['max_sessions_for_one_start']} sessions for one start)."
    )
    if pub["ok_starts_with_duplicates"]:
        text += (
            " It sends no idempotency key, so each retry after the server acted (a late answer, "
            "a dropped connection) creates another billed session, and only the last one is "
            "ended."
        )
    if pub["failed_starts_that_created_sessions"] > pub["failed_starts_sessions_ended"]:
        text += " A failed start ends nothing it may have created."
    pub_503 = (pub.get("wait_before_retry_s", {}).get("503") or {}).get("p50")
    if isinstance(pub_503, (int, float)) and pub_503 < 0.9 * retry_after:
        text += (
            f" After a 503 with `Retry-After: {retry_after:g}` it retried after {_ms(pub_503)} "
            "(p50): it ignores `Retry-After`."
        )
    lines += [text, ""]
    return lines


def _e2e(results: Json) -> list[str]:
    e = results.get("e2e")
    if not e:
        return []
    if "error" in e:
        return ["## End to end", "", f"Failed: {e['error']}", ""]
    cpu = e.get("cpu") or {}
    lines = [
        "## End to end (ours, real livekit-server, real emulator worker)",
        "",
        f"{e['runs']} runs (of {e['runs_planned']} planned), one after another, each in a fresh "
        "room, with the `protoface-emulator` command (real LiveKit worker) as its own process: "
        "a viewer (`AvatarViewer`) joins, an agent participant joins, then `t0`, "
        "`AvatarSession.start()`, `AgentSession.start()`. **First frame** = arrival of the "
        "viewer's first avatar video frame minus `t0`. After 1 s of idle face the agent says "
        "1.5 s of synthetic voiced audio (loud from its first sample) with "
        "`session.say(audio=...)`. **Audio to mouth** = from the moment the first voiced audio "
        "frame is handed to the avatar's audio output (`DataStreamAudioOutput.capture_frame`, "
        "where our plugin hands speech to the data stream; the framework takes "
        f"{_fmt(e['mouth_stages_p50_ms'].get('say_to_capture'))} ms (p50) from the `say` "
        "iterator to there) to the arrival of the first viewer frame whose mouth is open "
        "(`VideoSample.mouth_open`). All times are `time.monotonic()`, one clock for every "
        "process on Linux; the worker's stage times come from `benchmarks/probe_worker.py` (the "
        "real worker plus a timestamping generator), the hosted ones from the session resource.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| first frame p50 | {_fmt(e['first_frame_p50_ms'], 'ms')} |",
        f"| first frame p90 | {_fmt(e['first_frame_p90_ms'], 'ms')} |",
        f"| audio to mouth p50 | {_fmt(e['audio_to_mouth_p50_ms'], 'ms')} |",
        f"| audio to mouth p90 | {_fmt(e['audio_to_mouth_p90_ms'], 'ms')} |",
        f"| emulator CPU per session (speaking) | "
        f"{_fmt(e['emulator_cpu_per_session_pct'], '% of one core')} |",
        f"| emulator CPU per session (idle face) | "
        f"{_fmt(cpu.get('emulator_cpu_idle_per_session_pct'), '% of one core')} |",
        "",
        f"CPU: {cpu.get('sessions')} sessions at once, each saying 2 s then pausing 1 s, each "
        "watched by a viewer; CPU time of the emulator process (user + system, all threads, "
        f"LiveKit's native encoder included) over {cpu.get('window_s')} s: "
        f"{_fmt(cpu.get('emulator_cpu_total_pct'))} % of one core in total, divided by the "
        f"sessions. Meanwhile livekit-server used {_fmt(cpu.get('livekit_server_cpu_pct'))} % "
        "and the process running the agents and viewers "
        f"{_fmt(cpu.get('agents_and_viewers_cpu_pct'))} %; viewers received "
        f"{_fmt(cpu.get('viewer_fps_per_session'))} frames/s per session. Hosted sessions "
        f"still live after the runs: {e.get('hosted_sessions_left_running')}.",
        "",
        "Stage profile, medians over the runs, ms after `t0` (first frame):",
        "",
        "| stage | ms |",
        "|---|---|",
    ]
    for key, label in FIRST_FRAME_STAGES.items():
        lines.append(f"| {label} | {_fmt(e['first_frame_stages_p50_ms'].get(key))} |")
    lines += [
        "",
        "Stage profile, medians over the runs, ms after the first voiced frame reached the "
        "avatar's audio output (audio to mouth):",
        "",
        "| stage | ms |",
        "|---|---|",
    ]
    for key, label in MOUTH_STAGES.items():
        lines.append(f"| {label} | {_fmt(e['mouth_stages_p50_ms'].get(key))} |")
    lines.append("")
    if e.get("errors"):
        lines += [f"Errors: {e['errors']}", ""]
    return lines


def _segments(
    stages: dict[str, float | None], segments: list[tuple[str | None, str, str]]
) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    for start, end, owner in segments:
        t_end = stages.get(end)
        t_start = 0.0 if start is None else stages.get(start)
        if t_end is None or t_start is None:
            continue
        out.append((round(t_end - t_start, 1), owner))
    return out


def _segment_lines(segments: list[tuple[float, str]], total: float | None) -> list[str]:
    lines = ["| segment (median stage times) | ms |", "|---|---|"]
    lines += [f"| {owner} | {ms:.1f} |" for ms, owner in segments]
    if total is not None:
        lines.append(f"| total (p50 of the end-to-end measure) | {total:.1f} |")
    return [*lines, ""]


def _profile_block(title: str, profile: str | None, keep: int = 14) -> list[str]:
    if not profile:
        return []
    rows = [line for line in profile.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(rows) if line.strip().startswith("ncalls")), 0)
    return [title, "", "```", *rows[start : start + keep + 1], "```", ""]


def _secrets_held(held: object) -> str:
    """The secrets a long-lived client held at the end, when the run recorded them.

    Newer plugins redact each request's worker token with that request and hold
    none, so the run records nothing: say nothing rather than "None".
    """
    if not isinstance(held, int):
        return ""
    return f"; by the end the long-lived client held {held} secrets to redact"


def _scale_curve_bounds(results: Json) -> list[str]:
    """What the scale curve's missed targets measured, read from its rows."""
    t = results.get("targets", {})
    curve = results.get("scale_curve")
    keys = (
        "16_standard_sessions_at_18_fps_p99_under_20ms",
        "64_mock_sessions",
        "api_p99_with_8_sessions_within_2x_of_none",
    )
    if not _ok(curve) or all(t.get(k, {}).get("met", True) for k in keys):
        return []
    assert curve is not None
    cores = curve.get("cores") or 1
    lines = ["### The scale curve", ""]
    for r in curve["rows"]:
        if "error" in r or not r["sessions"] or r["held"]:
            continue
        lines.append(
            f"- {r['sessions']} `{r['quality']}`: viewers at {_fmt(r['viewer_fps_min'])} fps "
            f"at worst ({_fmt(r['viewer_fps_median'])} median), {r['failed_sessions']} lost; "
            f"the emulator used {_fmt(r['emulator_cpu_percent'])} % of a core, livekit-server "
            f"{_fmt(r.get('livekit_cpu_percent'))} %, the load generator "
            f"{_fmt(r.get('load_generator_cpu_percent'))} %: the whole machine "
            f"{_fmt(r.get('machine_cpu_percent'))} of {100 * cores}."
        )
    api = t.get("api_p99_with_8_sessions_within_2x_of_none")
    if api and not api["met"]:
        none_ms, eight_ms = api["value"].get("none_ms"), api["value"].get("eight_ms")
        if isinstance(none_ms, (int, float)) and isinstance(eight_ms, (int, float)) and none_ms:
            lines.append(
                f"- The API's p99 was {_fmt(eight_ms)} ms with 8 sessions rendering against "
                f"{_fmt(none_ms)} ms with none ({eight_ms / none_ms:.1f} times; the target was at "
                "most twice)."
            )
    return [*lines, ""]


def _bounds(results: Json) -> list[str]:
    t = results.get("targets", {})
    lines: list[str] = []
    s = results.get("start_latency")
    if _ok(s) and not t.get("start_within_5pct_of_floor_p50", {}).get("met", True):
        assert s is not None
        ours_rounds = s["round_medians_ms"]["ours"]
        floor_rounds = s["round_medians_ms"]["floor"]
        lines += [
            "### `start_session` vs the floor",
            "",
            f"Ours takes {_fmt(s['ours_p50_ms'])} ms at the median where the same POST takes "
            f"{_fmt(s['floor_p50_ms'])} ms with bare aiohttp, against the same emulator on the "
            f"same warm connection: {s['ours_p50_ms'] - s['floor_p50_ms']:.3f} ms of client-side "
            "work per create. With a new client per create it is "
            f"{_fmt(s.get('ours_fresh_client_p50_ms'))} ms (ratio "
            f"{_fmt(s.get('ratio_ours_fresh_client_to_floor_p50'))}). Over the run ours' "
            f"per-round median went from {ours_rounds[0]} to {ours_rounds[-1]} ms while the "
            f"floor's went from {floor_rounds[0]} to {floor_rounds[-1]} ms"
            + _secrets_held(s.get("ours_secrets_held_at_end"))
            + ".",
            "",
        ]
        profile = (s.get("profiles") or {}).get("ours", "")
        if "_redact_text" in profile and "sorted" in profile:
            lines += [
                "The profile below points at the plugin's secret redaction: "
                "`ProtofaceAPI._redact` walks every decoded answer and, for every string in "
                "it, `_redact_text` sorts the whole set of secrets the client has ever seen; "
                "`_checked_transport` adds each `worker_token` to that set and nothing removes "
                "it. So each create costs more than the one before on a long-lived client (a "
                "script, a server creating sessions for many rooms); a fresh client pays the "
                "walk without the growth.",
                "",
            ]
        lines += _profile_block(
            "cProfile of ours, one long-lived client, top functions by own time:",
            profile,
        )
        lines += _profile_block(
            "cProfile of ours with a new client per create:",
            (s.get("profiles") or {}).get("ours_fresh_client"),
        )
    sc = results.get("scale")
    if _ok(sc):
        assert sc is not None
        ratio = sc.get("ratio_ours_to_published_sessions_per_s")
        if isinstance(ratio, (int, float)) and ratio < 0.9:
            lines += [
                "### Throughput at 1,000 sessions (target met, but slower than published)",
                "",
                f"Ours completes {_fmt(sc['ours']['sessions_per_s'])} create+end per second "
                f"where the published plugin completes {_fmt(sc['published']['sessions_per_s'])}"
                f" against the same emulator. The profiled extra round of ours (not counted "
                f"above) took {_fmt(sc.get('ours_profile_wall_s'), 's')}:",
                "",
            ]
            lines += _profile_block("", sc.get("ours_profile"))[2:]
    f = results.get("faults")
    if _ok(f) and not t.get("faults_one_session_per_ok_start_zero_orphans", {}).get("met", True):
        assert f is not None
        ours = f["ours"]
        orphans: list[Json] = ours.get("orphans", [])
        kinds: dict[str, int] = {}
        for orphan in orphans:
            key = (
                f"{'successful' if orphan['start_ok'] else 'failed'} start, last create request "
                f"answered `{orphan['last_create_request']}`"
            )
            kinds[key] = kinds.get(key, 0) + int(orphan["orphaned_sessions"])
        lines += [
            "### Under faults",
            "",
            f"Ours left {ours['orphaned']} hosted session(s) running and "
            f"{ours['ok_starts_with_duplicates']} successful start(s) with duplicates. Where the "
            "orphans come from (per start, from the emulator's store and the client's request "
            "trace): " + ("; ".join(f"{n} from a {k}" for k, n in kinds.items()) or "n/a") + ".",
            "",
        ]
        retryable = ("503", "Error", "Timeout")
        if orphans and all(
            not o["start_ok"] and any(x in o["last_create_request"] for x in retryable)
            for o in orphans
        ):
            lines += [
                "Each is a start whose every attempt failed (late answers, 503s, dropped "
                "connections), at least one after the server had created the session. `start()` "
                "then replays the "
                "create with the same key to learn the session id and end it "
                "(`AvatarSession._recover_session_id`), but with a single attempt "
                "(`attempts=1`): when that replay itself meets a 503 or a dropped connection, "
                "the plugin logs that it could not learn the session and gives up, and nothing "
                "ends the session. Retrying the replay like any other create (it is idempotent) "
                "would close the gap.",
                "",
            ]
    e = results.get("e2e")
    if _ok(e):
        assert e is not None
        if not t.get("audio_to_mouth_p50_within_150ms", {}).get("met", True):
            segments = _segments(e["mouth_stages_p50_ms"], MOUTH_SEGMENTS)
            lines += ["### Audio to mouth", ""]
            lines += _segment_lines(segments, e.get("audio_to_mouth_p50_ms"))
            if segments:
                worst = max(segments)
                text = f"The largest part, {worst[0]:.0f} ms, is {worst[1]}."
                fps = (e.get("cpu") or {}).get("viewer_fps_per_session")
                if "AVSynchronizer" in worst[1]:
                    periods = (
                        f" ({worst[0] * fps / 1000:.1f} frame periods at the {fps:.0f} fps the "
                        "viewers received)"
                        if isinstance(fps, (int, float)) and fps > 0
                        else ""
                    )
                    text += (
                        " The queue holds 100 ms of frames; one more frame waits in the "
                        "synchronizer's pacing and the next is blocked in `push`, so a frame "
                        f"drawn when the speech arrives leaves that much later{periods}. "
                        "Shortening that look-ahead is the emulator worker's business (pace the "
                        "generator, or a smaller runner queue), not the plugin's."
                    )
                lines.append(text)
                audio = e["mouth_stages_p50_ms"].get("viewer_voiced_audio")
                mouth = e["mouth_stages_p50_ms"].get("viewer_mouth_open")
                if isinstance(audio, (int, float)) and isinstance(mouth, (int, float)):
                    text = (
                        f"The avatar's voiced audio reached the viewer at {audio:.0f} ms, the "
                        f"open mouth at {mouth:.0f} ms: audio leads video by "
                        f"{mouth - audio:.0f} ms."
                    )
                    if mouth - audio > 30:
                        text += (
                            " Each frame's audio goes to the runner's `AudioSource` at once "
                            "while the frame waits in the video queue, so the lips trail the "
                            "voice by about that queue."
                        )
                    lines.append(text)
                lines.append("")
        if not t.get("first_frame_p50_under_1s", {}).get("met", True):
            segments = _segments(e["first_frame_stages_p50_ms"], FIRST_FRAME_SEGMENTS)
            lines += ["### First frame", ""]
            lines += _segment_lines(segments, e.get("first_frame_p50_ms"))
            if segments:
                worst = max(segments)
                lines += [f"The largest part, {worst[0]:.0f} ms, is {worst[1]}.", ""]
    lines += _scale_curve_bounds(results)
    if not lines:
        return []
    return ["## What bounds the missed targets", "", *lines]


def _findings(results: Json) -> list[str]:
    notes = results.get("notes") or []
    if not notes:
        return []
    return ["## Notes on this run", "", *[f"- {note}" for note in notes], ""]


def _lifetime(results: Json) -> list[str]:
    life = results.get("lifetime")
    if not life:
        return []
    if "error" in life:
        return ["## The avatar's lifetime", "", f"Failed: {life['error']}", ""]
    leave, steady, cap = life["leave"], life["steady"], life["cap"]
    plugins = list(leave)
    lines = [
        "## The avatar's lifetime",
        "",
        "Real rooms: livekit-server, the emulator with real workers, one conversation per "
        "process (`lifetime_client.py`), both plugins in the same run. The viewer hears "
        "and sees what a person in the room would.",
        "",
        "| | " + " | ".join(plugins) + " |",
        "|---|" + "---|" * len(plugins),
    ]

    def row(label: str, values: list[object]) -> None:
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")

    row("avatar removed: runs", [leave[p]["runs"] for p in plugins])
    row("agent heard again within 20 s (runs)", [leave[p]["heard_again_in_20s"] for p in plugins])
    row(
        "agent heard again, p50 / max (s)",
        [
            f"{_fmt(leave[p]['heard_again_p50_s'])} / {_fmt(leave[p]['heard_again_max_s'])}"
            for p in plugins
        ],
    )
    row("avatar restored (runs)", [leave[p]["restored_runs"] for p in plugins])
    row("loss to `avatar_restored`, p50 (s)", [leave[p]["restored_p50_s"] for p in plugins])
    row(
        "loss to the replacement's first frame, p50 (s)",
        [leave[p]["replacement_first_frame_p50_s"] for p in plugins],
    )
    row(
        "steady state: API requests per session-minute",
        [steady[p]["requests_per_session_minute"] for p in plugins],
    )
    row(
        "call past the cap: duration / cap (s)",
        [f"{_fmt(cap[p]['duration_s'])} / {cap[p]['cap_s']}" for p in plugins],
    )
    row(
        "hosted sessions (ceil(duration / cap))",
        [f"{cap[p]['hosted_sessions']} ({cap[p]['ceil_duration_over_cap']})" for p in plugins],
    )
    row("largest gap in the avatar's video (s)", [cap[p]["max_video_gap_s"] for p in plugins])
    row("avatar video until the end of the call", [cap[p]["video_until_end"] for p in plugins])
    row(
        "speech spoken / heard from avatars / from the agent's track (s)",
        [
            f"{cap[p]['spoken_s']} / {cap[p]['heard_from_avatars_s']} / "
            f"{cap[p]['heard_from_agent_track_s']}"
            for p in plugins
        ],
    )
    lines += [
        "",
        "Each successor starts a quarter of the cap (at most 10 s) before it, so a call "
        "of D seconds takes about ceil(D / (cap - lead)) sessions: one more than "
        "ceil(D / cap) when the overlap adds up past a cap. The overlap is what makes the "
        "handover seamless (the successor publishes video before the switch).",
        "",
    ]
    return lines


def _scale_curve(results: Json) -> list[str]:
    curve = results.get("scale_curve")
    if not curve:
        return []
    if "error" in curve:
        return ["## The scale curve", "", f"Failed: {curve['error']}", ""]
    lines = [
        "## The scale curve",
        "",
        "N concurrent watched sessions against the `protoface-emulator` command (its "
        "default pool of worker processes), a fresh emulator per row; the load generator "
        "(N agents speaking 2 s out of every 3, N viewers decoding the video) in its own "
        f"process, on the same {curve.get('cores')} cores. Over a {curve['window_s']:g} s "
        "window: each viewer's frame rate, the CPU of the emulator and all its worker "
        "processes (one core = 100; the API's own process, without its workers, apart), "
        "`GET /v1/status` every 50 ms from a process of its own. *Held*: every viewer "
        "at ≥ 90 % of the tier's rate (18 fps for `standard`) and no session lost (*lost*: "
        "failed, not created, or no longer running when the window closed). "
        "Beside it, in the same window, what else used the cores: livekit-server, the load "
        f"generator, and the whole machine (of {100 * (curve.get('cores') or 1)}).",
        "",
        "| quality | N | viewer fps min / median | emulator CPU total / per session / API process "
        "| livekit-server / load generator / machine CPU "
        "| API p50 / p99 (ms) | lost | held |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in curve["rows"]:
        if "error" in r:
            lines.append(f"| {r['quality']} | {r['sessions']} | failed: {r['error']} | | | | | |")
            continue
        others = (
            f"{_fmt(r.get('livekit_cpu_percent'))} / {_fmt(r.get('load_generator_cpu_percent'))} "
            f"/ {_fmt(r.get('machine_cpu_percent'))}"
        )
        lines.append(
            f"| {r['quality']} | {r['sessions']} "
            f"| {_fmt(r['viewer_fps_min'])} / {_fmt(r['viewer_fps_median'])} "
            f"| {_fmt(r['emulator_cpu_percent'])} / {_fmt(r['emulator_cpu_percent_per_session'])} "
            f"/ {_fmt(r.get('api_process_cpu_percent'))} "
            f"| {others} "
            f"| {_fmt(r['status_p50_ms'])} / {_fmt(r['status_p99_ms'])} "
            f"| {r['failed_sessions']} | {_held(r)} |"
        )
    held = ", ".join(f"`{q}` {n}" for q, n in curve["largest_held"].items())
    lines += ["", f"Largest N held: {held}.", ""]
    return lines


def write_markdown(results: Json, path: Path) -> None:
    """Write RESULTS.md for `results`."""
    lines = (
        _header(results)
        + _targets(results)
        + _latency(results)
        + _scale(results)
        + _faults(results)
        + _e2e(results)
        + _lifetime(results)
        + _scale_curve(results)
        + parity_markdown(results)
        + fleet_markdown(results)
        + hosted_timing_markdown(results)
        + _bounds(results)
        + _findings(results)
    )
    path.write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    """Regenerate `RESULTS.md` from `results.json` (both beside this file by default)."""
    import argparse
    import json

    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=here / "results.json")
    parser.add_argument("markdown", nargs="?", type=Path, default=here / "RESULTS.md")
    args = parser.parse_args(argv)
    write_markdown(json.loads(args.results.read_text()), args.markdown)
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

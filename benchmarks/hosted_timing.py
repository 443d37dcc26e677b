"""The hosted-timing section of `benchmarks/run` (`--only hosted_timing`): a hosted service's pace.

The emulator is made as slow as a hosted Protoface (`Timing(cold_start=...)`)
and the same agent is measured with its avatar and without one (its own audio
track in the room, as in `parity.py`), each heard by viewers in a real room
(`livekit-server --dev`):

- `first_word`: an agent says a 3 s greeting right after `session.start()`,
  with cold starts of 0, 2 and 5 s. From the `say()` call: the first speech a
  viewer hears (from the avatar or the agent's own track, whichever comes
  first), the avatar's first video frame at the viewer (time to face), the
  greeting's playout, and the seconds of it heard in all (once, not twice).
  The avatar at the plugin's default (`wait_for_avatar=1.0`) and always
  waiting (`wait_for_avatar=None`, the published behaviour), beside the agent
  without an avatar; the cells interleaved in rounds.
- `long_line`: `idle_timeout_seconds=5` and a 12 s line handed over at once:
  heard from the avatar that began it or not, the seconds heard from it, the
  losses, the hosted sessions created.
- `agent_cpu`: the agent process's CPU (user + system) per minute of a
  conversation in which it speaks half the time, with and without the avatar.
  The agent runs in a process of its own (`hosted_timing_agent.py`), apart
  from the emulator (in this process) and livekit-server, so only it is counted.

Runnable alone: `uv run python benchmarks/hosted_timing.py [--quick]` prints the
section as JSON (it starts its own livekit-server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.hosting.timing import Timing
from protoface_emulator.server import Emulator
from protoface_emulator.testing import AvatarViewer, LiveKitServer, agent_in, viewer_in
from protoface_emulator.testing.audio import tone

Json = dict[str, Any]
HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
AGENT_SCRIPT = HERE / "hosted_timing_agent.py"

HEARD = 0.05  # a frame louder than this is speech (the kit's and parity's rule)
COLD_STARTS = (0.0, 2.0, 5.0)
GREETING_S = 3.0
# The avatar variants: wait_for_avatar as the plugin takes it.
WAITS: dict[str, float | None] = {"avatar": 1.0, "avatar_always_wait": None}
VARIANTS = ("none", *WAITS)
IDLE_TIMEOUT_S = 5
LONG_LINE_S = 12.0
SPEAK_S, QUIET_S = 3.0, 3.0  # the CPU conversation: speaking half of the time
PLANS: dict[str, Json] = {
    "full": {"runs": 3, "long_line_runs": 2, "cpu_window_s": 36.0},
    "quick": {"runs": 1, "long_line_runs": 1, "cpu_window_s": 18.0},
}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.array(values), q)), 3)


def _first_loud(viewer: AvatarViewer, since: float) -> float | None:
    return next(
        (s.received_at for s in viewer.audio if s.level > HEARD and s.received_at >= since), None
    )


def _heard(viewer: AvatarViewer, since: float, identity: str | None = None) -> float:
    return viewer.audio_seconds(min_level=HEARD, since=since, identity=identity)


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _starter(
    livekit: LiveKitServer, emu: Emulator | None, options: Json | None
) -> Callable[[AgentSession[Any], rtc.Room], Any]:
    """The user's start: the avatar's `start()` (unless `emu` is None), then `session.start()`."""

    async def start(session: AgentSession[Any], room: rtc.Room) -> Any:
        avatar = None
        if emu is not None:
            avatar = protoface.AvatarSession(
                api_url=emu.url, api_key=emu.api_key, **(options or {})
            )
            await avatar.start(
                session,
                room,
                livekit_url=livekit.url,
                livekit_api_key=livekit.api_key,
                livekit_api_secret=livekit.api_secret,
            )
        await session.start(
            agent=Agent(instructions="You speak pre-rendered lines."),
            room=room,
            room_options=RoomOptions(audio_input=False, text_input=False),
        )
        return avatar

    return start


# -- time to first word, time to face ------------------------------------------------


async def _greeting(livekit: LiveKitServer, emu: Emulator, variant: str) -> Json:
    """One conversation: the greeting said right after `session.start()`, timed from `say()`."""
    room = f"hosted-{variant}-{uuid.uuid4().hex[:6]}"
    identity = f"agent-{uuid.uuid4().hex[:6]}"
    options = {"wait_for_avatar": WAITS[variant]} if variant in WAITS else None
    start = _starter(livekit, emu if variant in WAITS else None, options)
    async with (
        viewer_in(livekit, room) as faces,
        viewer_in(livekit, room, identity) as own,
        agent_in(livekit, room, start, identity=identity) as agent,
    ):
        t0 = time.monotonic()
        handle = agent.say(tone(GREETING_S))
        await asyncio.wait_for(handle.wait_for_playout(), 60)
        playout = time.monotonic() - t0
        face = None
        if agent.avatar is not None:
            with contextlib.suppress(AssertionError):
                face = await faces.wait_first_video(timeout=30) - t0
        # What is still in flight arrives; anything heard twice would show here too.
        await _until(lambda: _heard(faces, t0) + _heard(own, t0) >= GREETING_S - 0.1, 5)
        await asyncio.sleep(0.5)
        firsts = {"avatar": _first_loud(faces, t0), "own_track": _first_loud(own, t0)}
        heard_at = {k: v for k, v in firsts.items() if v is not None}
        source = min(heard_at, key=lambda k: heard_at[k]) if heard_at else None
        return {
            "first_word_s": round(heard_at[source] - t0, 3) if source else None,
            "first_word_from": source,
            "face_s": None if face is None else round(face, 3),
            "playout_s": round(playout, 3),
            "heard_s": round(_heard(faces, t0) + _heard(own, t0), 2),
            "heard_from_avatar_s": round(_heard(faces, t0), 2),
            "sessions": len(agent.avatar.session_ids) if agent.avatar is not None else 0,
        }


def _cell(samples: list[Json], errors: list[str]) -> Json:
    first = [s["first_word_s"] for s in samples if s["first_word_s"] is not None]
    face = [s["face_s"] for s in samples if s["face_s"] is not None]
    heard = [s["heard_s"] for s in samples]
    return {
        "runs": len(samples),
        "first_word_p50_s": _pct(first, 50),
        "first_word_max_s": max(first) if first else None,
        "face_p50_s": _pct(face, 50),
        "face_max_s": max(face) if face else None,
        "playout_p50_s": _pct([s["playout_s"] for s in samples], 50),
        "heard_max_s": max(heard) if heard else None,
        "first_word_from": sorted({str(s["first_word_from"]) for s in samples}),
        "samples": samples,
        "errors": errors,
    }


async def measure_first_word(livekit: LiveKitServer, runs: int) -> Json:
    """Every cold start and variant, `runs` times, interleaved round by round."""
    cells: dict[str, dict[str, list[Json]]] = {}
    errors: dict[str, dict[str, list[str]]] = {}
    plan = [("any", "none")] + [(f"{c:g}", v) for c in COLD_STARTS for v in WAITS]
    async with AsyncExitStack() as stack:
        emulators = {
            f"{c:g}": await stack.enter_async_context(Emulator(timing=Timing(cold_start=c)))
            for c in COLD_STARTS
        }
        # Not counted: the first conversation of a process pays for imports and caches
        # (the emulator's worker, the face renderer) that no later one does.
        for variant in ("none", "avatar_always_wait"):
            with contextlib.suppress(Exception):
                await _greeting(livekit, emulators["0"], variant)
        for _ in range(runs):
            for cold, variant in plan:
                emu = emulators[cold if cold != "any" else "0"]
                try:
                    sample = await _greeting(livekit, emu, variant)
                    cells.setdefault(cold, {}).setdefault(variant, []).append(sample)
                except Exception as exc:  # recorded, not fatal: the other cells still count
                    errors.setdefault(cold, {}).setdefault(variant, []).append(
                        f"{type(exc).__name__}: {exc}"
                    )
                await asyncio.sleep(0.5)
    out: Json = {}
    for cold, variant in plan:
        samples = cells.get(cold, {}).get(variant, [])
        out.setdefault(cold, {})[variant] = _cell(samples, errors.get(cold, {}).get(variant, []))
    return {"greeting_s": GREETING_S, "cold_starts_s": list(COLD_STARTS), "cells": out}


# -- a line twice the idle timeout ---------------------------------------------------


async def _long_line(livekit: LiveKitServer, emu: Emulator) -> Json:
    room = f"hosted-long-{uuid.uuid4().hex[:6]}"
    identity = f"agent-{uuid.uuid4().hex[:6]}"
    lost: list[str] = []
    start = _starter(livekit, emu, {"idle_timeout_seconds": IDLE_TIMEOUT_S})
    async with (
        viewer_in(livekit, room) as faces,
        viewer_in(livekit, room, identity) as own,
        agent_in(livekit, room, start, identity=identity) as agent,
    ):
        avatar = agent.avatar
        avatar.on("avatar_lost", lambda ev: lost.append(str(ev.reason)))
        await avatar.wait_for_join(timeout=60)
        await faces.wait_first_video(timeout=30)
        began_with = avatar.avatar_identity
        t0 = time.monotonic()
        handle = agent.say(tone(LONG_LINE_S))  # all of it at once, faster than real time
        await asyncio.wait_for(handle.wait_for_playout(), 90)
        playout = time.monotonic() - t0
        await _until(lambda: _heard(faces, t0) + _heard(own, t0) >= LONG_LINE_S - 0.1, 10)
        await asyncio.sleep(0.5)
        from_first = _heard(faces, t0, began_with)
        return {
            "line_s": LONG_LINE_S,
            "heard_from_same_avatar_s": round(from_first, 2),
            "heard_from_other_avatars_s": round(_heard(faces, t0) - from_first, 2),
            "heard_from_own_track_s": round(_heard(own, t0), 2),
            "losses": lost,
            "sessions_created": len(avatar.session_ids),
            "playout_s": round(playout, 3),
            "interrupted": handle.interrupted,
            "same_avatar": from_first >= LONG_LINE_S - 0.2
            and not lost
            and len(avatar.session_ids) == 1,
        }


async def measure_long_line(livekit: LiveKitServer, runs: int) -> Json:
    """The long line `runs` times, each in a fresh room."""
    samples: list[Json] = []
    errors: list[str] = []
    async with Emulator() as emu:
        for _ in range(runs):
            try:
                samples.append(await _long_line(livekit, emu))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    heard = [s["heard_from_same_avatar_s"] for s in samples]
    return {
        "idle_timeout_s": IDLE_TIMEOUT_S,
        "line_s": LONG_LINE_S,
        "runs": len(samples),
        "same_avatar_runs": sum(1 for s in samples if s["same_avatar"]),
        "heard_from_same_avatar_min_s": min(heard) if heard else None,
        "losses": sum(len(s["losses"]) for s in samples),
        "sessions_created": [s["sessions_created"] for s in samples],
        "samples": samples,
        "errors": errors,
    }


# -- the agent process's CPU -----------------------------------------------------------


async def _agent_process(job: Json, env: dict[str, str], timeout: float) -> Json:
    """Run `hosted_timing_agent.py` with `job`; its last stdout line is the result."""
    WORK.mkdir(parents=True, exist_ok=True)
    log_path = WORK / f"hosted-timing-agent-{job['mode']}.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(AGENT_SCRIPT),
            json.dumps(job),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=HERE.parent,
        )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"the agent took longer than {timeout:.0f} s; see {log_path}") from None
    lines = out.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the agent failed (exit {process.returncode}); see {log_path}")
    result: Json = json.loads(lines[-1])
    return result


async def _agent_cpu(livekit: LiveKitServer, emu: Emulator, mode: str, window_s: float) -> Json:
    room = f"hosted-cpu-{mode}-{uuid.uuid4().hex[:6]}"
    identity = f"agent-{uuid.uuid4().hex[:6]}"
    job = {
        "mode": mode,
        "room": room,
        "identity": identity,
        "window_s": window_s,
        "speak_s": SPEAK_S,
        "quiet_s": QUIET_S,
    }
    # Credentials through the environment, as a deployed agent gets them (not argv).
    env = {
        **os.environ,
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "PROTOFACE_API_URL": emu.url,
        "PROTOFACE_API_KEY": emu.api_key,
    }
    # A viewer of what speaks for the agent, so its media is really sent and received.
    async with viewer_in(livekit, room, None if mode == "avatar" else identity) as viewer:
        result = await _agent_process(job, env, timeout=window_s + 150)
        start, end = result.pop("window_monotonic")
        result["heard_in_window_s"] = round(
            viewer.audio_seconds(min_level=HEARD, since=start)
            - viewer.audio_seconds(min_level=HEARD, since=end + 1.0),
            2,
        )
    return result


async def measure_agent_cpu(livekit: LiveKitServer, window_s: float) -> Json:
    """The agent process's CPU per conversation minute, without then with the avatar."""
    out: Json = {"speak_s": SPEAK_S, "quiet_s": QUIET_S, "window_s": window_s}
    async with Emulator() as emu:
        for mode in ("none", "avatar"):
            try:
                out[mode] = await _agent_cpu(livekit, emu, mode, window_s)
            except Exception as exc:
                out[mode] = {"error": f"{type(exc).__name__}: {exc}"}
    none, avatar = out["none"], out["avatar"]
    if "error" not in none and "error" not in avatar and none["cpu_per_minute_s"]:
        out["avatar_to_none_ratio"] = round(
            avatar["cpu_per_minute_s"] / none["cpu_per_minute_s"], 2
        )
    return out


# -- the section --------------------------------------------------------------------------


async def measure_hosted_timing(livekit: LiveKitServer, *, quick: bool) -> Json:
    """The whole section: first word and face, the long line, the agent's CPU."""
    plan = PLANS["quick" if quick else "full"]
    started = time.monotonic()
    result: Json = {"runs": plan["runs"]}
    durations: Json = {}
    parts: tuple[tuple[str, Callable[[], Awaitable[Json]]], ...] = (
        ("first_word", lambda: measure_first_word(livekit, plan["runs"])),
        ("long_line", lambda: measure_long_line(livekit, plan["long_line_runs"])),
        ("agent_cpu", lambda: measure_agent_cpu(livekit, plan["cpu_window_s"])),
    )
    for name, measure in parts:
        part_started = time.monotonic()
        try:
            result[name] = await measure()
        except Exception as exc:
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        durations[name] = round(time.monotonic() - part_started, 1)
    result["durations_s"] = durations
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result


@asynccontextmanager
async def _livekit() -> AsyncIterator[LiveKitServer]:
    from protoface_emulator.testing import local_livekit_server

    with local_livekit_server() as server:
        yield server


async def _main(quick: bool) -> Json:
    async with _livekit() as server:
        return await measure_hosted_timing(server, quick=quick)


def main() -> int:
    """Measure the section against a fresh livekit-server and print it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per cell, shorter CPU run")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.quick)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

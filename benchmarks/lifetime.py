"""The lifetime measurements of `benchmarks/run` (`--only lifetime`): both plugins, one run.

Each conversation runs in its own process (`lifetime_client.py`, under our
interpreter or the published plugin's venv) against one in-process emulator
with real workers and a real `livekit-server --dev`:

- `leave`: the avatar removed from the room; time until the viewer hears the
  agent again, and (ours) until `"avatar_restored"` and the replacement's
  first frame;
- `steady`: API requests per session-minute in a quiet conversation, counted
  by the emulator;
- `cap`: a conversation longer than its `max_duration_seconds`: hosted
  sessions per conversation against ceil(duration / cap), the largest gap in
  the avatar's video at the viewer, speech heard from avatars.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from pathlib import Path
from typing import IO, Any

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer, mint_token

Json = dict[str, Any]
WORK = Path(__file__).resolve().parent / ".work" / "lifetime"
CLIENT = Path(__file__).resolve().parent / "lifetime_client.py"

# What each plugin is asked for: the published one has none of our options.
OPTIONS: dict[str, Json] = {"ours": {}, "published": {}}


async def run_client(name: str, python: Path | str, job: Json, timeout: float, work: Path) -> Json:
    """Run one conversation; its result is the JSON line it prints before tearing down.

    A process that printed its result and then died in the native SDK's
    teardown still measured what it measured: that is kept, and noted.
    """
    with _log(work, name) as log:
        process = await asyncio.create_subprocess_exec(
            str(python),
            str(CLIENT),
            json.dumps(job),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            return {"error": f"{name} took longer than {timeout:.0f} s"}
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"{name} printed no result (exit {process.returncode}); see {work}"}
    result: Json = json.loads(lines[-1])
    if process.returncode != 0:
        result["teardown_exit"] = process.returncode
    return result


def _log(work: Path, name: str) -> IO[bytes]:
    work.mkdir(parents=True, exist_ok=True)
    return (work / f"{name}.log").open("wb")


def _job(livekit: LiveKitServer, emu: Emulator, scenario: str, **extra: Any) -> Json:
    room = f"life-{scenario}-{uuid.uuid4().hex[:6]}"
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    key, secret = livekit.api_key, livekit.api_secret
    return {
        "scenario": scenario,
        "room": room,
        "agent_identity": agent,
        "agent_token": mint_token(key, secret, agent, room, kind="agent"),
        "viewer_token": mint_token(key, secret, f"viewer-{uuid.uuid4().hex[:6]}", room),
        "livekit": {
            "url": livekit.url,
            "http_url": livekit.http_url,
            "api_key": key,
            "api_secret": secret,
        },
        "emulator": {"url": emu.url, "api_key": emu.api_key},
        **extra,
    }


def _p50(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return round(values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2, 3)


async def _leave(clients: dict[str, Path | str], livekit: LiveKitServer, runs: int) -> Json:
    out: Json = {}
    for name, python in clients.items():
        rows = []
        for index in range(runs):
            async with Emulator() as emu:
                job = _job(livekit, emu, "leave", options=OPTIONS[name])
                rows.append(await run_client(f"leave-{name}-{index}", python, job, 120, WORK))
        heard = [r["heard_again_s"] for r in rows if r.get("heard_again_s") is not None]
        restored = [r["restored_s"] for r in rows if r.get("restored_s") is not None]
        frames = [
            r["replacement_first_frame_s"]
            for r in rows
            if r.get("replacement_first_frame_s") is not None
        ]
        out[name] = {
            "runs": len(rows),
            "heard_again_in_20s": len(heard),
            "heard_again_p50_s": _p50(heard),
            "heard_again_max_s": max(heard) if heard else None,
            "restored_runs": len(restored),
            "restored_p50_s": _p50(restored),
            "replacement_first_frame_p50_s": _p50(frames),
            "errors": [r["error"] for r in rows if "error" in r],
        }
    return out


async def _steady(clients: dict[str, Path | str], livekit: LiveKitServer, seconds: float) -> Json:
    out: Json = {}
    for name, python in clients.items():
        async with Emulator() as emu:
            job = _job(livekit, emu, "steady", options=OPTIONS[name], seconds=seconds)
            row = await run_client(f"steady-{name}", python, job, seconds + 90, WORK)
            start, end = row.get("window", [0.0, 0.0])
            during = [r for r in emu.requests.all() if start <= r.arrived_at <= end]
        minutes = max((end - start) / 60.0, 1e-9)
        out[name] = {
            "window_s": round(end - start, 1),
            "requests": len(during),
            "requests_per_session_minute": round(len(during) / minutes, 2),
            "by_route": _by_route(during),
            "errors": [row["error"]] if "error" in row else [],
        }
    return out


def _by_route(requests: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in requests:
        route = (
            f"{r.method} {'/v1/sessions/{id}' if r.path.startswith('/v1/sessions/') else r.path}"
        )
        counts[route] = counts.get(route, 0) + 1
    return counts


async def _cap(
    clients: dict[str, Path | str],
    livekit: LiveKitServer,
    seconds: float,
    cap: int,
) -> Json:
    out: Json = {}
    for name, python in clients.items():
        async with Emulator() as emu:
            options = {**OPTIONS[name], "max_duration_seconds": cap}
            job = _job(
                livekit, emu, "cap", options=options, seconds=seconds, line_s=1.5, pause_s=1.5
            )
            row = await run_client(f"cap-{name}", python, job, seconds + 120, WORK)
            created = len(emu.requests.matching("POST /v1/sessions"))
        start, end = row.get("window", [0.0, 0.0])
        out[name] = {
            **{k: v for k, v in row.items() if k not in ("window",)},
            "duration_s": round(end - start, 1),
            "cap_s": cap,
            "hosted_sessions": created,
            "ceil_duration_over_cap": math.ceil((end - start) / cap) if end > start else None,
        }
    return out


async def measure_lifetime(
    clients: dict[str, Path | str], livekit: LiveKitServer, *, quick: bool
) -> Json:
    """All three lifetime measurements, for every plugin in `clients`."""
    started = time.monotonic()
    result: Json = {
        "leave": await _leave(clients, livekit, runs=2 if quick else 5),
        "steady": await _steady(clients, livekit, seconds=40.0 if quick else 120.0),
        "cap": await _cap(
            clients,
            livekit,
            seconds=60.0 if quick else 180.0,
            cap=20 if quick else 60,
        ),
    }
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result

"""The emulator's timing (`protoface_emulator.hosting.timing`): slow the way the hosted service is.

Unit tests of `Timing`'s parsing and validation, then the emulator with stand-in
workers: a cold start keeps a session `queued` and delays its `started_at`, the
API's latency delays answers, a cold start past the join timeout fails the
session as the API says, and the other delays ride to the worker in its spec.
Elapsed times are only checked against the configured minimum (a property, not
a speed).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime

import aiohttp
import pytest
from emulator_helpers import call, session_body
from standin_worker import StandInWorkers

from protoface_emulator.cli import build_parser, timing_from_args
from protoface_emulator.hosting.timing import (
    PROFILES,
    Delays,
    TimedWorkers,
    Timing,
    parse_seconds,
    resolve_timing,
)
from protoface_emulator.lifecycle import FAILURE_JOIN_TIMEOUT
from protoface_emulator.server import Emulator
from protoface_emulator.testing import eventually

# -- Timing: what it accepts and refuses -------------------------------------------------


def test_the_default_is_fast_and_adds_nothing() -> None:
    assert resolve_timing(None) == Timing() == PROFILES["fast"]
    assert Timing().is_instant


def test_hosted_resembles_the_hosted_service() -> None:
    hosted = Timing.profile("hosted")
    assert hosted.bounds("cold_start") == (1.0, 5.0)
    assert hosted.bounds("api_latency") == (0.02, 0.08)
    low, high = hosted.bounds("ack_delay")
    assert 0 < low <= high < 0.5
    assert not hosted.is_instant
    assert resolve_timing("hosted") == hosted


def test_fixed_and_range_delays_are_normalised() -> None:
    timing = Timing(cold_start=2, api_latency=(0.01, 0.01), ack_delay=[0.05, 0.1])  # type: ignore[arg-type]
    assert timing.cold_start == 2.0 and isinstance(timing.cold_start, float)
    assert timing.api_latency == 0.01  # a range of one value is a fixed delay
    assert timing.ack_delay == (0.05, 0.1)  # a JSON list becomes a range


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"cold_start": -1.0}, "cold_start must be a finite number of seconds >= 0; got -1.0"),
        ({"api_latency": math.nan}, "api_latency must be a finite number"),
        ({"ack_delay": math.inf}, "ack_delay must be a finite number"),
        ({"cold_start": (5.0, 1.0)}, "cold_start=(5, 1) is a range with low > high; write (1, 5)"),
        ({"cold_start": (1.0, 2.0, 3.0)}, "cold_start range must be (low, high)"),
        ({"first_frame_delay": "2"}, "first_frame_delay must be seconds"),
        ({"first_frame_delay": True}, "first_frame_delay must be seconds"),
        ({"cold_start": 3600.0}, "cold_start=3600 s is more than 600 s"),
        ({"seed": "7"}, "seed must be an integer or None"),
    ],
)
def test_bad_delays_are_refused_naming_the_field_and_value(
    kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Timing(**kwargs)  # type: ignore[arg-type]
    assert named in str(caught.value)


def test_an_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown timing profile 'slow'; use one of fast, hosted"):
        Timing.profile("slow")
    with pytest.raises(TypeError, match="profile name"):
        resolve_timing(3)  # type: ignore[arg-type]


def test_with_overrides_replaces_only_what_is_given() -> None:
    timing = Timing.profile("hosted").with_overrides(cold_start=2.0, api_latency=None)
    assert timing.cold_start == 2.0
    assert timing.api_latency == PROFILES["hosted"].api_latency
    with pytest.raises(ValueError, match="no delay named"):
        Timing().with_overrides(warmup=1.0)


@pytest.mark.parametrize(
    ("text", "value"), [("2", 2.0), ("0.05", 0.05), ("1-5", (1.0, 5.0)), (" 0.3-1 ", (0.3, 1.0))]
)
def test_command_line_seconds(text: str, value: object) -> None:
    assert parse_seconds(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5-1", "'5-1' has LOW > HIGH; write 1-5"),
        ("abc", "'abc' is not seconds: write a number (2, 0.05) or a range LOW-HIGH (1-5)"),
        ("-1", "is not seconds"),
        ("nan", "must be a finite number"),
    ],
)
def test_bad_command_line_seconds_say_how_to_write_them(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_seconds(text)
    assert message in str(caught.value)


def test_the_command_takes_a_profile_and_overrides() -> None:
    args = build_parser().parse_args(["--profile", "hosted", "--cold-start", "2"])
    timing = timing_from_args(args)
    assert timing.cold_start == 2.0
    assert timing.api_latency == PROFILES["hosted"].api_latency
    assert timing_from_args(build_parser().parse_args([])).is_instant


def test_seeded_draws_repeat_and_stay_within_the_range() -> None:
    def draws(seed: int) -> list[float]:
        delays = Delays(Timing.profile("hosted", seed=seed))
        return [delays.draw("cold_start") for _ in range(50)]

    assert draws(7) == draws(7)
    assert all(1.0 <= value <= 5.0 for value in draws(7))
    assert len(set(draws(7))) > 1  # a range, not one value


def test_the_emulator_refuses_an_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown timing profile 'hostd'"):
        Emulator(worker_factory=StandInWorkers(), timing="hostd")


# -- the emulator under a timing ---------------------------------------------------------


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_a_cold_start_keeps_the_session_queued_then_it_runs(
    http: aiohttp.ClientSession,
) -> None:
    workers = StandInWorkers()
    timing = Timing(cold_start=1.0)
    async with Emulator(worker_factory=workers, timing=timing) as emu:
        created = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
        assert created.status == 201, created.text
        session_id = created.json["id"]
        # Queued and not started: no worker was even asked for yet.
        assert created.json["status"] == "queued" and created.json["started_at"] is None
        assert workers.for_session(session_id) == []

        async def running() -> bool:
            reply = await call(http, emu, "GET", f"/v1/sessions/{session_id}")
            return bool(reply.json["status"] == "running")

        await eventually(running, timeout=20)
        session = (await call(http, emu, "GET", f"/v1/sessions/{session_id}")).json
    started = _parse(session["started_at"]) - _parse(session["created_at"])
    assert started.total_seconds() >= 1.0
    assert _parse(session["first_frame_at"]) >= _parse(session["started_at"])


async def test_a_cold_start_past_the_join_timeout_fails_as_worker_join_timeout(
    http: aiohttp.ClientSession,
) -> None:
    workers = StandInWorkers()
    async with Emulator(
        worker_factory=workers, timing=Timing(cold_start=5), join_timeout=0.5
    ) as emu:
        created = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
        session_id = created.json["id"]

        async def failed() -> bool:
            reply = await call(http, emu, "GET", f"/v1/sessions/{session_id}")
            return bool(reply.json["status"] == "failed")

        await eventually(failed, timeout=10)
        session = (await call(http, emu, "GET", f"/v1/sessions/{session_id}")).json
        assert session["failure"]["code"] == FAILURE_JOIN_TIMEOUT
        assert session["started_at"] is None
    # The cold start was called off: its worker never started.
    assert workers.for_session(session_id) == []


async def test_api_latency_delays_every_answer(http: aiohttp.ClientSession) -> None:
    async with Emulator(worker_factory=StandInWorkers(), timing=Timing(api_latency=0.3)) as emu:
        for path in ("/v1/status", "/v1/sessions", "/v1/nowhere"):
            began = time.monotonic()
            reply = await call(http, emu, "GET", path)
            assert time.monotonic() - began >= 0.3, path
            assert reply.status in (200, 404)


async def test_the_first_frame_and_ack_delays_ride_to_the_worker_in_its_spec() -> None:
    workers = StandInWorkers()
    timed = TimedWorkers(workers, Delays(Timing(first_frame_delay=(0.3, 1.0), ack_delay=0.1)))
    async with Emulator(worker_factory=timed) as emu:
        async with aiohttp.ClientSession() as http:
            created = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
        (worker,) = workers.for_session(created.json["id"])
    assert 0.3 <= worker.spec.first_frame_delay <= 1.0
    assert worker.spec.ack_delay == 0.1


async def test_ending_during_a_cold_start_never_starts_the_worker(
    http: aiohttp.ClientSession,
) -> None:
    workers = StandInWorkers()
    async with Emulator(worker_factory=workers, timing=Timing(cold_start=0.5)) as emu:
        created = await call(http, emu, "POST", "/v1/sessions", json_body=session_body())
        session_id = created.json["id"]
        ended = await call(http, emu, "POST", f"/v1/sessions/{session_id}/end")
        assert ended.status == 200, ended.text
        # Past the cold start: a worker it forgot to call off would have started by now.
        await asyncio.sleep(1.0)
        assert workers.for_session(session_id) == []


def test_the_workers_delays_survive_the_wire_to_processes_and_dispatched_jobs() -> None:
    from protoface_emulator.hosting.protocol import (
        job_metadata,
        read_job_metadata,
        spec_from_wire,
        spec_to_wire,
    )
    from protoface_emulator.lifecycle import WorkerSpec

    spec = WorkerSpec("sess_1", "ws://x", "room", "avatar", first_frame_delay=0.7, ack_delay=0.1)
    assert spec_from_wire(spec_to_wire(spec)) == spec
    assert read_job_metadata(job_metadata("k", "t", "ws://r", spec)).spec == spec


async def test_the_command_applies_its_profile_and_overrides() -> None:
    from test_cli import emulator_process, get

    async with emulator_process(
        "--api-key", "k", "--profile", "hosted", "--api-latency", "0.3"
    ) as running:
        began = time.monotonic()
        assert await get(running.url, "k", "/v1/status") == 200
        assert time.monotonic() - began >= 0.3

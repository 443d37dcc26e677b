"""How slow the emulator is: cold starts, API latency, late first frames and acknowledgements.

The hosted Protoface service is not instant: a session's worker takes seconds
to start (a cold start), answers cross a network, and the avatar's playback
acknowledgements arrive a little after the audio. `Timing` describes those
delays; an `Emulator` (`Emulator(timing="hosted")`, `protoface-emulator
--profile hosted`, the kit's `--protoface-timing=hosted`, `protoface-emulator
playground --profile hosted`) applies them, so an agent's tests meet them
before production does. The default, `fast`, adds nothing.

Each delay is a number of seconds, or a `(low, high)` range drawn uniformly from
the `Timing`'s seeded random generator:

- `cold_start`: from the create until the worker starts joining the room; the
  session stays `queued` meanwhile (no `started_at`). The join timeout counts
  from the create, so a cold start longer than it fails the session with
  `worker_join_timeout`, as the hosted service would.
- `first_frame_delay`: after the worker joined and published its tracks (and
  the agent is in the room), before its first frame; `first_frame_at` and
  `running` follow it.
- `api_latency`: added to every API answer.
- `ack_delay`: added before each `lk.playback_started` the worker sends the agent.

`cold_start`, `first_frame_delay` and `ack_delay` are drawn once per session,
`api_latency` once per request.

Where they apply: the API's latency in `app.Api`; the cold start here, in
`TimedWorkers`, which wraps any `WorkerFactory` (in-process, worker processes or
dispatched jobs alike) and carries the session's first-frame and
acknowledgement delays to the worker in its `WorkerSpec`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from protoface_emulator.lifecycle import (
    FAILURE_WORKER_CRASHED,
    WorkerEvents,
    WorkerFactory,
    WorkerHandle,
    WorkerSpec,
)

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "Delays",
    "Seconds",
    "TimedWorkers",
    "Timing",
    "add_timing_arguments",
    "parse_seconds",
    "resolve_timing",
    "timing_from_args",
]

logger = logging.getLogger("protoface_emulator.hosting.timing")

Seconds: TypeAlias = float | tuple[float, float]
"""A delay: a fixed number of seconds, or a `(low, high)` range drawn uniformly."""

_DELAYS: Final = ("cold_start", "first_frame_delay", "api_latency", "ack_delay")
# Past this a "delay" is a mistake (minutes typed as seconds, say), not a profile.
_MAX_SECONDS: Final = 600.0


def _bounds(name: str, value: object) -> tuple[float, float]:
    """`value` as a checked `(low, high)`; raises ValueError naming `name` and the fix."""
    if isinstance(value, tuple) and len(value) == 2:
        low, high = (_number(name, part) for part in value)
        if low > high:
            raise ValueError(
                f"{name}=({low:g}, {high:g}) is a range with low > high; write ({high:g}, {low:g})"
            )
        return low, high
    if isinstance(value, tuple):
        raise ValueError(f"{name} range must be (low, high); got {value!r}")
    number = _number(name, value)
    return number, number


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be seconds (a number or a (low, high) pair); got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0; got {value!r}")
    if number > _MAX_SECONDS:
        raise ValueError(f"{name}={number:g} s is more than {_MAX_SECONDS:g} s; use seconds")
    return number


@dataclass(frozen=True)
class Timing:
    """The delays an emulator adds, each fixed seconds or a `(low, high)` range.

    See the module docstring for when each applies. `Timing()` adds nothing
    (the `fast` profile); `Timing.profile("hosted")` resembles the hosted service.
    Ranges are drawn uniformly, from a generator seeded with `seed` (None: a
    fresh seed each run).

    Attributes:
        cold_start: Seconds from a session's create until its worker starts joining.
        first_frame_delay: Seconds after joining before the first video frame.
        api_latency: Seconds added to each API answer.
        ack_delay: Seconds added before each `lk.playback_started` acknowledgement.
        seed: Seed of the draws, for reproducible runs.

    Raises:
        ValueError: A delay is negative, not finite, not a number or pair, or a
            range with low > high (the message names the field and the value).
    """

    cold_start: Seconds = 0.0
    first_frame_delay: Seconds = 0.0
    api_latency: Seconds = 0.0
    ack_delay: Seconds = 0.0
    seed: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in _DELAYS:
            value = getattr(self, name)
            if isinstance(value, list):  # from JSON, where tuples become lists
                value = tuple(value)
            low, high = _bounds(name, value)
            # Normalised: a fixed delay is a float, a range a tuple of floats.
            object.__setattr__(self, name, low if low == high else (low, high))
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or None; got {self.seed!r}")

    @classmethod
    def profile(cls, name: str, *, seed: int | None = None) -> Timing:
        """A named profile (`PROFILES`), optionally with a seed.

        Raises:
            ValueError: `name` is not a profile (the message lists them).
        """
        try:
            timing = PROFILES[name.strip().lower()]
        except KeyError:
            raise ValueError(
                f"unknown timing profile {name!r}; use one of {', '.join(PROFILES)}"
            ) from None
        return dataclasses.replace(timing, seed=seed)

    @property
    def is_instant(self) -> bool:
        """Whether every delay is zero (nothing to apply)."""
        return all(self.bounds(name) == (0.0, 0.0) for name in _DELAYS)

    def bounds(self, name: str) -> tuple[float, float]:
        """The `(low, high)` of one delay (`low == high` when fixed)."""
        if name not in _DELAYS:
            raise ValueError(f"no delay named {name!r}; the delays are {', '.join(_DELAYS)}")
        return _bounds(name, getattr(self, name))

    def with_overrides(self, **delays: Seconds | None) -> Timing:
        """This timing with the delays given (None: keep this one's)."""
        given = {name: value for name, value in delays.items() if value is not None}
        unknown = set(given) - set(_DELAYS)
        if unknown:
            raise ValueError(f"no delay named {sorted(unknown)}; the delays are {_DELAYS}")
        return dataclasses.replace(self, **given)  # type: ignore[arg-type]

    def describe(self) -> str:
        """A one-line summary, e.g. `cold_start=1-5s api_latency=0.02-0.08s`."""
        parts = []
        for name in _DELAYS:
            low, high = self.bounds(name)
            if high > 0:
                parts.append(f"{name}={low:g}s" if low == high else f"{name}={low:g}-{high:g}s")
        return " ".join(parts) or "no delays"


DEFAULT_PROFILE: Final = "fast"
PROFILES: Final[Mapping[str, Timing]] = {
    "fast": Timing(),
    # What a hosted avatar service shows: a worker booting for seconds, a first
    # frame a beat after joining, API answers across a network, acknowledgements
    # a round trip or so behind the audio.
    "hosted": Timing(
        cold_start=(1.0, 5.0),
        first_frame_delay=(0.3, 1.0),
        api_latency=(0.02, 0.08),
        ack_delay=(0.05, 0.15),
    ),
}
"""The named profiles: `fast` (no delays, the default) and `hosted`."""


def resolve_timing(value: str | Timing | None) -> Timing:
    """A `Timing` from a profile name, a `Timing`, or None (the default profile).

    Raises:
        ValueError: an unknown profile name.
        TypeError: neither a name nor a `Timing`.
    """
    if value is None:
        return PROFILES[DEFAULT_PROFILE]
    if isinstance(value, Timing):
        return value
    if isinstance(value, str):
        return Timing.profile(value)
    raise TypeError(
        f"timing must be a profile name ({', '.join(PROFILES)}) or a Timing; got {value!r}"
    )


def parse_seconds(text: str) -> Seconds:
    """A delay as typed on a command line: `2`, `0.05`, or a range `1-5`.

    Raises:
        ValueError: not seconds or a `LOW-HIGH` range of them (says which form to use).
    """
    raw = text.strip()
    low_text, sep, high_text = raw.partition("-")
    try:
        value: Seconds = (float(low_text), float(high_text)) if sep else float(raw)
    except ValueError:
        raise ValueError(
            f"{text!r} is not seconds: write a number (2, 0.05) or a range LOW-HIGH (1-5)"
        ) from None
    if isinstance(value, tuple) and value[0] > value[1]:
        raise ValueError(f"{text!r} has LOW > HIGH; write {high_text}-{low_text}")
    _bounds(repr(text), value)
    return value


# -- the command-line form ----------------------------------------------------------------


def _delay_argument(text: str) -> Seconds:
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_timing_arguments(parser: argparse.ArgumentParser, *, overrides: bool = True) -> None:
    """Add `--profile` and, with `overrides`, one option per delay and `--timing-seed`.

    The `protoface-emulator` command takes them all, the playground `--profile`.
    """
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=DEFAULT_PROFILE,
        help="how slow the emulator is: fast (no delays) or hosted (like the hosted service: "
        "cold starts of 1-5 s, API answers of 20-80 ms) (default %(default)s)",
    )
    if not overrides:
        return
    for flag, what in (
        ("--cold-start", "from a create until its worker starts joining"),
        ("--first-frame-delay", "from joining until the first frame"),
        ("--api-latency", "added to each API answer"),
        ("--ack-delay", "before each lk.playback_started"),
    ):
        parser.add_argument(
            flag,
            type=_delay_argument,
            default=None,
            metavar="S|LOW-HIGH",
            help=f"seconds {what}, e.g. 2 or 1-5 (default: the profile's)",
        )
    parser.add_argument(
        "--timing-seed", type=int, default=None, help="seed for delays drawn from ranges"
    )


def timing_from_args(args: argparse.Namespace) -> Timing:
    """The `Timing` the options of `add_timing_arguments` ask for: the profile, then overrides."""
    return Timing.profile(args.profile, seed=args.timing_seed).with_overrides(
        cold_start=args.cold_start,
        first_frame_delay=args.first_frame_delay,
        api_latency=args.api_latency,
        ack_delay=args.ack_delay,
    )


class Delays:
    """A `Timing` and the seeded generator its ranges are drawn from.

    Args:
        timing: The delays to draw.
    """

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self._rng = random.Random(timing.seed)

    def draw(self, name: str) -> float:
        """One value of the delay `name` (a range is drawn uniformly)."""
        low, high = self.timing.bounds(name)
        return low if low == high else self._rng.uniform(low, high)

    def api_latency(self) -> float:
        """Seconds to add to one API answer."""
        return self.draw("api_latency")


class TimedWorkers:
    """A `WorkerFactory` that starts another's workers late, with the session's delays.

    Each session draws its cold start, first-frame and acknowledgement delays;
    the worker is started by `factory` after the cold start, with the other two
    in its `WorkerSpec` (so they travel to worker processes and dispatched jobs).

    Args:
        factory: Starts the real workers.
        delays: Where the delays are drawn.
    """

    def __init__(self, factory: WorkerFactory, delays: Delays) -> None:
        self._factory = factory
        self._delays = delays

    def __call__(self, spec: WorkerSpec, events: WorkerEvents) -> WorkerHandle:
        """Start the worker of one session after its cold start; returns at once."""
        timed = dataclasses.replace(
            spec,
            first_frame_delay=self._delays.draw("first_frame_delay"),
            ack_delay=self._delays.draw("ack_delay"),
        )
        cold_start = self._delays.draw("cold_start")
        if cold_start <= 0:
            return self._factory(timed, events)
        return _ColdStart(self._factory, timed, events, cold_start)


class _ColdStart:
    """A worker that is still starting: the real one is started after `seconds`."""

    def __init__(
        self, factory: WorkerFactory, spec: WorkerSpec, events: WorkerEvents, seconds: float
    ) -> None:
        self._worker: WorkerHandle | None = None
        self._task = asyncio.get_running_loop().create_task(
            self._start_later(factory, spec, events, seconds),
            name=f"protoface-cold-start-{spec.session_id}",
        )

    async def _start_later(
        self, factory: WorkerFactory, spec: WorkerSpec, events: WorkerEvents, seconds: float
    ) -> None:
        logger.info("session %s: cold start of %.2f s", spec.session_id, seconds)
        await asyncio.sleep(seconds)
        try:
            self._worker = factory(spec, events)
        except Exception:
            # Not the exception's text: it may quote the spec, worker token included.
            logger.exception("session %s: the worker factory raised", spec.session_id)
            events.on_failed(FAILURE_WORKER_CRASHED, "The avatar worker could not be started.")

    async def aclose(self) -> None:
        """Stop the cold start, or close the worker it started. Idempotent."""
        self._task.cancel()
        # wait, not await: our own cancellation must not be swallowed with the task's.
        await asyncio.wait({self._task})
        if self._worker is not None:
            await self._worker.aclose()

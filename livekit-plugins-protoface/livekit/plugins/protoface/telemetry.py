"""The avatar in the agent's own OpenTelemetry: spans for its lifetime, metrics for its cost.

Spans go through `livekit.agents.telemetry.tracer`, the tracer livekit-agents
itself uses: it follows `livekit.agents.telemetry.set_tracer_provider(...)`
(and the global provider when none was set), so an agent that exports its
telemetry gets the avatar's with no setup. Metrics go through OpenTelemetry's
global meter provider, as livekit-agents' own metrics do. With telemetry off
both are OpenTelemetry's no-op implementations: nothing is recorded or sent.

Spans (all children of the conversation's `protoface.avatar.conversation`):

- `protoface.avatar.join`: from `start()` until the first avatar publishes
  video (error status when it never does);
- `protoface.avatar.loss`: the moment an avatar was lost (reason, status);
- `protoface.avatar.recovery`: from a loss until an avatar speaks again
  (`protoface.recovered` false when none did before the end);
- `protoface.avatar.handover`: a successor took over before the session cap;
- `protoface.avatar.switch`: from `switch()` until the new avatar speaks (or
  the switch failed);
- the conversation span ends at `aclose()` with the usage figures.

Metrics (meter `livekit.plugins.protoface`): the histograms
`protoface.avatar.join_latency`, `protoface.avatar.first_frame_latency`,
`protoface.avatar.playback_latency` (seconds); the counters
`protoface.avatar.time_without_avatar`, `protoface.avatar.speech_without_avatar`,
`protoface.avatar.billable_seconds` (seconds), `protoface.avatar.sessions`
(by `protoface.outcome`, the session's final status) and
`protoface.avatar.losses` (by `protoface.reason`).

Attributes carry ids, avatar ids, qualities, statuses and reasons: never a
key, a secret, a token or a URL (a URL may hold credentials).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from livekit.agents.telemetry import tracer
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from .events import AvatarHandoverEvent, AvatarLostEvent, AvatarRestoredEvent, AvatarSwitchedEvent
from .version import __version__

__all__ = [
    "METER_NAME",
    "AvatarTelemetry",
    "SessionOutcome",
]

METER_NAME = "livekit.plugins.protoface"
"""The OpenTelemetry meter the avatar's metrics are recorded under."""

# The attribute values we record (OpenTelemetry's own alias refers to a name
# that documentation tools cannot resolve).
_AttributeValue = str | bool | int | float

_ATTR_SESSION = "protoface.session_id"
_ATTR_AVATAR = "protoface.avatar_id"
_ATTR_QUALITY = "protoface.quality"
_ATTR_IDENTITY = "protoface.avatar_identity"
_ATTR_REASON = "protoface.reason"
_ATTR_STATUS = "protoface.status"
_ATTR_OUTCOME = "protoface.outcome"

# Created once: with no meter provider set these are OpenTelemetry's proxies,
# which start recording if and when the agent sets one.
_meter = metrics.get_meter(METER_NAME, __version__)


def _seconds_histogram(name: str, description: str) -> metrics.Histogram:
    return _meter.create_histogram(f"protoface.avatar.{name}", unit="s", description=description)


def _counter(name: str, description: str, unit: str = "") -> metrics.Counter:
    return _meter.create_counter(f"protoface.avatar.{name}", unit=unit, description=description)


_join_latency = _seconds_histogram("join_latency", "start() until the avatar's video")
_first_frame_latency = _seconds_histogram(
    "first_frame_latency",
    "A session's creation until its first published frame (Protoface's clock)",
)
_playback_latency = _seconds_histogram(
    "playback_latency", "First audio forwarded to the avatar until it started playing"
)
_time_without_avatar = _counter(
    "time_without_avatar", "Conversation time with no avatar after a loss", unit="s"
)
_speech_without_avatar = _counter(
    "speech_without_avatar", "Seconds the agent spoke while no avatar was there", unit="s"
)
_billable_seconds = _counter("billable_seconds", "Seconds Protoface bills", unit="s")
_sessions = _counter("sessions", "Hosted sessions, by final status")
_losses = _counter("losses", "Avatars lost, by reason")


@dataclass(frozen=True)
class SessionOutcome:
    """How one hosted session ended, as read after the conversation.

    Attributes:
        session_id: The Protoface session id.
        status: Its status when read (`unknown` if it could not be read).
        avatar_id: The avatar it rendered.
        quality: Its quality tier.
        billable_seconds: Its `usage.billable_seconds`.
        first_frame_latency: Seconds from creation to its first frame, if any.
        failure_code: `failure.code` when it failed.
    """

    session_id: str
    status: str
    avatar_id: str = ""
    quality: str = ""
    billable_seconds: float = 0.0
    first_frame_latency: float | None = None
    failure_code: str | None = None


class AvatarTelemetry:
    """Traces and measures one conversation's avatar.

    Args:
        avatar_id: The avatar the conversation starts with.
        quality: Its quality tier, if chosen.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        avatar_id: str,
        quality: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._attrs: dict[str, _AttributeValue] = {_ATTR_AVATAR: avatar_id}
        if quality:
            self._attrs[_ATTR_QUALITY] = quality
        self._root = tracer.start_span("protoface.avatar.conversation", attributes=self._attrs)
        self._context = trace.set_span_in_context(self._root)
        self._join: Span | None = self._child("protoface.avatar.join")
        self._recovery: Span | None = None
        self._away_since: float | None = None
        self._switch: Span | None = None
        self._done = False

    def joined(self, session_id: str, latency: float) -> None:
        """The first avatar published video, `latency` seconds after `start()`."""
        _join_latency.record(latency, self._metric_attrs())
        if self._join is not None:
            self._join.set_attribute(_ATTR_SESSION, session_id)
            self._join.end()
            self._join = None

    def join_failed(self, session_id: str, reason: str) -> None:
        """The first avatar never joined."""
        if self._join is not None:
            self._join.set_attributes({_ATTR_SESSION: session_id, _ATTR_REASON: reason})
            self._join.set_status(Status(StatusCode.ERROR, reason))
            self._join.end()
            self._join = None

    def lost(self, ev: AvatarLostEvent) -> None:
        """An avatar that had joined is gone."""
        _losses.add(1, {**self._metric_attrs(), _ATTR_REASON: ev.reason})
        attrs: dict[str, _AttributeValue] = {
            _ATTR_SESSION: ev.session_id,
            _ATTR_REASON: ev.reason,
            _ATTR_STATUS: ev.status,
        }
        self._child("protoface.avatar.loss", attrs).end()
        if self._recovery is None:
            self._recovery = self._child("protoface.avatar.recovery", attrs)

    def restored(self, ev: AvatarRestoredEvent) -> None:
        """A replacement speaks for the agent."""
        self._recovered(ev.session_id)

    def handed_over(self, ev: AvatarHandoverEvent) -> None:
        """A successor took over before the session cap."""
        self._child(
            "protoface.avatar.handover",
            {
                _ATTR_SESSION: ev.session_id,
                _ATTR_IDENTITY: ev.avatar_identity,
                "protoface.previous_session_id": ev.previous_session_id,
            },
        ).end()

    def switch_started(self, avatar_id: str, quality: str | None) -> None:
        """`switch()` was called for `avatar_id`."""
        attrs: dict[str, _AttributeValue] = {_ATTR_AVATAR: avatar_id}
        if quality:
            attrs[_ATTR_QUALITY] = quality
        self._switch = self._child("protoface.avatar.switch", attrs)

    def switched(self, ev: AvatarSwitchedEvent) -> None:
        """The new avatar speaks; later metrics carry its avatar id."""
        self._recovered(ev.session_id)
        self._attrs[_ATTR_AVATAR] = ev.avatar_id
        if self._switch is not None:
            self._switch.set_attributes(
                {
                    _ATTR_SESSION: ev.session_id,
                    _ATTR_IDENTITY: ev.avatar_identity,
                    "protoface.previous_session_id": ev.previous_session_id,
                    "protoface.previous_avatar_id": ev.previous_avatar_id,
                }
            )
            self._switch.end()
            self._switch = None

    def switch_failed(self, reason: str) -> None:
        """`switch()` failed; the current avatar stays."""
        if self._switch is not None:
            self._switch.set_status(Status(StatusCode.ERROR, reason))
            self._switch.end()
            self._switch = None

    def set_quality(self, quality: str | None) -> None:
        """Later metrics carry this quality (after a switch)."""
        if quality:
            self._attrs[_ATTR_QUALITY] = quality

    def avatar_available(self, available: bool) -> None:
        """The agent's speech goes to an avatar again (True) or no longer does (False)."""
        now = self._clock()
        if not available:
            self._away_since = now if self._away_since is None else self._away_since
        elif self._away_since is not None:
            _time_without_avatar.add(now - self._away_since, self._metric_attrs())
            self._away_since = None

    def spoke_without_avatar(self, seconds: float) -> None:
        """The agent spoke `seconds` while no avatar was there."""
        if seconds > 0:
            _speech_without_avatar.add(seconds, self._metric_attrs())

    def playback_latency(self, seconds: float) -> None:
        """One utterance's wait for the avatar to start playing."""
        _playback_latency.record(seconds, self._metric_attrs())

    def ended(
        self, figures: Mapping[str, _AttributeValue], outcomes: Sequence[SessionOutcome]
    ) -> None:
        """The conversation ended: per-session outcomes, then the conversation span.

        Args:
            figures: The usage figures by name; the conversation span ends with
                each as `protoface.<name>`.
            outcomes: How each hosted session ended.
        """
        if self._done:
            return
        self._done = True
        self.avatar_available(True)  # closes the books on an outage still running
        for outcome in outcomes:
            attrs = dict(self._metric_attrs())
            if outcome.avatar_id:
                attrs[_ATTR_AVATAR] = outcome.avatar_id
            if outcome.quality:
                attrs[_ATTR_QUALITY] = outcome.quality
            _sessions.add(1, {**attrs, _ATTR_OUTCOME: outcome.status})
            if outcome.billable_seconds > 0:
                _billable_seconds.add(outcome.billable_seconds, attrs)
            if outcome.first_frame_latency is not None:
                _first_frame_latency.record(outcome.first_frame_latency, attrs)
        for span, why in ((self._join, "closed before the avatar joined"),):
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, why))
                span.end()
        self._join = None
        if self._recovery is not None:
            self._recovery.set_attribute("protoface.recovered", False)
            self._recovery.end()
            self._recovery = None
        self.switch_failed("closed during the switch")
        self._root.set_attributes({f"protoface.{name}": v for name, v in figures.items()})
        self._root.end()

    def _recovered(self, session_id: str) -> None:
        if self._recovery is not None:
            self._recovery.set_attributes({"protoface.recovered": True, _ATTR_SESSION: session_id})
            self._recovery.end()
            self._recovery = None

    def _child(self, name: str, attrs: Mapping[str, _AttributeValue] | None = None) -> Span:
        return tracer.start_span(
            name, context=self._context, attributes={**self._attrs, **(attrs or {})}
        )

    def _metric_attrs(self) -> dict[str, _AttributeValue]:
        # Low cardinality only: no session ids on metrics.
        return dict(self._attrs)

"""The books of one conversation: what its avatars did and cost, kept as it goes.

`AvatarSession` hands every lifetime event, agent state change and avatar
metric here; `usage.UsageRecorder` keeps the figures and `telemetry` the
spans. At the end, `close()` reads what each ended session billed and reports
the usage once: the `"avatar_usage"` event, one INFO line, the telemetry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from livekit.agents.voice import AgentStateChangedEvent

from .api import ProtofaceAPI
from .events import AvatarHandoverEvent, AvatarLostEvent, AvatarRestoredEvent, AvatarSwitchedEvent
from .lifetime import Lifetime
from .log import logger
from .telemetry import AvatarTelemetry
from .usage import AvatarUsage, UsageRecorder

__all__ = ["Books"]


class Books:
    """Records one conversation's usage and reports it once, at its end.

    Args:
        telemetry: The conversation's telemetry (its spans and metrics).
    """

    def __init__(self, telemetry: AvatarTelemetry) -> None:
        self.recorder = UsageRecorder(telemetry)
        self.final: AvatarUsage | None = None

    @property
    def telemetry(self) -> AvatarTelemetry:
        """The conversation's telemetry."""
        return self.recorder.telemetry

    def usage(self, sessions_started: int) -> AvatarUsage:
        """What the conversation's avatars did and cost so far (final once closed)."""
        if self.final is not None:
            return self.final
        self.recorder.sessions_started(sessions_started)
        return self.recorder.usage()

    def event(self, payload: object) -> None:
        """A lifetime event, recorded before it is emitted (a handler reads `usage`)."""
        if isinstance(payload, AvatarLostEvent):
            self.recorder.lost(payload)
        elif isinstance(payload, AvatarRestoredEvent):
            self.recorder.restored(payload)
        elif isinstance(payload, AvatarHandoverEvent):
            self.recorder.handed_over(payload)
        elif isinstance(payload, AvatarSwitchedEvent):
            self.recorder.switched(payload)

    def watch_first_join(self, lifetime: Lifetime) -> None:
        """Record how the first join went once it settles."""

        def settled(joined: asyncio.Future[None]) -> None:
            if joined.cancelled():
                return
            exc = joined.exception()
            session_id = lifetime.current.session_id
            if exc is None:
                self.recorder.joined(session_id)
            else:
                reason = getattr(exc, "failure_code", None) or type(exc).__name__
                self.recorder.join_failed(session_id, str(reason))

        asyncio.ensure_future(lifetime.first_join()).add_done_callback(settled)

    def agent_state_changed(self, ev: AgentStateChangedEvent) -> None:
        """The agent began or stopped speaking."""
        self.recorder.speaking(ev.new_state == "speaking")

    def metrics_collected(self, metrics: object) -> None:
        """An `AvatarMetrics` with a playback latency, if that is what `metrics` is."""
        # The base class reports each utterance's playback latency as an
        # `AvatarMetrics` (type "avatar_metrics"), which livekit-agents does not
        # export by name: read the two public fields.
        latency = getattr(metrics, "playback_latency", None)
        if (
            getattr(metrics, "type", None) == "avatar_metrics"
            and isinstance(latency, (int, float))
            and latency > 0
        ):
            self.recorder.playback_latency(float(latency))

    async def close(
        self, api: ProtofaceAPI, created: list[str], emit: Callable[[AvatarUsage], None]
    ) -> None:
        """Read what the ended sessions billed; report the usage once (event, log, telemetry)."""
        if self.final is not None:
            return
        try:
            usage = await self.recorder.finish(api, created)
        except Exception:
            logger.exception("could not total the protoface avatar's usage")
            return
        self.final = usage
        logger.info(
            "protoface avatar usage: %s",
            usage.describe(),
            extra={
                "sessions_started": usage.sessions_started,
                "billable_seconds": usage.billable_seconds,
                "billable_seconds_final": usage.billable_seconds_final,
            },
        )
        emit(usage)

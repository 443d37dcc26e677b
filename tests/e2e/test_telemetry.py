"""Usage and telemetry of a real conversation: a loss, a replacement, a switch, no secrets.

An agent in a real room (livekit-server, the emulator's real workers) with
OpenTelemetry's SDK installed the way an agent does it
(`livekit.agents.telemetry.set_tracer_provider`, the global meter provider),
exported to in-memory exporters. The avatar is removed from the room (a
recoverable loss), the agent speaks while it is gone, a replacement takes over,
then the agent switches to another face, and the conversation ends.
`avatar.usage`, the `"avatar_usage"` event, the log line, the spans and the
metrics must agree with what the emulator's API reports, and nothing exported
may hold the Protoface key, the LiveKit secret or a worker token.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from livekit import api
from livekit.agents.telemetry import set_tracer_provider
from livekit.plugins import protoface
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

from .harness import agent_in, eventually, load_speech, play, room_name

AVATAR = "protoface-avatar-agent"

_READER: InMemoryMetricReader | None = None


def _metric_reader() -> InMemoryMetricReader:
    """The process's meter provider, with an in-memory reader (OpenTelemetry sets it once)."""
    global _READER
    if _READER is None:
        _READER = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    return _READER


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, object], float]]]:
    """Every data point by metric name: (attributes, sum or value)."""
    found: dict[str, list[tuple[dict[str, object], float]]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "sum", 0.0)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def _total(points: dict[str, list[tuple[dict[str, object], float]]], name: str) -> float:
    return sum(value for _, value in points.get(name, []))


async def _say(agent: object, seconds: float) -> None:
    handle = agent.session.say(  # type: ignore[attr-defined]
        "line", audio=play(load_speech(seconds=seconds)), add_to_chat_ctx=False
    )
    await asyncio.wait_for(handle.wait_for_playout(), timeout=30)


async def test_usage_and_telemetry_of_a_conversation_with_a_loss_match_the_api(
    livekit_server: LiveKitServer, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="livekit.plugins.protoface")
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    set_tracer_provider(provider)
    reader = _metric_reader()
    before = _points(reader)

    room = room_name("usage")
    reported: list[protoface.AvatarUsage] = []
    lost: list[protoface.AvatarLostEvent] = []
    restored: list[protoface.AvatarRestoredEvent] = []
    async with agent_in(livekit_server, emulator, room) as agent:
        avatar = agent.avatar
        avatar.on("avatar_usage", reported.append)
        avatar.on("avatar_lost", lost.append)
        avatar.on("avatar_restored", restored.append)
        await avatar.wait_for_join(timeout=60)
        assert avatar.usage.join_latency is not None and avatar.usage.sessions_started == 1
        await _say(agent, 1.0)

        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=AVATAR)
            )
        await eventually(lambda: bool(lost), timeout=30, message=lambda: f"lost={lost}")
        # Heard through the room while the avatar is gone (if no replacement came yet).
        spoke_during_loss = not restored
        await _say(agent, 1.5)
        await eventually(lambda: bool(restored), timeout=60, message=lambda: f"{restored}")
        await _say(agent, 1.0)
        during = avatar.usage
        assert during.losses == {"worker_lost": 1} and during.replacements == 1
        assert not during.billable_seconds_final

        switched = await avatar.switch(avatar_id="av_stock_002")
        await _say(agent, 1.0)
        assert avatar.usage.switches == 1

        session_ids = avatar.session_ids
        await avatar.aclose()
        usage = avatar.usage

    # What the emulator bills, read through its public API.
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {emulator.api_key}"}
    ) as http:
        bills = []
        for session_id in session_ids:
            async with http.get(f"{emulator.url}/v1/sessions/{session_id}") as resp:
                bills.append(await resp.json())
    assert [b["status"] for b in bills] == ["failed", "ended", "ended"], bills
    assert [b["avatar_id"] for b in bills] == ["av_stock_001"] * 2 + ["av_stock_002"]
    api_billable = sum(b["usage"]["billable_seconds"] for b in bills)

    assert reported == [usage], "emitted once, at the end, the same value"
    assert usage.sessions_started == 3 == len(session_ids)
    assert usage.billable_seconds == pytest.approx(api_billable) and api_billable > 0
    assert usage.billable_seconds_final and usage.sessions_billed == 3
    assert dict(usage.losses) == {"worker_lost": 1}
    assert (usage.replacements, usage.handovers, usage.switches) == (1, 0, 1)
    if spoke_during_loss:
        assert usage.speech_seconds_without_avatar > 0.5
    assert usage.join_latency is not None and usage.join_latency > 0
    usage_lines = [r.getMessage() for r in caplog.records if "avatar usage" in r.getMessage()]
    assert len(usage_lines) == 1 and usage_lines[0].endswith(usage.describe())

    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    for name in (
        "protoface.avatar.conversation",
        "protoface.avatar.join",
        "protoface.avatar.loss",
        "protoface.avatar.recovery",
        "protoface.avatar.switch",
    ):
        assert names.count(name) == 1, names
    by_name = {s.name: s for s in finished}
    root = by_name["protoface.avatar.conversation"]
    assert root.attributes is not None
    assert root.attributes["protoface.billable_seconds"] == pytest.approx(api_billable)
    assert root.attributes["protoface.sessions_started"] == 3
    assert root.attributes["protoface.switches"] == 1
    switch = by_name["protoface.avatar.switch"]
    assert switch.attributes is not None
    assert switch.attributes["protoface.session_id"] == switched.session_id
    assert switch.attributes["protoface.previous_avatar_id"] == "av_stock_001"
    assert switch.status.is_ok
    loss = by_name["protoface.avatar.loss"]
    assert loss.attributes is not None and loss.attributes["protoface.reason"] == "worker_lost"
    recovery = by_name["protoface.avatar.recovery"]
    assert recovery.attributes is not None and recovery.attributes["protoface.recovered"] is True
    for child in (
        "protoface.avatar.join",
        "protoface.avatar.loss",
        "protoface.avatar.recovery",
        "protoface.avatar.switch",
    ):
        parent = by_name[child].parent
        assert parent is not None and parent.span_id == root.context.span_id

    after = _points(reader)

    def delta(name: str) -> float:
        return _total(after, name) - _total(before, name)

    assert delta("protoface.avatar.billable_seconds") == pytest.approx(api_billable)
    assert delta("protoface.avatar.sessions") == 3
    outcomes = {str(attrs["protoface.outcome"]) for attrs, _ in after["protoface.avatar.sessions"]}
    assert {"failed", "ended"} <= outcomes
    assert delta("protoface.avatar.losses") == 1
    assert delta("protoface.avatar.time_without_avatar") > 0
    assert "protoface.avatar.join_latency" in after
    assert "protoface.avatar.first_frame_latency" in after
    if spoke_during_loss:
        assert delta("protoface.avatar.speech_without_avatar") > 0.5

    # Nothing exported holds a secret: every span (ours and livekit-agents'),
    # every metric point, the log records.
    worker_tokens = [
        json.loads(r.body)["transport"]["worker_token"]
        for r in emulator.requests.matching("POST /v1/sessions")
        if r.body
    ]
    assert len(worker_tokens) >= 3
    secrets = [emulator.api_key, livekit_server.api_secret, *worker_tokens]
    exported = "\n".join(s.to_json() for s in finished)
    data = reader.get_metrics_data()
    assert data is not None
    exported += data.to_json()
    exported += "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    for secret in secrets:
        assert secret and secret not in exported
    # And a token's signature alone (its last part) is nowhere either.
    for token in worker_tokens:
        assert token.rsplit(".", 1)[-1] not in exported


def test_without_a_provider_the_telemetry_is_opentelemetrys_no_op() -> None:
    # No SDK installed for this tracer: spans are non-recording stubs, at no cost.
    from opentelemetry import trace

    from livekit.plugins.protoface.telemetry import AvatarTelemetry

    set_tracer_provider(trace.NoOpTracerProvider())
    telemetry = AvatarTelemetry(avatar_id="av_stock_001", quality=None)
    telemetry.joined("sess_x", 0.5)
    telemetry.lost(protoface.AvatarLostEvent("sess_x", "worker_lost", "failed"))
    assert not telemetry._root.is_recording()  # what "off" means, pinned

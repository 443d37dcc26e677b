"""The LiveKit transport: defined once, parsed once, carried to the record and the worker."""

from __future__ import annotations

import dataclasses

from protoface_emulator.api.decoding import JSONObject
from protoface_emulator.api.requests import parse_session_create
from protoface_emulator.lifecycle import LiveKitTransport, WorkerSpec

_SENT: dict[str, str | bool] = {
    "type": "livekit",
    "url": "wss://x.livekit.cloud",
    "room_name": "room-1",
    "worker_token": "secret-worker-jwt",
    "worker_identity": "avatar-1",
    "audio_source": "track",
    "subscribe_to_identity": "agent-1",
    "synthetic_audio_if_no_input": True,
}
_BODY: JSONObject = {"avatar_id": "av_stock_001", "transport": dict(_SENT)}


def test_every_field_the_request_sends_is_parsed_into_the_transport() -> None:
    transport = parse_session_create(_BODY).transport
    sent = dict(_SENT)
    assert sent.pop("type") == "livekit"
    assert dataclasses.asdict(transport) == sent


def test_the_view_is_the_request_without_the_token() -> None:
    transport = parse_session_create(_BODY).transport
    sent = dict(_SENT)
    del sent["worker_token"]
    assert transport.view() == sent
    assert list(transport.view()) == list(sent)
    assert "secret-worker-jwt" not in repr(transport)


def test_a_record_transport_read_by_key_as_in_0_1_0_still_reads() -> None:
    transport = parse_session_create(_BODY).transport
    assert transport["room_name"] == "room-1"
    assert transport.get("worker_identity") == "avatar-1"
    assert transport.get("worker_token") is None  # never shown, as before
    assert transport.get("missing", "default") == "default"


def test_every_transport_field_reaches_the_worker_spec() -> None:
    transport = parse_session_create(_BODY).transport
    spec = WorkerSpec.for_session(
        "sess_1", transport, quality="lite", avatar_id="av_stock_002", avatar_image=None
    )
    assert spec == WorkerSpec(
        session_id="sess_1",
        url="wss://x.livekit.cloud",
        room_name="room-1",
        identity="avatar-1",
        audio_source="track",
        quality="lite",
        subscribe_to_identity="agent-1",
        synthetic_audio_if_no_input=True,
        avatar_id="av_stock_002",
        token="secret-worker-jwt",
    )
    assert spec.token == transport.worker_token
    assert len(LiveKitTransport.field_names()) == len(_SENT) - 1

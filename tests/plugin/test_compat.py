"""The livekit-agents internals `compat.py` relies on are still there.

If an upgrade of livekit-agents removes or renames one, this fails with the
name of what went missing, instead of the plugin failing silently in a call.
"""

from __future__ import annotations

import asyncio
import inspect

from livekit import rtc
from livekit.agents.voice import room_io
from livekit.agents.voice.avatar import DataStreamAudioOutput

from livekit.plugins.protoface import compat


def test_participant_audio_output_is_still_exported_by_room_io() -> None:
    assert "_ParticipantAudioOutput" in room_io.__all__
    assert compat.ParticipantAudioOutput is room_io._ParticipantAudioOutput
    params = inspect.signature(compat.ParticipantAudioOutput.__init__).parameters
    assert {"room", "sample_rate", "num_channels", "track_publish_options"} <= set(params)
    assert isinstance(inspect.getattr_static(compat.ParticipantAudioOutput, "subscribed"), property)


async def test_datastream_output_still_waits_for_its_avatar_in_start_atask() -> None:
    room = rtc.Room()  # unconnected: the output only sets itself up
    output = DataStreamAudioOutput(room, destination_identity="nobody")
    assert hasattr(output, "_start_atask"), "DataStreamAudioOutput._start_atask is gone"
    assert compat.stop_waiting_for_avatar(output) is None  # nothing started yet

    started = asyncio.ensure_future(asyncio.sleep(3600))
    output._start_atask = started  # what its first capture_frame would set
    assert compat.stop_waiting_for_avatar(output) is started
    started.cancel()


async def test_participant_audio_output_still_keeps_its_publication() -> None:
    source = inspect.getsource(compat.ParticipantAudioOutput.__init__)
    assert "self._publication" in source, "_ParticipantAudioOutput._publication is gone"
    output = compat.ParticipantAudioOutput(
        rtc.Room(),
        sample_rate=16000,
        num_channels=1,
        track_publish_options=rtc.TrackPublishOptions(),
    )
    assert compat.published_track_sid(output) is None  # not published yet

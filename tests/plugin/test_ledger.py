"""The ledger of utterances and segments (ledger.py), on its own: plain bookkeeping."""

from __future__ import annotations

from livekit import rtc

from livekit.plugins.protoface.ledger import Ledger, Segment, Utterance

RATE = 16000


def frame(ms: int = 20) -> rtc.AudioFrame:
    samples = RATE * ms // 1000
    data = bytes(range(256)) * (samples * 2 // 256 + 1)
    return rtc.AudioFrame(data[: samples * 2], RATE, 1, samples)


def test_frame_at_resumes_mid_frame() -> None:
    utterance = Utterance(frames=[frame(), frame()], captured=0.04)
    first, end = utterance.frame_at(0.0) or (None, 0.0)
    assert first is not None and first.samples_per_channel == 320 and end == 0.02
    part, end = utterance.frame_at(0.03) or (None, 0.0)
    assert part is not None and part.samples_per_channel == 160 and abs(end - 0.04) < 1e-9
    assert utterance.frame_at(0.04) is None


def test_the_oldest_utterance_not_fully_sent_is_sent_first() -> None:
    ledger = Ledger()
    done = ledger.begin()
    done.captured, done.cursor, done.input_done = 1.0, 1.0, True
    cleared = ledger.begin()
    cleared.cleared = True
    live = ledger.begin()
    assert ledger.sending() is live
    live.input_done = True
    assert ledger.sending() is None  # captured nothing, flushed: nothing left to send


def test_reports_are_matched_to_segments_in_order() -> None:
    ledger = Ledger()
    utterance = ledger.begin()
    keep_alive = Segment(None, 0.0)
    ledger.segments.append(keep_alive)
    segment = ledger.open_segment(utterance)
    assert ledger.next_to_start() is keep_alive
    assert ledger.next_to_start() is segment
    assert ledger.next_to_start() is None
    assert ledger.next_to_finish() is keep_alive
    assert ledger.next_to_finish() is segment
    assert ledger.open is None  # the route ended it
    assert ledger.next_to_finish() is None


def test_a_new_route_owes_only_its_keep_alives() -> None:
    ledger = Ledger()
    ledger.open_segment(ledger.begin())
    answered = Segment(None, 0.0, started_at=1.0)
    owed = Segment(None, 0.0)
    ledger.new_route([answered, owed])
    assert ledger.segments == [answered, owed] and ledger.started == 1 and ledger.open is None
    assert ledger.next_to_start() is owed


def test_a_settled_utterance_leaves_and_drops_its_frames() -> None:
    ledger = Ledger()
    utterance = ledger.begin()
    utterance.frames.append(frame())
    ledger.remove(utterance)
    assert ledger.utterances == [] and ledger.capturing is None and utterance.frames == []

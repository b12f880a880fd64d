"""A channel's timeline: packets placed by timestamp, gaps as silence, one wall clock."""

from __future__ import annotations

from recorder.capture.timeline import Timeline

RATE, SLOT = 8000, 80  # 10 ms slots, as for G.711
STEP = SLOT / RATE


def _timeline() -> Timeline[str]:
    return Timeline(rate=RATE, slot=SLOT, start=100.0, reorder_s=0.05)


def _send(line: Timeline[str], index: int, *, at: float, ssrc: int = 1, base: int = 0) -> None:
    line.receive(ssrc=ssrc, timestamp=base + index * SLOT, slots=[f"p{index}"], now=at)


def test_packets_in_order_fill_their_slots() -> None:
    line = _timeline()
    for i in range(10):
        _send(line, i, at=100.0 + i * STEP)

    assert line.take(line.playout_slot(100.2)) == [f"p{i}" for i in range(10)] + [None] * 5


def test_reordering_within_the_allowance_is_absorbed_and_later_packets_dropped() -> None:
    line = _timeline()
    _send(line, 0, at=100.0)
    _send(line, 2, at=100.02)
    _send(line, 1, at=100.03)  # 10 ms out of order: within the 50 ms allowance
    assert line.take(line.playout_slot(100.08)) == ["p0", "p1", "p2"]
    _send(line, 4, at=100.04)
    _send(line, 5, at=100.05)
    assert line.take(line.playout_slot(100.11)) == [None, "p4", "p5"]
    _send(line, 3, at=100.12)  # its slot went out already

    assert line.stats.late == 1
    assert line.take(line.playout_slot(100.12)) == [None]


def test_a_duplicate_is_dropped() -> None:
    line = _timeline()
    _send(line, 0, at=100.0)
    _send(line, 0, at=100.001)

    assert line.stats.duplicates == 1
    assert line.take(1) == ["p0"]


def test_a_late_start_is_silence_before_the_first_packet() -> None:
    line = _timeline()
    _send(line, 0, at=101.0, base=123_456)  # the sender's clock starts anywhere
    _send(line, 1, at=101.01, base=123_456)

    slots = line.take(line.end_slot(101.02))
    assert slots[:100] == [None] * 100
    assert slots[100:102] == ["p0", "p1"]


def test_timestamps_wrap_around_without_a_jump() -> None:
    line = _timeline()
    base = (1 << 32) - 2 * SLOT
    for i in range(4):
        _send(line, i, at=100.0 + i * STEP, base=base)
    _send(line, 4, at=100.04, base=base - (1 << 32))  # 32-bit wrap: small again

    assert line.take(line.end_slot(100.05)) == ["p0", "p1", "p2", "p3", "p4"]
    assert line.stats.resyncs == 0


def test_a_new_sender_is_anchored_at_its_arrival() -> None:
    line = _timeline()
    _send(line, 0, at=100.0, ssrc=1)
    _send(line, 0, at=100.5, ssrc=2, base=999_999)  # SSRC change, unrelated timestamps

    slots = line.take(line.end_slot(100.51))
    assert slots[0] == "p0"
    assert slots[50] == "p0"
    assert slots.count(None) == len(slots) - 2


def test_a_timestamp_jump_far_from_the_wall_clock_anchors_again() -> None:
    line = _timeline()
    _send(line, 0, at=100.0)
    _send(line, 1, at=100.01, base=RATE * 3600)  # an hour ahead: the sender restarted

    assert line.stats.resyncs == 1
    assert line.take(line.end_slot(100.02)) == ["p0", "p1"]


def test_ending_hands_out_what_is_buffered_and_silence_up_to_now() -> None:
    line = _timeline()
    _send(line, 0, at=100.0)
    _send(line, 1, at=100.01)

    assert line.take(line.end_slot(100.05)) == ["p0", "p1", None, None, None]

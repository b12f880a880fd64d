"""Packets received and lost on one channel, from RTP sequence numbers."""

from __future__ import annotations

from recorder.capture.reception import Reception


def _feed(reception: Reception, sequences: list[int], ssrc: int = 1) -> Reception:
    for sequence in sequences:
        reception.receive(ssrc=ssrc, sequence=sequence)
    return reception


def test_nothing_received_nothing_expected() -> None:
    reception = Reception()
    assert (reception.received, reception.expected, reception.lost) == (0, 0, 0)


def test_gaps_are_lost_and_reordering_is_not() -> None:
    reception = _feed(Reception(), [10, 12, 11, 13, 16, 17])  # 14 and 15 never came

    assert (reception.received, reception.expected, reception.lost) == (6, 8, 2)


def test_sequence_numbers_wrap_around() -> None:
    reception = _feed(Reception(), [65534, 65535, 1, 2])  # 0 never came

    assert (reception.received, reception.expected, reception.lost) == (4, 5, 1)


def test_duplicates_do_not_hide_loss_of_other_runs_or_go_negative() -> None:
    reception = _feed(Reception(), [5, 5, 5, 6])

    assert reception.lost == 0
    _feed(reception, [100, 102], ssrc=2)  # a restarted sender: 101 lost
    assert (reception.received, reception.expected, reception.lost) == (6, 5, 1)


def test_a_new_ssrc_starts_a_run_whose_counts_add_up() -> None:
    reception = _feed(Reception(), [1, 3])  # 2 lost
    _feed(reception, [900, 901, 903], ssrc=7)  # 902 lost

    assert (reception.received, reception.expected, reception.lost) == (5, 7, 2)

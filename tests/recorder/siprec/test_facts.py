"""What the recording server reads from a request: call id, parties, codec, caller consent."""

from __future__ import annotations

import pytest

from recorder.siprec.facts import (
    CallerConsent,
    call_id_of,
    caller_consent,
    choose_formats,
    parties_of,
)
from recorder.siprec.metadata import Metadata, Participant
from recorder.siprec.sdp import parse_sdp
from tests.recorder.siprec.src import sdp


def _metadata(session_id: str | None, *aors: str) -> Metadata:
    participants = [Participant(id=f"p{n}", aors=[aor], name=None) for n, aor in enumerate(aors)]
    return Metadata(session_id=session_id, participants=participants, stream_labels={}, sends={})


def test_the_call_id_is_the_session_id_else_the_call_id() -> None:
    assert call_id_of(_metadata("ab30317f1a784dc4"), "x@host") == "ab30317f1a784dc4"
    assert (
        call_id_of(_metadata(None), "a84b4c76e66710@pc33.example") == "a84b4c76e66710@pc33.example"
    )
    assert call_id_of(None, " c-1 ") == "c-1"
    # A session id callrec's call control could not name falls back to the Call-ID.
    assert call_id_of(_metadata("hVpd7YQg/RW2nD22h7q60JQ=="), "c-2") == "c-2"
    assert call_id_of(None, "has space") is None
    assert call_id_of(None, None) is None


def test_parties_are_the_first_two_participants_else_from_and_to() -> None:
    metadata = _metadata("s", "sip:+14155550100@a", "tel:+14155550199", "sip:+1415555@c")
    assert parties_of(metadata, "<sip:src@h>", "<sip:acme@h>") == (
        "sip:+14155550100@a",
        "tel:+14155550199",
    )
    one = _metadata("s", "sip:+14155550100@a")
    assert parties_of(one, '"Src" <sip:+1415@h>;tag=9', "sip:acme@h;tag=2") == (
        "sip:+1415@h",
        "sip:acme@h",
    )
    assert parties_of(None, None, None) == ("", "")


def test_one_codec_for_the_call_offered_on_every_stream() -> None:
    offer = parse_sdp(sdp([9000, 9002], formats="18 8 0 101"))
    chosen = choose_formats(offer, [0, 1])
    assert chosen is not None
    codec, formats = chosen
    assert codec.name == "pcma"  # G.729 first, but callrec does not take it
    assert {i: f.pt for i, f in formats.items()} == {0: 8, 1: 8}
    assert choose_formats(parse_sdp(sdp([9000], formats="18 101")), [0]) is None
    # PCMU on one stream, PCMA on the other: no codec the whole call can be kept in.
    mixed = parse_sdp(sdp([9000], formats="0") + "m=audio 9002 RTP/AVP 8\r\n")
    assert choose_formats(mixed, [0, 1]) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("accepted; method=dtmf; notice=v1", CallerConsent(True, "dtmf", "v1")),
        ('Declined;method=speech;notice="2026-11"', CallerConsent(False, "speech", "2026-11")),
        ("accepted; method=fax; notice=v1", None),
        ("accepted; method=dtmf", None),
        ("maybe; method=dtmf; notice=v1", None),
        ("", None),
        (None, None),
    ],
)
def test_the_callers_answer_in_band(header: str | None, expected: CallerConsent | None) -> None:
    assert caller_consent(header) == expected

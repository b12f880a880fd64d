"""SDP offers as recording clients write them, and the recvonly answers callrec gives."""

from __future__ import annotations

import pytest

from recorder.siprec.sdp import (
    PayloadFormat,
    SdpError,
    UnacceptableMedia,
    answer_sdp,
    choose_format,
    choose_formats,
    parse_sdp,
)

HEAD = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
HOLD = "0.0.0.0"  # noqa: S104 - an SDP hold address, nothing binds to it
OFFER = (
    "v=0\r\n"
    "o=SBC 1000 1001 IN IP4 192.0.2.10\r\n"
    "s=SIPREC\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 20000 RTP/AVP 0 8 101\r\n"
    "c=IN IP4 192.0.2.20\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=label:1\r\n"
    "a=sendonly\r\n"
    "a=ptime:20\r\n"
    "m=audio 20002 RTP/AVP 8 0\r\n"
    "a=label:2\r\n"
    "a=sendonly\r\n"
)


def test_an_offer_with_two_labelled_streams() -> None:
    offer = parse_sdp(OFFER)
    assert offer.origin == "SBC 1000 1001 IN IP4 192.0.2.10"
    assert offer.address == "192.0.2.10"
    first, second = offer.streams
    assert (first.index, first.media, first.port, first.proto) == (0, "audio", 20000, "RTP/AVP")
    assert first.address == "192.0.2.20"  # media-level c= wins over the session's
    assert second.address == "192.0.2.10"
    assert [f.name for f in first.formats] == ["PCMU", "PCMA", "telephone-event"]
    assert first.formats[2] == PayloadFormat(101, "telephone-event", 8000, 1, "0-15")
    assert (first.label, second.label) == ("1", "2")
    assert (first.direction, first.ptime, second.ptime) == ("sendonly", 20, None)
    assert first.sending and second.sending


def test_lf_only_and_trailing_spaces_are_read() -> None:
    sloppy = OFFER.replace("\r\n", "  \n")
    assert parse_sdp(sloppy) == parse_sdp(OFFER)


def test_static_payload_types_need_no_rtpmap() -> None:
    text = HEAD + "m=audio 4000 RTP/AVP 9 0 8 13\n"
    formats = parse_sdp(text).streams[0].formats
    assert [(f.pt, f.name, f.rate) for f in formats] == [
        (9, "G722", 8000),
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (13, "CN", 8000),
    ]


def test_ipv6_and_hold_addresses_are_recorded_as_written() -> None:
    text = (
        "v=0\no=- 1 1 IN IP6 2001:db8::1\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\n"
        "m=audio 4000 RTP/AVP 0\n"
        "m=audio 4002 RTP/AVP 0\nc=IN IP4 0.0.0.0\n"
    )
    first, held = parse_sdp(text).streams
    assert first.address == "2001:db8::1"
    assert held.address == HOLD
    assert first.sending and not held.sending


def test_directions_default_to_sendrecv_and_media_level_wins() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\na=inactive\n"
        "m=audio 4000 RTP/AVP 0\n"
        "m=audio 4002 RTP/AVP 0\na=sendonly\n"
    )
    assert [s.direction for s in parse_sdp(text).streams] == ["inactive", "sendonly"]
    plain = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"
    assert parse_sdp(plain).streams[0].direction == "sendrecv"


def test_a_rejected_stream_and_a_non_rtp_stream() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
        "m=audio 0 RTP/AVP 0\n"
        "m=application 5000 TCP/BFCP *\n"
        "m=audio 4002 RTP/AVP 8\n"
    )
    rejected, bfcp, audio = parse_sdp(text).streams
    assert rejected.port == 0 and not rejected.sending
    assert choose_format(rejected) is None
    assert bfcp.formats == [] and bfcp.format_tokens == ["*"]
    assert choose_format(bfcp) is None
    assert choose_format(audio) == PayloadFormat(8, "PCMA", 8000)


def test_choose_format_takes_the_offerers_first_that_the_capture_takes() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
        "m=audio 4000 RTP/AVP 18 111 8 0\na=rtpmap:111 OPUS/48000/2\na=fmtp:111 useinbandfec=1\n"
    )
    stream = parse_sdp(text).streams[0]
    assert choose_format(stream) == PayloadFormat(111, "OPUS", 48000, 2, "useinbandfec=1")
    assert choose_format(stream, ["PCMU", "PCMA"]) == PayloadFormat(8, "PCMA", 8000)
    assert choose_format(stream, ["G722"]) is None


def test_srtp_streams_are_not_taken() -> None:
    text = HEAD + (
        "m=audio 4000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
        "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\n"
        "m=audio 4002 UDP/TLS/RTP/SAVPF 0\n"
        "m=audio 4004 rtp/avp 0\n"
    )
    offer = parse_sdp(text)
    assert sorted(choose_formats(offer)) == [2]
    with pytest.raises(UnacceptableMedia):
        choose_formats(parse_sdp(HEAD + "m=audio 4000 RTP/SAVP 0\n"))


def test_no_format_we_take_is_unacceptable() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 18 4\n"
    )
    with pytest.raises(UnacceptableMedia):
        choose_formats(parse_sdp(text))
    video = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=video 4000 RTP/AVP 0\n"
    with pytest.raises(UnacceptableMedia):
        choose_formats(parse_sdp(video))


def test_the_answer_mirrors_the_offer_with_one_format_per_accepted_stream() -> None:
    text = OFFER + "m=video 30000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    offer = parse_sdp(text)
    formats = choose_formats(offer)
    assert sorted(formats) == [0, 1]
    answer = answer_sdp(
        offer, address="127.0.0.1", ports={0: 40000, 1: 40002}, formats=formats,
        session_id=7, version=1,
    )  # fmt: skip
    assert answer.endswith("\r\n")
    lines = answer.split("\r\n")[:-1]
    assert lines[:5] == [
        "v=0",
        "o=callrec 7 1 IN IP4 127.0.0.1",
        "s=callrec",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
    ]
    assert lines[5:] == [
        "m=audio 40000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=label:1",
        "a=recvonly",
        "m=audio 40002 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
        "a=label:2",
        "a=recvonly",
        "m=video 0 RTP/AVP 96",
    ]
    # The answer is itself a valid SDP with as many m= lines, in the same order.
    parsed = parse_sdp(answer)
    assert [s.media for s in parsed.streams] == ["audio", "audio", "video"]
    assert [s.direction for s in parsed.streams[:2]] == ["recvonly", "recvonly"]
    assert [s.label for s in parsed.streams] == ["1", "2", None]


def test_the_answer_rejects_streams_without_a_port_and_speaks_ipv6() -> None:
    offer = parse_sdp(OFFER)
    answer = answer_sdp(
        offer, address="::1", ports={1: 40002}, formats={1: offer.streams[1].formats[0]},
        session_id=1, version=2,
    )  # fmt: skip
    parsed = parse_sdp(answer)
    assert [s.port for s in parsed.streams] == [0, 40002]
    assert parsed.address == "::1"
    assert "c=IN IP6 ::1" in answer
    assert parsed.streams[0].format_tokens == ["0", "8", "101"]


def test_opus_answer_keeps_the_matching_telephone_event() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
        "m=audio 4000 RTP/AVP 111 101 110\na=rtpmap:111 opus/48000/2\n"
        "a=rtpmap:101 telephone-event/8000\na=rtpmap:110 telephone-event/48000\n"
        "a=fmtp:110 0-16\n"
    )
    offer = parse_sdp(text)
    answer = answer_sdp(
        offer, address="127.0.0.1", ports={0: 40000}, formats=choose_formats(offer),
        session_id=1, version=1,
    )  # fmt: skip
    assert "m=audio 40000 RTP/AVP 111 110\r\n" in answer
    assert "a=rtpmap:111 opus/48000/2\r\na=rtpmap:110 telephone-event/48000\r\n" in answer
    assert "a=fmtp:110 0-16\r\n" in answer


def test_an_answer_that_accepts_nothing_is_unacceptable() -> None:
    with pytest.raises(UnacceptableMedia):
        answer_sdp(parse_sdp(OFFER), address="127.0.0.1", ports={}, formats={},
                   session_id=1, version=1)  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "o=- 1 1 IN IP4 10.0.0.1\nv=0\n",
        "v=1\n",
        "v=0\nthis is not sdp\n",
        "v=0\nm=audio\n",
        "v=0\nm=audio port RTP/AVP 0\n",
        "v=0\nm=audio 70000 RTP/AVP 0\n",
        "v=0\nm=audio 4000 RTP/AVP PCMU\n",
        "v=0\nm=audio 4000 RTP/AVP 300\n",
        "v=0\nc=IN IP4\n",
        "v=0\nc=ATM NSAP 47.0005\n",
        "v=0\n" + "m=audio 4000 RTP/AVP 0\n" * 40,
        "v=0\nm=audio 4000 RTP/AVP " + " ".join(["0"] * 100) + "\n",
        "v=0\n" + "a=x\n" * 40_000,
    ],
)
def test_nonsense_is_an_sdp_error(text: str) -> None:
    with pytest.raises(SdpError):
        parse_sdp(text)


def test_malformed_attributes_are_skipped_not_fatal() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
        "m=audio 4000 RTP/AVP 0 96\na=rtpmap:96 garbage\na=rtpmap:x PCMU/8000\n"
        "a=ptime:abc\na=fmtp:zz 1\na=rtpmap:0 PCMU/eight\n"
    )
    stream = parse_sdp(text).streams[0]
    assert [(f.pt, f.name) for f in stream.formats] == [(0, "PCMU"), (96, "")]
    assert stream.ptime is None

"""Recording metadata in the forms clients send, and the XML it refuses."""

from __future__ import annotations

import pytest

from recorder.siprec.metadata import (
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_METADATA_BYTES,
    Metadata,
    MetadataError,
    Participant,
    channel_order,
    parse_metadata,
    stream_senders,
)
from recorder.siprec.sdp import parse_sdp

RFC = "urn:ietf:params:xml:ns:recording:1"
DRAFT = "urn:ietf:params:xml:ns:recording"
BROADWORKS = "urn:ietf:params:xml:ns:siprec"

INNER = (
    "<session session_id='s'><sipSessionID>abc123;remote=def456</sipSessionID></session>"
    "<participant participant_id='p1'><nameID aor='sip:+15550001@x'><name>One</name></nameID>"
    "</participant>"
    "<participant participant_id='p2'><nameID aor='tel:+15550002'/></participant>"
    "<stream stream_id='s1' session_id='s'><label>L1</label></stream>"
    "<stream stream_id='s2' session_id='s'><label>L2</label></stream>"
    "<participantstreamassoc participant_id='p1'><send>s1</send><recv>s2</recv>"
    "</participantstreamassoc>"
    "<participantstreamassoc participant_id='p2'><send>s2</send><recv>s1</recv>"
    "</participantstreamassoc>"
)
EXPECTED = Metadata(
    session_id="abc123",
    participants=[
        Participant("p1", ["sip:+15550001@x"], "One"),
        Participant("p2", ["tel:+15550002"], None),
    ],
    stream_labels={"s1": "L1", "s2": "L2"},
    sends={"p1": ["s1"], "p2": ["s2"]},
    recvs={"p1": ["s2"], "p2": ["s1"]},
)

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\na=label:L2\r\n"
    "m=audio 4002 RTP/AVP 0\r\na=label:L1\r\n"
)


@pytest.mark.parametrize("namespace", [RFC, DRAFT, BROADWORKS, "urn:example:vendor-own"])
def test_any_recording_namespace(namespace: str) -> None:
    xml = f"<?xml version='1.0'?><recording xmlns='{namespace}'>{INNER}</recording>"
    assert parse_metadata(xml.encode()) == EXPECTED


def test_no_namespace_at_all() -> None:
    assert parse_metadata(f"<recording>{INNER}</recording>".encode()) == EXPECTED


def test_a_prefixed_namespace() -> None:
    prefixed = INNER.replace("<", "<rs:").replace("<rs:/", "</rs:")
    xml = f"<rs:recording xmlns:rs='{RFC}'>{prefixed}</rs:recording>"
    assert parse_metadata(xml.encode()) == EXPECTED


def test_element_and_attribute_names_in_any_case() -> None:
    xml = (
        f"<Recording xmlns='{RFC}'><Participant Participant_ID='p1'>"
        "<NameID AOR='sip:+1@x'/></Participant></Recording>"
    )
    assert parse_metadata(xml.encode()).participants == [Participant("p1", ["sip:+1@x"], None)]


def test_draft_forms_aor_elements_and_send_inside_participant() -> None:
    xml = (
        f"<recording xmlns='{DRAFT}'><dataMode>complete</dataMode>"
        "<participant id='a' session='s'><aor>sip:+4410@x</aor><aor> tel:+4410 </aor>"
        "<name>A</name><send>sa</send><recv>sb</recv></participant>"
        "<participant id='b' session='s'><nameID><aor>sip:+4420@x</aor><name>B</name></nameID>"
        "<send>sb</send></participant>"
        "<stream id='sa' session='s' label='la'/>"
        "<stream id='sb' session='s'><label>lb</label><mode>separate</mode></stream>"
        "</recording>"
    )
    metadata = parse_metadata(xml.encode())
    assert metadata.session_id is None
    assert metadata.participants == [
        Participant("a", ["sip:+4410@x", "tel:+4410"], "A"),
        Participant("b", ["sip:+4420@x"], "B"),
    ]
    assert metadata.sends == {"a": ["sa"], "b": ["sb"]}
    assert metadata.recvs == {"a": ["sb"]}
    assert metadata.stream_labels == {"sa": "la", "sb": "lb"}


def test_vendor_extensions_are_ignored() -> None:
    xml = (
        f"<recording xmlns='{RFC}' xmlns:v='urn:example:vendor'>"
        "<v:participant participant_id='ghost'><v:nameID aor='sip:ghost@x'/></v:participant>"
        "<extensiondata><participant participant_id='hidden'><nameID aor='sip:h@x'/>"
        "</participant></extensiondata>"
        "<participant participant_id='p1'><nameID aor='sip:+1@x'/>"
        "<v:send>sv</v:send><v:nameID aor='sip:vendor@x'/></participant>"
        "<v:sipSessionID>vendor-session</v:sipSessionID>"
        "</recording>"
    )
    metadata = parse_metadata(xml.encode())
    assert metadata.participants == [Participant("p1", ["sip:+1@x"], None)]
    assert metadata.sends == {}
    assert metadata.session_id is None


def test_participants_without_ids_and_repeated_ones() -> None:
    xml = (
        "<recording><participant><aor>sip:+1@x</aor></participant>"
        "<participant id='p'><aor>sip:+2@x</aor></participant>"
        "<participant id='p'><aor>sip:+3@x</aor><aor>sip:+2@x</aor><name>P</name></participant>"
        "</recording>"
    )
    assert parse_metadata(xml.encode()).participants == [
        Participant("participant-1", ["sip:+1@x"], None),
        Participant("p", ["sip:+2@x", "sip:+3@x"], "P"),
    ]


def test_a_partial_update_with_a_departure() -> None:
    xml = (
        f"<recording xmlns='{RFC}'><datamode>partial</datamode>"
        "<participantsessionassoc participant_id='p2' session_id='s'>"
        "<disassociate-time>2026-12-06T10:00:00Z</disassociate-time>"
        "</participantsessionassoc></recording>"
    )
    metadata = parse_metadata(xml.encode())
    assert metadata.partial
    assert metadata.departed == ["p2"]
    assert metadata.participants == []


def test_utf16_metadata_is_read() -> None:
    xml = f"<?xml version='1.0' encoding='UTF-16'?><recording>{INNER}</recording>"
    assert parse_metadata(xml.encode("utf-16")) == EXPECTED


def test_channel_order_follows_the_participants_through_labels() -> None:
    offer = parse_sdp(SDP)
    metadata = parse_metadata(f"<recording>{INNER}</recording>".encode())
    # p1 sends s1, labelled L1: the second m= line; p2's L2 is the first.
    assert channel_order(offer, metadata) == [1, 0]
    assert stream_senders(offer, metadata) == {
        1: metadata.participants[0],
        0: metadata.participants[1],
    }
    assert channel_order(offer, None) == [0, 1]


def test_channel_order_without_usable_mapping_is_m_line_order() -> None:
    offer = parse_sdp(SDP)
    no_sends = Metadata(None, [Participant("p", [], None)], {}, {})
    assert channel_order(offer, no_sends) == [0, 1]
    unknown_stream = Metadata(None, [Participant("p", [], None)], {"s": "nope"}, {"p": ["s"]})
    assert channel_order(offer, unknown_stream) == [0, 1]


def test_channel_order_matches_a_send_that_names_the_label_itself() -> None:
    offer = parse_sdp(SDP)
    metadata = Metadata(None, [Participant("p", [], None)], {}, {"p": ["l1"]})
    assert channel_order(offer, metadata) == [1, 0]  # labels compare case-insensitively


def test_channel_order_leaves_out_rejected_and_non_audio_streams() -> None:
    offer = parse_sdp(
        SDP + "m=audio 0 RTP/AVP 0\r\na=label:L3\r\nm=video 5000 RTP/AVP 96\r\n"
        "m=audio 4004 RTP/AVP 0\r\n"
    )
    metadata = parse_metadata(f"<recording>{INNER}</recording>".encode())
    assert channel_order(offer, metadata) == [1, 0, 4]


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<recording><participant><aor>&lol3;</aor></participant></recording>"
)


@pytest.mark.parametrize(
    "xml",
    [
        b"",
        b"not xml at all",
        b"\x00\x01\x02\xff",
        b"<recording><participant><name>Smith & Sons</name></participant></recording>",
        b"<recording><participant><name>&nbsp;</name></participant></recording>",
        b"<recording><participant></recording>",
        b"<html><body/></html>",
        b"<!DOCTYPE recording><recording/>",
        BILLION_LAUGHS,
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><recording>&x;</recording>',
        b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><recording/>',
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "b">]><recording/>'.encode(
            "utf-16"
        ),
        b"<recording>" + b"<a>" * (MAX_DEPTH + 1) + b"</a>" * (MAX_DEPTH + 1) + b"</recording>",
        b"<recording>" + b"<x/>" * MAX_ELEMENTS + b"</recording>",
        b"<recording>" + b" " * MAX_METADATA_BYTES + b"</recording>",
        b'<?xml version="1.0" encoding="x-unknown"?><recording/>',
    ],
)
def test_unreadable_metadata_is_a_metadata_error(xml: bytes) -> None:
    with pytest.raises(MetadataError):
        parse_metadata(xml)

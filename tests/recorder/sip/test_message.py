"""The SIP parser: exact round trips, what sloppy equipment sends, and what it refuses."""

from __future__ import annotations

import pytest

from recorder.sip.message import (
    MAX_HEADERS,
    MAX_MESSAGE,
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    format_reason,
    header_params,
    parse,
    parse_cseq,
    parse_name_addr,
    parse_via,
    serialize,
    split_list,
    uri_user,
)
from tests.recorder.sip.messages import MULTIPART_BODY, OK_RESPONSE, SDP, invite, request


def test_a_siprec_invite_with_a_multipart_body_round_trips_exactly() -> None:
    data = invite()

    message = parse(data)

    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert message.uri == "sip:acme@127.0.0.1:5080;transport=udp"
    assert message.headers.get("call-id") == "a84b4c76e66710@src.example.com"
    assert message.headers.get("Content-Type") == 'multipart/mixed;boundary="uniqueBoundary"'
    assert message.body == MULTIPART_BODY
    assert serialize(message) == data


def test_a_response_with_two_vias_round_trips_exactly() -> None:
    message = parse(OK_RESPONSE)

    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (200, "OK")
    assert len(message.headers.get_all("via")) == 2
    assert message.body == SDP
    assert serialize(message) == OK_RESPONSE


def test_odd_spacing_and_folding_survive_a_round_trip_and_read_unfolded() -> None:
    data = (
        b"BYE sip:acme@127.0.0.1 SIP/2.0\r\n"
        b"Via :SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"Subject: a long\r\n"
        b"    subject line\r\n"
        b"\tthat goes on\r\n"
        b"f:<sip:src@127.0.0.1>;tag=1\r\n"
        b"t:   <sip:acme@127.0.0.1>;tag=2\r\n"
        b"i: x@y\r\n"
        b"CSeq:  3 BYE\r\n"
        b"l: 0\r\n"
        b"\r\n"
    )

    message = parse(data)

    assert serialize(message) == data
    assert message.headers.get("SUBJECT") == "a long subject line that goes on"
    assert message.headers.get("via") == "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1"
    assert message.headers.get("From") == "<sip:src@127.0.0.1>;tag=1"
    assert message.headers.get("to") == "<sip:acme@127.0.0.1>;tag=2"
    assert message.headers.get("Call-ID") == "x@y"
    assert message.headers.get("CSEQ") == "3 BYE"
    assert message.headers.get("content-length") == "0"


def test_every_compact_form_is_found_by_its_full_name() -> None:
    data = (
        b"INVITE sip:acme@h SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bKa\r\ni: c\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\n"
        b"m: <sip:a@h>\r\ne: gzip\r\nc: application/sdp\r\ns: hello\r\nk: timer\r\n"
        b"l: 0\r\nCSeq: 1 INVITE\r\n\r\n"
    )

    headers = parse(data).headers

    for name, value in [
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bKa"),
        ("Call-ID", "c"),
        ("From", "<sip:a@h>;tag=1"),
        ("To", "<sip:b@h>"),
        ("Contact", "<sip:a@h>"),
        ("Content-Encoding", "gzip"),
        ("Content-Type", "application/sdp"),
        ("Subject", "hello"),
        ("Supported", "timer"),
        ("Content-Length", "0"),
    ]:
        assert headers.get(name) == value, name
        assert headers.get(name.upper()) == value, name


def test_lf_only_line_ends_parse_and_come_back_as_crlf() -> None:
    data = invite().replace(b"\r\n", b"\n")

    message = parse(data)

    assert isinstance(message, SipRequest)
    assert message.headers.get("CSeq") == "1 INVITE"
    assert message.body == MULTIPART_BODY.replace(b"\r\n", b"\n")
    assert serialize(message) == invite().split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + message.body


def test_a_datagram_body_is_the_rest_of_the_datagram_whatever_content_length_says() -> None:
    longer = invite().replace(f"Content-Length: {len(MULTIPART_BODY)}".encode(), b"l: 10")
    shorter = invite().replace(f"Content-Length: {len(MULTIPART_BODY)}".encode(), b"l: 99999")
    missing = invite().replace(f"Content-Length: {len(MULTIPART_BODY)}\r\n".encode(), b"")

    for data in (longer, shorter, missing):
        message = parse(data)
        assert message.body == MULTIPART_BODY
        assert serialize(message) == data


def test_leading_blank_lines_and_a_missing_final_blank_line_are_tolerated() -> None:
    data = b"\r\n\r\nOPTIONS sip:acme@h SIP/2.0\r\nCall-ID: x\r\n"

    message = parse(data)

    assert isinstance(message, SipRequest)
    assert message.method == "OPTIONS"
    assert message.headers.get("call-id") == "x"
    assert message.body == b""


def test_a_latin1_display_name_is_read_and_written_back_unchanged() -> None:
    data = request("OPTIONS").replace(b"From: <", b'From: "M\xfcller" <')

    message = parse(data)

    assert (message.headers.get("from") or "").startswith('"Müller"')
    assert serialize(message) == data


def test_a_response_without_reason_phrase_parses() -> None:
    message = parse(b"SIP/2.0 180\r\nCall-ID: x\r\n\r\n")

    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (180, "")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n", "empty message"),
        (b"INVITE sip:a@h SIP/2.0\r\nVia: x", "truncated"),
        (b"INVITE sip:a@h SIP/2.0\r\nVia x\r\n\r\n", "bad header line"),
        (b"INVITE sip:a@h\r\n\r\n", "neither a request nor a response"),
        (b"INVITE sip:a@h HTTP/1.1\r\n\r\n", "bad SIP version"),
        (b"IN<VITE sip:a@h SIP/2.0\r\n\r\n", "bad method"),
        (b"INVITE nocolon SIP/2.0\r\n\r\n", "bad Request-URI"),
        (b"SIP/2.0 99 Low\r\n\r\n", "bad status code"),
        (b"SIP/2.0 7000 High\r\n\r\n", "bad status code"),
        (b"OPTIONS sip:a@h SIP/2.0\r\n folded-first\r\n\r\n", "folded line"),
        (b"OPTIONS sip:a@h SIP/2.0\r\nA: \x00\r\n\r\n", "NUL byte"),
        (b"OPTIONS sip:a@h SIP/2.0\r\nA: b\x07c\r\n\r\n", "control character"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "truncated"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad SIP version"),
    ],
)
def test_what_cannot_be_understood_raises_a_parse_error(data: bytes, message: str) -> None:
    with pytest.raises(SipParseError, match=message):
        parse(data)


def test_an_oversized_message_is_refused() -> None:
    data = invite(body=b"x" * MAX_MESSAGE)

    with pytest.raises(SipParseError, match="exceeds"):
        parse(data)


def test_too_many_headers_are_refused() -> None:
    many = "".join(f"X-H{n}: {n}\r\n" for n in range(MAX_HEADERS + 1))
    data = request("OPTIONS", extra=many)

    with pytest.raises(SipParseError, match="header lines"):
        parse(data)


def test_headers_set_replaces_in_place_and_remove_drops_all() -> None:
    headers = Headers([("Via", "a"), ("v", "b"), ("To", "t"), ("Via", "c")])

    headers.set("VIA", "z")
    assert list(headers) == [("VIA", "z"), ("To", "t")]
    headers.add("Via", "y")
    assert headers.get_all("v") == ["z", "y"]
    headers.remove("via")
    assert list(headers) == [("To", "t")]
    assert "to" in headers
    assert "via" not in headers


def test_a_changed_header_is_written_afresh_and_the_others_stay_as_read() -> None:
    data = request("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards:70")
    message = parse(data)

    message.headers.set("call-id", "changed")

    assert serialize(message) == data.replace(
        b"Call-ID: a84b4c76e66710@src.example.com", b"call-id: changed"
    )


def test_a_built_response_serializes_as_expected() -> None:
    response = SipResponse(
        486, "Busy Here", Headers([("Call-ID", "x"), ("Content-Length", "0")]), b""
    )

    assert (
        serialize(response) == b"SIP/2.0 486 Busy Here\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert parse(serialize(response)) == response


def test_uri_user() -> None:
    assert uri_user("sip:acme@127.0.0.1;transport=tcp") == "acme"
    assert uri_user("sips:acme@h:5061") == "acme"
    assert uri_user('"Acme" <sip:acme@h>;tag=1') == "acme"
    assert uri_user("sip:+15551234567;npdi@h;user=phone") == "+15551234567"
    assert uri_user("sip:user:secret@h") == "user"
    assert uri_user("sip:%61cme@h") == "acme"
    assert uri_user("tel:+15551234567;phone-context=example.com") == "+15551234567"
    assert uri_user("sip:h") is None
    assert uri_user("mailto:a@b") is None
    assert uri_user("nonsense") is None


def test_name_addr_and_params() -> None:
    quoted = parse_name_addr('"A, \\"B\\" <c>" <sip:a@h;transport=tcp>;tag=9;x="y;z"')
    assert quoted.display == 'A, \\"B\\" <c>'
    assert quoted.uri == "sip:a@h;transport=tcp"
    assert quoted.tag == "9"
    assert quoted.params["x"] == "y;z"

    bare = parse_name_addr("sip:a@h;TAG=7")
    assert (bare.display, bare.uri, bare.tag) == (None, "sip:a@h", "7")

    assert header_params("<sip:a@h;lr>;tag=1;expires") == {"tag": "1", "expires": None}
    with pytest.raises(SipParseError):
        parse_name_addr("<sip:a@h")


def test_via_cseq_and_lists() -> None:
    via = parse_via("SIP/2.0/udp 127.0.0.1:5060;branch=z9hG4bKx;rport, SIP/2.0/TCP other")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "127.0.0.1", 5060, "z9hG4bKx")
    assert via.params["rport"] is None
    ipv6 = parse_via("SIP/2.0/TCP [::1]:5080;branch=z9hG4bKy")
    assert (ipv6.host, ipv6.port) == ("[::1]", 5080)
    assert parse_via("SIP / 2.0 / TCP h").port is None
    for bad in ("", "SIP/2.0/UDP", "SIP/2.0 h", "SIP/2.0/UDP h:99999", "SIP/2.0/UDP [::1"):
        with pytest.raises(SipParseError):
            parse_via(bad)

    assert parse_cseq("  42   invite ") == parse_cseq("42 INVITE")
    assert parse_cseq("42 INVITE").number == 42
    for bad in ("INVITE", "x INVITE", "1 2 3", "4294967296 INVITE", "1 IN<"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)

    assert split_list('a, "b, c" <sip:x,y>, d') == ["a", '"b, c" <sip:x,y>', "d"]


def test_reason() -> None:
    assert format_reason(403, "no_consent") == 'SIP;cause=403;text="no_consent"'
    assert format_reason(403, 'a"b') == 'SIP;cause=403;text="a\\"b"'

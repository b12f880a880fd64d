"""Cutting SIP messages out of a TCP stream; streams that cannot be read are given up."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.sip.framing import StreamFramer
from recorder.sip.message import SipParseError, parse
from tests.recorder.sip.messages import MULTIPART_BODY, OK_RESPONSE, invite, request

STREAM = invite(transport="TCP") + b"\r\n\r\n" + request("BYE", to_tag="x") + OK_RESPONSE


def test_messages_split_at_every_byte_come_out_whole() -> None:
    for cut in range(1, len(STREAM)):
        framer = StreamFramer()
        messages = framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:])
        assert messages == [invite(transport="TCP"), request("BYE", to_tag="x"), OK_RESPONSE]


def test_byte_by_byte() -> None:
    framer = StreamFramer()

    messages = [m for i in range(len(STREAM)) for m in framer.feed(STREAM[i : i + 1])]

    assert len(messages) == 3
    assert all(parse(m) for m in messages)


def test_keep_alives_between_messages_are_counted_as_pings() -> None:
    framer = StreamFramer()

    messages = framer.feed(b"\r\n\r\n" + request("OPTIONS") + b"\r\n\r\n\r\n\r\n")

    assert messages == [request("OPTIONS")]
    assert framer.pings == 3


def test_a_stream_message_without_content_length_has_no_body() -> None:
    options = request("OPTIONS").replace(b"Content-Length: 0\r\n", b"")
    framer = StreamFramer()

    assert framer.feed(options + options) == [options, options]


def test_lf_only_heads_and_compact_length_are_framed() -> None:
    body = MULTIPART_BODY.replace(b"\r\n", b"\n")
    data = invite(transport="TCP", body=body).replace(b"\r\n", b"\n")
    data = data.replace(b"Content-Length:", b"l  :")

    assert StreamFramer().feed(data + data) == [data, data]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\n", "start line"),
        (b"GET / HTTP/1.1\r\n", "start line"),
        (
            request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: abc"),
            "Content-Length",
        ),
        (request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: -1"), "Content-Length"),
        (request("OPTIONS").replace(b"Content-Length: 0", b"l: 70000"), "exceeds"),
        (request("OPTIONS").replace(b"Content-Length: 0", b"l: 1\r\nl: 2"), "two different"),
        (b"OPTIONS sip:a@h SIP/2.0\r\nX: " + b"y" * 70000, "no end of head"),
    ],
)
def test_a_stream_that_cannot_be_read_is_given_up(data: bytes, problem: str) -> None:
    with pytest.raises(SipParseError, match=problem):
        StreamFramer().feed(data)


@settings(
    max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(st.binary(max_size=300), max_size=8), st.sampled_from([b"", STREAM]))
def test_any_bytes_frame_or_raise_the_parse_error(chunks: list[bytes], prefix: bytes) -> None:
    framer = StreamFramer()
    try:
        for chunk in [prefix, *chunks]:
            for message in framer.feed(chunk):
                assert len(message) <= framer.max_message
    except SipParseError:
        pass

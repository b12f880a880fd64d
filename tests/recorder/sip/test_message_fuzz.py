"""Generated SIP messages: well-formed ones round trip, broken ones raise SipParseError only.

10,500 examples in all (1,500 + 2,500 + 3,500 + 3,000).
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.sip.message import (
    SipParseError,
    SipRequest,
    header_params,
    parse,
    parse_cseq,
    parse_name_addr,
    parse_via,
    serialize,
    split_list,
    uri_user,
)
from tests.recorder.sip.messages import OK_RESPONSE, invite, request


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


TOKEN = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_!%*+~",
    min_size=1,
    max_size=12,
)
# Header values: printable ASCII and a few letters beyond it (SIP is UTF-8), no line end.
ALPHABET = "".join(chr(c) for c in range(0x20, 0x7F)) + "\täöüéñ€中"
VALUE = st.text(alphabet=ALPHABET, max_size=20).map(lambda v: v.strip(" \t"))
FOLD = st.text(alphabet=ALPHABET.replace(" ", "").replace("\t", ""), min_size=1, max_size=15)
SEPARATOR = st.sampled_from([": ", ":", " : ", ":   ", "\t:\t"])
NAMES = st.one_of(
    st.sampled_from(
        [
            "Via",
            "v",
            "From",
            "f",
            "To",
            "t",
            "Call-ID",
            "i",
            "CSeq",
            "Contact",
            "m",
            "Content-Type",
            "c",
            "Content-Length",
            "l",
            "Require",
            "Supported",
            "k",
            "X-Callrec-Jurisdiction",
        ]
    ),
    TOKEN,
)
CORPUS = [
    invite(),
    invite(transport="TCP"),
    OK_RESPONSE,
    request("BYE", to_tag="x"),
    request("OPTIONS"),
    request("CANCEL", cseq=1),
]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A well-formed message: request or response, any headers, any body."""
    if draw(st.booleans()):
        method = draw(TOKEN)
        uri = "sip:" + draw(TOKEN) + "@" + draw(TOKEN)
        start = f"{method} {uri} SIP/2.0"
    else:
        status = draw(st.integers(100, 699))
        start = f"SIP/2.0 {status} {draw(VALUE)}".rstrip(" ")
    lines = [start]
    for _ in range(draw(st.integers(0, 10))):
        line = draw(NAMES) + draw(SEPARATOR) + draw(VALUE)
        folds = draw(st.lists(FOLD, max_size=2))
        lines.append(line + "".join("\r\n " + fold for fold in folds))
    body = draw(st.binary(max_size=200))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@fuzz(1500)
@given(messages())
def test_well_formed_messages_round_trip_exactly(data: bytes) -> None:
    message = parse(data)

    assert serialize(message) == data
    assert parse(serialize(message)) == message


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """A real message cut, spliced, flipped or stuffed at random places."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(
                st.one_of(
                    st.binary(max_size=8),
                    st.sampled_from(
                        [b"\r\n", b"\n", b"\r", b":", b";", b" ", b"\t", b"<", b'"', b","]
                    ),
                )
            )
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            end = draw(st.integers(at, len(data)))
            data[at:at] = data[at:end]
    return bytes(data)


def _read_everything(data: bytes) -> None:
    """Parse, and read every header the core would, through the helpers."""
    try:
        message = parse(data)
    except SipParseError:
        return
    assert isinstance(serialize(message), bytes)
    if isinstance(message, SipRequest):
        uri_user(message.uri)
    for name, value in message.headers:
        for helper in (parse_via, parse_cseq, parse_name_addr, header_params, split_list, uri_user):
            with contextlib.suppress(SipParseError):
                helper(value)
        assert name


@fuzz(2500)
@given(mutations())
def test_mutated_messages_parse_or_raise_the_parse_error(data: bytes) -> None:
    _read_everything(data)


@fuzz(3500)
@given(st.binary(max_size=2000))
def test_random_bytes_parse_or_raise_the_parse_error(data: bytes) -> None:
    _read_everything(data)


@fuzz(3000)
@given(st.text(max_size=500))
def test_random_text_parses_or_raises_the_parse_error(text: str) -> None:
    _read_everything(text.encode("utf-8", "surrogatepass"))

"""Fuzzing the SIPREC parsers: whatever comes in, only their own errors come out.

About 10,500 generated inputs across the SDP, multipart and metadata parsers: raw text and
bytes, and valid bodies (the vendor fixtures) mutated line by line, byte by byte and
element by element. Derandomized, so a run is repeatable and CI sees the same inputs.
"""

from __future__ import annotations

import re
from functools import cache
from random import Random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.siprec.body import RecordingOffer, SiprecBodyError, split_body
from recorder.siprec.metadata import MetadataError, channel_order, parse_metadata
from recorder.siprec.sdp import (
    SdpError,
    SessionDescription,
    UnacceptableMedia,
    answer_sdp,
    choose_formats,
    parse_sdp,
)
from tests.recorder.siprec.fixtures import EXPECTED, UPDATE, load


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@cache
def _bodies() -> list[tuple[str, bytes]]:
    return [load(name) for name in [*EXPECTED, UPDATE]]


@cache
def _offers() -> list[str]:
    return [o.sdp for o in (split_body(*b) for b in _bodies()) if o.sdp is not None]


@cache
def _parsed_offers() -> tuple[SessionDescription, ...]:
    return tuple(parse_sdp(offer) for offer in _offers()[:2])


@cache
def _metadata() -> list[bytes]:
    return [o.metadata for o in (split_body(*b) for b in _bodies()) if o.metadata is not None]


# Pieces that make parsers stumble: grammar tokens, limits, encodings, XML constructs.
SDP_PIECES = [
    "v=0", "m=audio", "m=audio 0 RTP/AVP 0", "m=audio 99999 RTP/AVP 0", "RTP/AVP", "TCP/BFCP *",
    "c=IN IP4 0.0.0.0", "c=IN IP6 ::", "c=IN", "a=rtpmap:", "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:96 x/y/z/w", "a=fmtp:", "a=label:", "a=ptime:0", "a=inactive", "a=sendonly",
    "=", "/", ":", " ", "\t", "\r", "\n", "\r\n", "\x00", "\ufeff", "é", "128", "-1", "1e9",
]  # fmt: skip
XML_PIECES = [
    "<", ">", "/>", "&", "&amp;", "&x;", "&#0;", "&#x110000;", "<!DOCTYPE r>",
    '<!DOCTYPE r [<!ENTITY a "aaaa">]>', "<!ENTITY", "<![CDATA[x]]>", "<!-- c -->", "<?pi x?>",
    "<participant>", "</participant>", "<participant participant_id='z'>", "<send>", "</send>",
    "<stream label='1'/>", "<nameID aor='sip:+1@x'/>", "<aor>", "<sipSessionID>", "xmlns='x'",
    "xmlns:rs='urn:ietf:params:xml:ns:recording:1'", "<rs:participant>", "\x00", "\xff", "é",
    "<a>" * 40, '"', "'", " ", "\n",
]  # fmt: skip
BODY_PIECES = [
    b"--", b"\r\n", b"\n", b"\r\n\r\n", b"Content-Type: ", b"application/sdp",
    b"application/rs-metadata+xml", b"multipart/mixed;boundary=x", b"--x--", b"--x\r\n",
    b"Content-Type: multipart/mixed;boundary=y\r\n\r\n--y\r\n", b"\x00", b"\xff\xfe", b";", b'"',
]  # fmt: skip


# Mutations are driven by one seeded Random that Hypothesis draws: drawing every choice
# through Hypothesis would cost most of the run in data generation.
RANDOMS = st.integers(0, 2**64 - 1).map(Random)
ALPHABET = "aZ09 =:/;<>&\"'-_.\t\r\n\x00\x7f\u00e9\u2028\ufeff\U0001f600"


def _junk(rnd: Random, longest: int) -> str:
    return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, longest)))


def _mutated_lines(rnd: Random, texts: list[str], pieces: list[str]) -> str:
    lines = rnd.choice(texts).splitlines()
    for _ in range(rnd.randint(1, 4)):
        if not lines:
            lines.append("")
        at = rnd.randrange(len(lines))
        action = rnd.choice(["drop", "repeat", "insert", "splice", "swap", "cut"])
        if action == "drop":
            del lines[at]
        elif action == "repeat":
            lines[at:at] = [lines[at]] * rnd.choice([1, 2, 40])
        elif action == "insert":
            lines.insert(at, rnd.choice(pieces) if rnd.random() < 0.6 else _junk(rnd, 40))
        elif action == "splice":
            line = lines[at]
            cut = rnd.randint(0, len(line))
            piece = rnd.choice(pieces) if rnd.random() < 0.6 else _junk(rnd, 10)
            lines[at] = line[:cut] + piece + line[cut + rnd.randint(0, 8) :]
        elif action == "swap":
            other = rnd.randrange(len(lines))
            lines[at], lines[other] = lines[other], lines[at]
        else:
            lines = lines[:at]
    return rnd.choice(["\r\n", "\n", "\r", "  \n"]).join(lines)


def _mutated_bytes(rnd: Random, data: bytes, pieces: list[bytes]) -> bytes:
    mutable = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        at = rnd.randint(0, len(mutable))
        action = rnd.choice(["delete", "insert", "flip", "truncate", "duplicate"])
        if action == "delete":
            del mutable[at : at + rnd.randint(1, 64)]
        elif action == "insert":
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 16)))
            mutable[at:at] = rnd.choice(pieces) if rnd.random() < 0.6 else junk
        elif action == "flip" and at < len(mutable):
            mutable[at] = rnd.randrange(256)
        elif action == "truncate":
            del mutable[at:]
        else:
            mutable[at:at] = mutable[at : at + rnd.randint(1, 100)] * rnd.choice([1, 2, 30])
    return bytes(mutable)


def _mutated_xml(rnd: Random, text: str) -> bytes:
    for _ in range(rnd.randint(1, 4)):
        tags = list(re.finditer(r"<[^>]*>", text))
        if not tags:
            break
        tag = rnd.choice(tags)
        start, end = tag.span()
        action = rnd.choice(["drop", "replace", "before", "rename", "attribute"])
        if action == "drop":
            text = text[:start] + text[end:]
        elif action == "replace":
            text = text[:start] + rnd.choice(XML_PIECES) + text[end:]
        elif action == "before":
            piece = rnd.choice(XML_PIECES) if rnd.random() < 0.6 else _junk(rnd, 20)
            text = text[:start] + piece + text[start:]
        elif action == "rename":
            name = rnd.choice(["participant", "stream", "send", "label", "aor", "x:y", "Send"])
            renamed = re.sub(r"^<(/?)[\w:.-]+", rf"<\g<1>{name}", tag.group())
            text = text[:start] + renamed + text[end:]
        else:
            quote = rnd.choice(['"', "'", "", "&", "<"])
            text = text[:start] + tag.group().replace("=", "=" + quote, 1) + text[end:]
    return text.encode(rnd.choice(["utf-8", "utf-16", "latin-1"]), "replace")


def _check_offer(offer: SessionDescription) -> None:
    """An offer that parses gets a channel order and, if it has audio we take, an answer."""
    audio = {s.index for s in offer.streams if s.media == "audio" and s.port != 0}
    assert sorted(channel_order(offer, None)) == sorted(audio)
    try:
        formats = choose_formats(offer)
    except UnacceptableMedia:
        return
    ports = {index: 40000 + 2 * index for index in formats}
    answer = parse_sdp(
        answer_sdp(offer, address="127.0.0.1", ports=ports, formats=formats, session_id=1,
                   version=1)
    )  # fmt: skip
    assert len(answer.streams) == len(offer.streams)
    assert {s.index for s in answer.streams if s.port != 0} == set(formats)


def _check_sdp(text: str) -> None:
    try:
        offer = parse_sdp(text)
    except SdpError:
        return
    _check_offer(offer)


def _check_metadata(xml: bytes) -> None:
    try:
        metadata = parse_metadata(xml)
    except MetadataError:
        return
    for parsed in _parsed_offers():
        order = channel_order(parsed, metadata)
        assert sorted(order) == sorted(s.index for s in parsed.streams if s.media == "audio")


def _check_body(content_type: str | None, body: bytes) -> None:
    try:
        offer = split_body(content_type, body)
    except SiprecBodyError:
        return
    assert isinstance(offer, RecordingOffer)
    assert offer.sdp is not None or offer.metadata is not None
    if offer.sdp is not None:
        _check_sdp(offer.sdp)
    if offer.metadata is not None:
        _check_metadata(offer.metadata)


@_fuzz(2_000)
@given(st.text(max_size=600))
def test_sdp_raw_text(text: str) -> None:
    _check_sdp(text)
    _check_sdp("v=0\r\n" + text)


@_fuzz(2_000)
@given(RANDOMS)
def test_sdp_mutated_offers(rnd: Random) -> None:
    _check_sdp(_mutated_lines(rnd, _offers(), SDP_PIECES))


@_fuzz(1_500)
@given(st.none() | st.text(max_size=80), st.binary(max_size=600))
def test_body_raw_bytes(content_type: str | None, body: bytes) -> None:
    _check_body(content_type, body)
    _check_body("multipart/mixed;boundary=x", body)


@_fuzz(2_000)
@given(RANDOMS)
def test_body_mutated_fixtures(rnd: Random) -> None:
    content_type, body = rnd.choice(_bodies())
    if rnd.random() < 0.3:
        content_type = rnd.choice(
            [content_type.replace("boundary=", "boundary=z"), content_type.upper(),
             content_type.split(";")[0], "application/sdp", "text/plain"]
        )  # fmt: skip
    _check_body(content_type, _mutated_bytes(rnd, body, BODY_PIECES))


@_fuzz(1_000)
@given(st.binary(max_size=600) | st.text(max_size=600).map(str.encode))
def test_metadata_raw_bytes(xml: bytes) -> None:
    _check_metadata(xml)
    _check_metadata(b"<recording>" + xml + b"</recording>")


@_fuzz(2_000)
@given(RANDOMS)
def test_metadata_mutated_documents(rnd: Random) -> None:
    document = rnd.choice(_metadata())
    if rnd.random() < 0.5:
        xml = _mutated_xml(rnd, document.decode("utf-8"))
    else:
        xml = _mutated_bytes(rnd, document, [p.encode() for p in XML_PIECES])
    _check_metadata(xml)

"""SIPREC bodies split into SDP and metadata, however the recording client framed them."""

from __future__ import annotations

import pytest

from recorder.siprec.body import MAX_BODY_BYTES, MAX_PARTS, SiprecBodyError, split_body

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n"
)
XML = b'<?xml version="1.0"?>\r\n<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>\r\n'


def _multipart(boundary: str, parts: list[tuple[str, bytes]], *, close: bool = True) -> bytes:
    body = b""
    for headers, content in parts:
        body += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
    if close:
        body += f"--{boundary}--\r\n".encode()
    return body


STANDARD = _multipart(
    "unique-boundary-1",
    [
        ("Content-Type: application/sdp", SDP.encode()),
        (
            "Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session",
            XML,
        ),
    ],
)


def test_a_standard_siprec_body() -> None:
    offer = split_body('multipart/mixed;boundary="unique-boundary-1"', STANDARD)
    assert offer.sdp == SDP
    assert offer.metadata == XML


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/mixed;boundary=unique-boundary-1",
        'Multipart/Mixed; Boundary="unique-boundary-1"',
        "multipart/mixed ; charset=utf-8 ; boundary=unique-boundary-1",
        "multipart/mixed",  # no boundary parameter: the first delimiter line names it
    ],
)
def test_boundary_quoted_bare_or_missing(content_type: str) -> None:
    assert split_body(content_type, STANDARD).sdp == SDP


def test_lf_only_preamble_epilogue_and_header_case() -> None:
    body = (
        b"This is a preamble.\n"
        b"--b1\n"
        b"CONTENT-TYPE: Application/SDP\n\n" + SDP.replace("\r\n", "\n").encode() + b"\n"
        b"--b1\n"
        b"content-type: application/rs-metadata\n"
        b"content-disposition: recording-session;handling=required\n\n"
        + XML.replace(b"\r\n", b"\n")
        + b"\n--b1--\nan epilogue that is ignored\n--b1\ncontent-type: application/sdp\n\nv=0\n"
    )
    offer = split_body("multipart/mixed;boundary=b1", body)
    assert offer.sdp == SDP.replace("\r\n", "\n")
    assert offer.metadata == XML.replace(b"\r\n", b"\n")


def test_missing_closing_delimiter() -> None:
    body = _multipart(
        "b2",
        [("Content-Type: application/sdp", SDP.encode()),
         ("Content-Type: application/rs-metadata+xml", XML)],
        close=False,
    )  # fmt: skip
    offer = split_body("multipart/mixed;boundary=b2", body)
    assert offer.sdp == SDP
    assert offer.metadata is not None and offer.metadata.rstrip() == XML.rstrip()


def test_extra_parts_are_ignored() -> None:
    body = _multipart(
        "b3",
        [
            ("Content-Type: application/gtd\r\nContent-Disposition: signal;handling=optional",
             b"IAM,\r\nPRN,isdn*,,NT100,\r\n"),
            ("Content-Type: application/isup;version=itu-t92+", b"\x01\x00\x49\x00"),
            ("Content-Type: application/sdp", SDP.encode()),
            ("Content-Type: application/rs-metadata+xml", XML),
        ],
    )  # fmt: skip
    offer = split_body('multipart/mixed; boundary="b3"', body)
    assert offer.sdp == SDP and offer.metadata == XML


def test_a_quoted_boundary_with_special_characters() -> None:
    boundary = "=_Part 1;x?(y)"
    body = _multipart(boundary, [("Content-Type: application/sdp", SDP.encode())])
    assert split_body(f'multipart/mixed;boundary="{boundary}"', body).sdp == SDP


def test_parts_without_content_type_are_sniffed() -> None:
    body = b"--b4\r\n\r\n" + SDP.encode() + b"\r\n--b4\r\n" + XML + b"\r\n--b4--\r\n"
    offer = split_body("multipart/mixed;boundary=b4", body)
    assert offer.sdp == SDP
    assert offer.metadata == XML


def test_a_nested_multipart_alternative() -> None:
    inner = _multipart("inner", [("Content-Type: application/sdp", SDP.encode())])
    body = _multipart(
        "outer",
        [("Content-Type: multipart/alternative;boundary=inner", inner),
         ("Content-Type: application/rs-metadata+xml", XML)],
    )  # fmt: skip
    offer = split_body("multipart/mixed;boundary=outer", body)
    assert offer.sdp == SDP and offer.metadata == XML


def test_a_plain_sdp_is_a_forked_leg() -> None:
    offer = split_body("application/sdp", SDP.encode())
    assert offer.sdp == SDP and offer.metadata is None
    assert split_body(None, SDP.encode()).sdp == SDP
    assert split_body("application/SDP; charset=UTF-8", SDP.encode()).sdp == SDP


def test_latin1_sdp_is_still_read() -> None:
    raw = SDP.replace("s=-", "s=Sitzung Müller").encode("latin-1")
    offer = split_body("application/sdp", raw)
    assert offer.sdp is not None and "Müller" in offer.sdp


def test_metadata_alone_is_an_update() -> None:
    offer = split_body("application/rs-metadata+xml", XML)
    assert offer.sdp is None and offer.metadata == XML
    body = _multipart("b5", [("Content-Type: application/rs-metadata+xml", XML)])
    assert split_body("multipart/mixed;boundary=b5", body).metadata == XML
    with pytest.raises(SiprecBodyError):
        split_body("application/rs-metadata+xml", XML, require_sdp=True)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/sdp", b""),
        (None, b""),
        ("text/plain", b"hello"),
        ("multipart/mixed;boundary=b6", b"no delimiter anywhere"),
        ("multipart/mixed", b"no boundary anywhere"),
        (
            "multipart/mixed;boundary=b7",
            b"--b7\r\nContent-Type: application/gtd\r\n\r\nIAM\r\n--b7--",
        ),
        ("multipart/mixed;boundary=b8", b"--b8\r\nContent-Type: application/sdp\r\n\r\n\r\n--b8--"),
        ("multipart/mixed;boundary=b9", b"--b9--\r\n"),
        ("application/sdp", b"v=0\r\n" + b"a" * MAX_BODY_BYTES),
        (
            "multipart/mixed;boundary=bb",
            b"".join(b"--bb\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(MAX_PARTS + 1))
            + b"--bb\r\nContent-Type: application/sdp\r\n\r\n"
            + SDP.encode(),
        ),
        (
            "multipart/mixed;boundary=n1",
            b"--n1\r\nContent-Type: multipart/mixed;boundary=n2\r\n\r\n--n2\r\n"
            b"Content-Type: multipart/mixed;boundary=n3\r\n\r\n--n3\r\n"
            b"Content-Type: application/sdp\r\n\r\nv=0\r\n",
        ),
    ],
)
def test_bodies_without_an_offer_are_refused(content_type: str | None, body: bytes) -> None:
    with pytest.raises(SiprecBodyError):
        split_body(content_type, body)


def test_an_empty_part_between_delimiters() -> None:
    body = b"--e\r\n--e\r\nContent-Type: application/sdp\r\n\r\n" + SDP.encode() + b"\r\n--e--"
    assert split_body("multipart/mixed;boundary=e", body).sdp == SDP

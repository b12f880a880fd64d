"""Every vendor-style fixture gives its session id, its parties and its channel order."""

from __future__ import annotations

import pytest

from recorder.siprec.body import split_body
from recorder.siprec.metadata import (
    MetadataError,
    channel_order,
    merge_metadata,
    parse_metadata,
    stream_senders,
)
from recorder.siprec.sdp import answer_sdp, choose_formats, parse_sdp
from tests.recorder.siprec.fixtures import DIRECTORY, EXPECTED, TWO_STREAM, UPDATE, load


def test_every_fixture_file_has_its_expectations_and_a_readme_line() -> None:
    files = {path.stem for path in DIRECTORY.glob("*.body")}
    assert files == {*EXPECTED, UPDATE}
    readme = (DIRECTORY / "README.md").read_text()
    for name in files:
        assert f"`{name}.body`" in readme, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_fixture_parses_as_expected(name: str) -> None:
    expected = EXPECTED[name]
    content_type, body = load(name, port0=41000, port1=41002)
    offer = split_body(content_type, body, require_sdp=True)
    assert offer.sdp is not None
    sdp = parse_sdp(offer.sdp)
    audio = [s for s in sdp.streams if s.media == "audio"]
    assert [s.port for s in audio] == [41000, 41002][: expected.streams]
    assert all(s.address == "127.0.0.1" and s.sending for s in audio)
    if expected.streams == 2:
        assert all(s.label for s in audio)

    metadata = None
    if expected.metadata == "none":
        assert offer.metadata is None
    elif expected.metadata == "unreadable":
        assert offer.metadata is not None
        with pytest.raises(MetadataError):
            parse_metadata(offer.metadata)
    else:
        assert offer.metadata is not None
        metadata = parse_metadata(offer.metadata)
        assert metadata.session_id == expected.session_id
        assert tuple(tuple(p.aors) for p in metadata.participants) == expected.aors
        assert not metadata.partial

    order = channel_order(sdp, metadata)
    assert tuple(order) == expected.channels
    senders = stream_senders(sdp, metadata)
    channel_aors = tuple(senders[i].aors[0] if i in senders else None for i in order)
    assert channel_aors == expected.channel_aors

    # callrec can answer every fixture: one format per stream, recvonly, the labels echoed.
    formats = choose_formats(sdp)
    assert sorted(formats) == [s.index for s in audio]
    answer = parse_sdp(
        answer_sdp(sdp, address="127.0.0.1", ports={i: 40000 + 2 * i for i in formats},
                   formats=formats, session_id=1, version=1)
    )  # fmt: skip
    assert [s.label for s in answer.streams] == [s.label for s in sdp.streams]
    assert all(s.direction == "recvonly" and len(s.formats) <= 2 for s in answer.streams)


@pytest.mark.parametrize("name", TWO_STREAM)
def test_line_ends_do_not_matter(name: str) -> None:
    content_type, body = load(name)
    crlf = split_body(content_type, body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    lf = split_body(content_type, body.replace(b"\r\n", b"\n"))
    assert crlf.sdp is not None and lf.sdp is not None
    assert parse_sdp(crlf.sdp) == parse_sdp(lf.sdp)
    if EXPECTED[name].metadata == "readable":
        assert crlf.metadata is not None and lf.metadata is not None
        assert parse_metadata(crlf.metadata) == parse_metadata(lf.metadata)


def test_a_metadata_only_update_after_a_transfer() -> None:
    content_type, body = load("oracle_acme")
    initial = split_body(content_type, body)
    assert initial.sdp is not None and initial.metadata is not None
    sdp, before = parse_sdp(initial.sdp), parse_metadata(initial.metadata)

    content_type, body = load(UPDATE)
    update_body = split_body(content_type, body)
    assert update_body.sdp is None and update_body.metadata is not None
    update = parse_metadata(update_body.metadata)
    assert update.partial
    assert update.session_id is None
    assert [p.aors for p in update.participants] == [["sip:+14155550142@192.0.2.30"]]
    assert update.departed == ["QWxpY2UtcGFydGljaXBhbnQ="]
    assert update.sends == {"Q2hhcmxpZS10cmFuc2Zlcg==": ["c3RyZWFtLXR3by02Nzg5MA=="]}

    merged = merge_metadata(before, update)
    assert merged.session_id == before.session_id
    assert [p.aors[0] for p in merged.participants] == [
        "sip:+14155550100@192.0.2.10",
        "sip:+14155550142@192.0.2.30",
    ]
    # The channels stay where they were; the second one now carries the transfer target.
    assert channel_order(sdp, merged) == [0, 1]
    assert stream_senders(sdp, merged)[1].aors == ["sip:+14155550142@192.0.2.30"]

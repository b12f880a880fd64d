"""A live capture's length read back from its container, cut anywhere by a crash."""

from __future__ import annotations

import pytest

from recorder.capture import au, mka, ogg, opus
from storage.duration import DurationProbe
from tests.recorder.capture.media import RATE, decode, encode


def _probe(container: str, data: bytes, piece: int = 777) -> float | None:
    probe = DurationProbe(container)
    for start in range(0, len(data), piece):
        probe.feed(data[start : start + piece])
    return probe.seconds()


@pytest.fixture(scope="module")
def three_seconds() -> tuple[bytes, list[int], float]:
    """Ogg Opus of about 3 s in one-second pages, where each page ends, and its length."""
    writer = ogg.OggOpusWriter(1, serial=3)
    data, ends = writer.start(), []
    for packet in encode(3, 440):
        if pages := writer.write([opus.parse(packet)]):
            data += pages
            ends.append(len(data))
    return data + writer.close(), ends, writer.samples / RATE


def test_an_ogg_stream_lasts_until_its_last_whole_page(
    three_seconds: tuple[bytes, list[int], float],
) -> None:
    data, ends, length = three_seconds
    assert _probe("ogg", data) == length >= 3.0
    for cut, seconds in ((ends[1] + 1, 2.0), (ends[2] - 1, 2.0), (ends[0], 1.0)):
        assert _probe("ogg", data[:cut]) == seconds
        decoded = decode(data[:cut])[1][0]
        assert abs(len(decoded) / RATE - seconds) <= 0.020  # what a decoder gets from it


def test_an_ogg_stream_cut_in_its_headers_has_no_length(
    three_seconds: tuple[bytes, list[int], float],
) -> None:
    data, _, _ = three_seconds
    assert _probe("ogg", data[:20]) is None
    assert _probe("ogg", b"not an ogg stream at all, only bytes") is None


@pytest.mark.parametrize("channels", [1, 2])
def test_an_au_stream_lasts_as_many_whole_samples_as_it_holds(channels: int) -> None:
    writer = au.AuWriter(channels, "pcmu")
    data = writer.start() + writer.write([bytes(8000)] * channels)
    assert _probe("au", data) == 1.0
    assert _probe("au", data[:-1]) == 7999 / 8000  # a sample cut in the middle is not one
    assert _probe("au", data[:10]) is None
    assert _probe("wav", data) is None


def test_a_g722_matroska_stream_lasts_until_its_last_whole_block() -> None:
    writer = mka.G722MatroskaWriter(2)
    data, ends = writer.start(), []
    for step in range(700):  # 7 s in 10 ms steps: a second cluster at 5 s
        data += writer.write([bytes((step % 256,)) * 80, b"\xfc" * 80])
        ends.append(len(data))
    assert _probe("mka", data) == 7.0
    assert _probe("mka", data, piece=1) == 7.0
    assert _probe("mka", data[: ends[499]]) == 5.0
    block = 2 + 4 + 80  # the SimpleBlock's ID and size, its head, 10 ms of G.722
    assert _probe("mka", data[: ends[599] + block - 1]) == 6.0  # the next block cut
    assert _probe("mka", data[: ends[599] + block]) == 6.01  # the first channel's, whole
    assert _probe("mka", data[: ends[599] + block + 50]) == 6.01  # the second one's, cut
    assert _probe("mka", data[: ends[0] - 1]) == 0.01
    assert _probe("mka", writer.start()) is None
    assert _probe("mka", b"\x00 not matroska") is None
    assert _probe("mka", b"\x1a\x45\xdf\xa3\x81\x00\xa3\x85\x81\x00\x00\x80\xfc") is None

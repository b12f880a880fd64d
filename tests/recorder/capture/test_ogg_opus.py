"""Live Opus into Ogg without re-encoding: packets reframed, pages checked by decoders."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence

import imageio_ffmpeg
import pytest

from recorder.capture import ogg, opus
from tests.recorder.capture.media import FRAME, RATE, decode, encode, rms


@pytest.fixture(scope="module")
def two_parties() -> tuple[list[bytes], list[bytes]]:
    left, right = encode(3, 440), encode(3, 1750)
    return left, right


def _mux(channels: Sequence[Sequence[opus.OpusPacket]]) -> tuple[bytes, int]:
    writer = ogg.OggOpusWriter(len(channels), serial=7)
    data = writer.start()
    for step in zip(*channels, strict=True):
        data += writer.write(step)
    return data + writer.close(), writer.samples


def test_two_parties_decode_as_two_channels_of_the_true_length(
    two_parties: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = two_parties
    data, samples = _mux([[opus.parse(p) for p in left], [opus.parse(p) for p in right]])

    count, decoded = decode(data)

    assert count == 2
    assert samples == len(left) * FRAME
    assert abs(len(decoded[0]) - samples) / RATE <= 0.020
    # Each party stays on its own channel.
    assert rms(decoded[0][RATE : 2 * RATE]) > 0.1
    assert rms(decoded[1][RATE : 2 * RATE]) > 0.1


def test_a_gap_becomes_silence_on_its_channel_only(
    two_parties: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = two_parties
    gap = range(50, 100)  # the second second of the right channel never arrived
    right_packets = [
        opus.silence(FRAME) if i in gap else opus.parse(p) for i, p in enumerate(right)
    ]
    data, _ = _mux([[opus.parse(p) for p in left], right_packets])

    _, decoded = decode(data)

    # Away from the edges of the gap (the codec's overlap smears a few ms).
    inside = decoded[1][51 * FRAME : 99 * FRAME]
    assert rms(inside) < 0.001
    assert rms(decoded[0][51 * FRAME : 99 * FRAME]) > 0.1
    assert rms(decoded[1][110 * FRAME : 140 * FRAME]) > 0.1


def test_ffmpeg_reads_the_stream_to_its_true_duration(
    two_parties: tuple[list[bytes], list[bytes]], tmp_path: os.PathLike[str]
) -> None:
    left, right = two_parties
    data, samples = _mux([[opus.parse(p) for p in left], [opus.parse(p) for p in right]])
    path = f"{tmp_path}/call.ogg"
    with open(path, "wb") as handle:
        handle.write(data)

    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path, "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )

    assert "2 channels" in result.stderr or "stereo" in result.stderr
    times = re.findall(r"time=(\d+):(\d+):(\d+\.\d+)", result.stderr)
    hours, minutes, seconds = times[-1]
    decoded_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    assert abs(decoded_s - samples / RATE) <= 0.020


def test_a_stream_cut_after_any_page_still_decodes(
    two_parties: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = two_parties
    writer = ogg.OggOpusWriter(2, serial=9, page_samples=RATE // 2)
    data = writer.start()
    pages: list[tuple[int, int]] = []  # (bytes so far, samples so far) after each page
    for step in zip(left, right, strict=True):
        written = writer.write([opus.parse(p) for p in step])
        if written:
            data += written
            pages.append((len(data), writer.samples))

    for end, samples in pages[:-1]:
        count, decoded = decode(data[:end])
        assert count == 2
        assert len(decoded[0]) == samples


@pytest.mark.parametrize("frames", [1, 2, 3, 6])
@pytest.mark.parametrize("equal", [True, False])
def test_pack_and_parse_are_inverse(frames: int, equal: bool) -> None:
    toc = 0x70  # Hybrid fullband 10 ms: up to 12 frames in 120 ms
    sizes = [300] * frames if equal else [10 + 97 * i for i in range(frames)]
    payload = [os.urandom(size) for size in sizes]

    packet = opus.parse(opus.pack(toc, payload))

    assert packet.toc == toc
    assert list(packet.frames) == payload
    assert packet.samples == 480 * frames


def test_a_real_packet_is_kept_byte_for_byte(two_parties: tuple[list[bytes], list[bytes]]) -> None:
    for raw in two_parties[0]:
        parsed = opus.parse(raw)
        assert opus.pack(parsed.toc, parsed.frames) == raw


def test_self_delimited_framing_carries_every_frame_length() -> None:
    # RFC 6716 Appendix B: one more length than the normal framing.
    frames = [b"\x01" * 5, b"\x02" * 300]
    normal = opus.pack(0x78, frames)
    delimited = opus.pack(0x78, frames, self_delimited=True)
    assert delimited == normal[:2] + bytes((252, 12)) + normal[2:]  # 300 = 252 + 4 * 12


def test_the_ogg_checksum_is_the_one_the_format_defines() -> None:
    # Reference: bit by bit, polynomial 0x04C11DB7, MSB first, no reflection (RFC 3533).
    def reference(data: bytes) -> int:
        crc = 0
        for byte in data:
            crc ^= byte << 24
            for _ in range(8):
                crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
                crc &= 0xFFFFFFFF
        return crc

    for size in (0, 1, 27, 1000):
        data = os.urandom(size)
        assert ogg.ogg_crc(data) == reference(data)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "empty Opus packet"),
        (b"\x79\x05", "odd number of bytes"),
        (b"\x7a\xfc", "ends inside a two-byte frame length"),
        (b"\x7a\x40\x01", "shorter than its first frame"),
        (b"\x7b", "without its frame count"),
        (b"\x7b\x00", "with no frames"),
        (b"\x7b\x03\x01\x02", "unequal size"),
        (b"\x7b\x0d" + b"\x00" * 13, "longer than 120 ms"),
        (b"\x78" + b"\x00" * 1276, "over 1275 bytes"),
        (b"\x7b\x42\xff", "ends inside its padding length"),
    ],
)
def test_malformed_packets_are_refused_with_the_reason(packet: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        opus.parse(packet)


def test_the_channels_of_one_step_must_last_as_long() -> None:
    writer = ogg.OggOpusWriter(2, serial=1)
    writer.start()
    with pytest.raises(ValueError, match="differ in duration"):
        writer.write([opus.silence(960), opus.silence(1920)])

"""Opus packets as they travel in RTP, taken apart into frames and put back together.

Live audio is stored as it arrived, never decoded: this module only reframes. A
packet (RFC 6716 §3) is a TOC byte and one or more frames; ``parse`` splits it, and
``pack`` builds a packet from frames that share a TOC, in the normal framing or in
the self-delimiting one (RFC 6716 Appendix B) that a multistream packet uses for
every stream but the last (RFC 7845 §5.1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RATE = 48_000  # Opus timestamps and Ogg granules count 48 kHz samples (RFC 7587 §4.1)
MAX_FRAME_BYTES = 1275  # RFC 6716 §3.2.1
MAX_PACKET_SAMPLES = 5760  # 120 ms (RFC 6716 §3.2.5)

# Samples per frame at 48 kHz for each of the 32 configurations (RFC 6716 §3.1, Table 2):
# SILK 10/20/40/60 ms in three bandwidths, Hybrid 10/20 ms in two, CELT 2.5/5/10/20 ms
# in four.
_FRAME_SAMPLES = (
    *(480, 960, 1920, 2880) * 3,
    *(480, 960) * 2,
    *(120, 240, 480, 960) * 4,
)

# One 20 ms CELT frame that decodes to digital silence: what a gap in a channel becomes.
SILENCE_TOC = 0xF8  # configuration 31 (CELT, fullband, 20 ms), mono, one frame
SILENCE_FRAME = b"\xff\xfe"
SILENCE_SAMPLES = 960


@dataclass(frozen=True, slots=True)
class OpusPacket:
    """A parsed packet: its TOC with the frame-count bits cleared, and its frames."""

    toc: int
    frames: tuple[bytes, ...]

    @property
    def frame_samples(self) -> int:
        return _FRAME_SAMPLES[self.toc >> 3]

    @property
    def samples(self) -> int:
        return self.frame_samples * len(self.frames)


def _read_length(data: bytes, at: int) -> tuple[int, int]:
    """A frame length (RFC 6716 §3.2.1) at ``at``: (length, position after it)."""
    if at >= len(data):
        raise ValueError("Opus packet ends inside a frame length")
    first = data[at]
    if first < 252:
        return first, at + 1
    if at + 1 >= len(data):
        raise ValueError("Opus packet ends inside a two-byte frame length")
    return first + 4 * data[at + 1], at + 2


def _write_length(length: int) -> bytes:
    if not 0 <= length <= MAX_FRAME_BYTES:
        raise ValueError(f"Opus frame of {length} bytes (at most {MAX_FRAME_BYTES})")
    if length < 252:
        return bytes((length,))
    first = 252 + (length & 3)
    return bytes((first, (length - first) >> 2))


def parse(data: bytes) -> OpusPacket:
    """Split a packet in the normal framing into its frames (RFC 6716 §3.2)."""
    if not data:
        raise ValueError("empty Opus packet")
    toc, code = data[0] & ~3 & 0xFF, data[0] & 3
    body = data[1:]
    if code == 0:
        frames: tuple[bytes, ...] = (body,)
    elif code == 1:
        if len(body) % 2:
            raise ValueError("Opus code 1 packet with an odd number of bytes for two frames")
        half = len(body) // 2
        frames = (body[:half], body[half:])
    elif code == 2:
        first, at = _read_length(data, 1)
        if at + first > len(data):
            raise ValueError("Opus code 2 packet shorter than its first frame")
        frames = (data[at : at + first], data[at + first :])
    else:
        frames = _parse_code3(data)
    packet = OpusPacket(toc, frames)
    if any(len(frame) > MAX_FRAME_BYTES for frame in frames):
        raise ValueError(f"Opus frame over {MAX_FRAME_BYTES} bytes")
    if packet.samples > MAX_PACKET_SAMPLES:
        raise ValueError("Opus packet longer than 120 ms")
    return packet


def _parse_code3(data: bytes) -> tuple[bytes, ...]:
    if len(data) < 2:
        raise ValueError("Opus code 3 packet without its frame count")
    variable, padded, count = data[1] & 0x80, data[1] & 0x40, data[1] & 0x3F
    if count == 0:
        raise ValueError("Opus code 3 packet with no frames")
    at, padding = 2, 0
    while padded:
        if at >= len(data):
            raise ValueError("Opus packet ends inside its padding length")
        step = data[at]
        at += 1
        padding += 254 if step == 255 else step
        padded = step == 255
    end = len(data) - padding
    if variable:
        lengths = []
        for _ in range(count - 1):
            length, at = _read_length(data, at)
            lengths.append(length)
        lengths.append(end - at - sum(lengths))
    else:
        if (end - at) % count:
            raise ValueError("Opus code 3 constant-bitrate frames of unequal size")
        lengths = [(end - at) // count] * count
    if end < at or any(length < 0 for length in lengths):
        raise ValueError("Opus code 3 packet shorter than its frames")
    frames = []
    for length in lengths:
        frames.append(data[at : at + length])
        at += length
    return tuple(frames)


def pack(toc: int, frames: Sequence[bytes], *, self_delimited: bool = False) -> bytes:
    """A packet of ``frames`` (all coded with ``toc``), in the framing asked for."""
    toc &= ~3 & 0xFF
    sizes = [len(frame) for frame in frames]
    body = b"".join(frames)
    if not frames:
        raise ValueError("an Opus packet holds at least one frame")
    if len(frames) == 1:
        head = bytes((toc,))
        lengths = sizes if self_delimited else []
    elif len(frames) == 2 and sizes[0] == sizes[1]:
        head = bytes((toc | 1,))
        lengths = sizes[:1] if self_delimited else []
    elif len(frames) == 2:
        head = bytes((toc | 2,))
        lengths = sizes if self_delimited else sizes[:1]
    else:
        if len(frames) > 48:
            raise ValueError("an Opus packet holds at most 48 frames")
        head = bytes((toc | 3, 0x80 | len(frames)))
        lengths = sizes if self_delimited else sizes[:-1]
    return head + b"".join(_write_length(size) for size in lengths) + body


def silence(samples: int) -> OpusPacket:
    """``samples`` of digital silence, in 20 ms CELT frames."""
    if samples % SILENCE_SAMPLES:
        raise ValueError(f"silence comes in 20 ms steps, not {samples} samples")
    return OpusPacket(SILENCE_TOC, (SILENCE_FRAME,) * (samples // SILENCE_SAMPLES))

"""G.722 in Matroska, written front to back: one mono track per channel, no re-encoding.

Why not ``.au``, which has an encoding for G.722 (24)? FFmpeg reads such a file, but its
G.722 decoder is mono only: a two-channel ``.au`` decodes as one garbled channel twice
as long. Matroska carries each party as its own track, each a G.722 stream exactly as it
came in RTP, and FFmpeg decodes every track to 16 kHz audio.

The file is made to be appended to: the Segment and each Cluster have the "unknown"
size EBML allows (all value bits set), as live Matroska streams do, so nothing is ever
patched and a file cut short (a crash) reads up to its last whole block. A track is
``A_MS/ACM`` with a WAVEFORMATEX of format tag 0x028F (G.722), as FFmpeg itself writes
it; every time step becomes one SimpleBlock per track, timestamped in milliseconds.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

RTP_RATE = 8000  # RFC 3551 §4.5.2: G.722's RTP clock runs at 8 kHz, its audio at 16
AUDIO_RATE = 16_000
_TICKS_PER_MS = RTP_RATE // 1000  # one byte of G.722 is two samples: one RTP tick
_CLUSTER_MS = 5000  # a block's timestamp is a signed 16-bit offset from its cluster's
_UNKNOWN = b"\x01\xff\xff\xff\xff\xff\xff\xff"  # an 8-byte size with every value bit set
_WAVE_FORMAT_G722 = 0x028F
_APP = b"callrec"


def _size(length: int) -> bytes:
    """An EBML variable-size integer, as short as it can be (never all ones)."""
    for width in range(1, 9):
        if length < (1 << (7 * width)) - 1:
            return (length | (1 << (7 * width))).to_bytes(width, "big")
    raise ValueError(f"element of {length} bytes is too long")


def _element(element_id: bytes, body: bytes) -> bytes:
    return element_id + _size(len(body)) + body


def _uint(element_id: bytes, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _track(number: int) -> bytes:
    # WAVEFORMATEX: tag, channels, samples/s, bytes/s, block align, bits/sample, extra size
    wave = struct.pack("<HHIIHHH", _WAVE_FORMAT_G722, 1, AUDIO_RATE, RTP_RATE, 1, 4, 0)
    audio = (
        _element(b"\xb5", struct.pack(">d", AUDIO_RATE))  # SamplingFrequency
        + _uint(b"\x9f", 1)  # Channels
        + _uint(b"\x62\x64", 4)  # BitDepth
    )
    return _element(
        b"\xae",  # TrackEntry
        _uint(b"\xd7", number)  # TrackNumber
        + _uint(b"\x73\xc5", number)  # TrackUID
        + _uint(b"\x83", 2)  # TrackType: audio
        + _uint(b"\x9c", 0)  # FlagLacing
        + _uint(b"\x88", 1 if number == 1 else 0)  # FlagDefault
        + _element(b"\x86", b"A_MS/ACM")  # CodecID
        + _element(b"\x63\xa2", wave)  # CodecPrivate
        + _element(b"\xe1", audio),
    )


class G722MatroskaWriter:
    """Each time step's G.722 bytes, one block per channel, as Matroska bytes."""

    def __init__(self, channels: int) -> None:
        if not 1 <= channels <= 126:  # a track number of one byte in each block
            raise ValueError(f"{channels} channels: between 1 and 126")
        self.channels = channels
        self.samples = 0  # RTP ticks per channel (a byte each)
        self._cluster_ms: int | None = None

    def start(self) -> bytes:
        ebml = _element(
            b"\x1a\x45\xdf\xa3",
            _uint(b"\x42\x86", 1)  # EBMLVersion
            + _uint(b"\x42\xf7", 1)  # EBMLReadVersion
            + _uint(b"\x42\xf2", 4)  # EBMLMaxIDLength
            + _uint(b"\x42\xf3", 8)  # EBMLMaxSizeLength
            + _element(b"\x42\x82", b"matroska")  # DocType
            + _uint(b"\x42\x87", 4)  # DocTypeVersion
            + _uint(b"\x42\x85", 2),  # DocTypeReadVersion
        )
        info = _element(
            b"\x15\x49\xa9\x66",
            _uint(b"\x2a\xd7\xb1", 1_000_000)  # TimestampScale: milliseconds
            + _element(b"\x4d\x80", _APP)  # MuxingApp
            + _element(b"\x57\x41", _APP),  # WritingApp
        )
        tracks = _element(
            b"\x16\x54\xae\x6b", b"".join(_track(n) for n in range(1, self.channels + 1))
        )
        return ebml + b"\x18\x53\x80\x67" + _UNKNOWN + info + tracks

    def write(self, streams: Sequence[bytes]) -> bytes:
        """One time step: the same number of bytes from every channel, a block each."""
        if len(streams) != self.channels:
            raise ValueError(f"{len(streams)} streams for {self.channels} channels")
        length = len(streams[0])
        if any(len(stream) != length for stream in streams):
            raise ValueError("the channels' bytes of one time step differ in length")
        at_ms = self.samples // _TICKS_PER_MS
        out = []
        if self._cluster_ms is None or at_ms - self._cluster_ms >= _CLUSTER_MS:
            self._cluster_ms = at_ms
            out.append(b"\x1f\x43\xb6\x75" + _UNKNOWN + _uint(b"\xe7", at_ms))  # Timestamp
        relative = struct.pack(">h", at_ms - self._cluster_ms)
        for number, stream in enumerate(streams, start=1):
            # SimpleBlock: track number, timestamp offset, flags (a keyframe), the bytes
            out.append(_element(b"\xa3", bytes((0x80 | number,)) + relative + b"\x80" + stream))
        self.samples += length
        return b"".join(out)

    def write_steps(self, columns: Sequence[Sequence[bytes]]) -> bytes:
        """Consecutive time steps, a sequence per channel."""
        return b"".join(self.write(step) for step in zip(*columns, strict=True))

    def close(self) -> bytes:
        return b""

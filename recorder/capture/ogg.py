"""An Ogg Opus file written front to back, never patched: the live spool is append-only.

Pages follow RFC 3533 and the Opus mapping RFC 7845: a first page with ``OpusHead``
alone, a page with ``OpusTags``, then audio pages whose granule position counts the
48 kHz samples decoded by the end of their last packet. A stream cut short (a crash)
is still a valid Ogg Opus stream up to its last whole page; ``close`` adds the page
that marks its end.

One channel per party: a call's channels are independent mono Opus streams, carried as
one multistream packet per time step (RFC 7845 §5.1.1), so the file decodes to as many
channels as the call had parties and nothing is re-encoded.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from recorder.capture import opus

_CAPTURE = b"OggS"
_CONTINUED, _FIRST, _LAST = 0x01, 0x02, 0x04
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")
_MAX_SEGMENTS = 255
_VENDOR = b"callrec"


# Ogg's CRC-32 (polynomial 0x04C11DB7, MSB first, initial value 0, no final XOR) is
# zlib's CRC-32 seen in a mirror: reverse each byte's bits, cancel zlib's initial value
# and final XOR (a CRC is affine in its input: the CRC of as many zero bytes does it),
# and reverse the result. It runs in C, where a table in Python would cost about 1 ms
# of CPU per second of each live call.
_MIRROR = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    mirrored = data.translate(_MIRROR)
    value = zlib.crc32(mirrored) ^ zlib.crc32(bytes(len(mirrored)))
    return int(f"{value:032b}"[::-1], 2)


def opus_head(channels: int, *, pre_skip: int = 0) -> bytes:
    """The identification header (RFC 7845 §5.1); every channel is its own mono stream."""
    if not 1 <= channels <= 255:
        raise ValueError(f"{channels} channels: an Ogg Opus stream holds 1 to 255")
    head = struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, pre_skip, opus.RATE, 0, 0)
    if channels == 1:
        return head  # family 0: one mono stream, no mapping table
    # Family 1 names the order of up to 8 channels; past 8, family 255 has no layout.
    family = 1 if channels <= 8 else 255
    return head[:-1] + bytes((family, channels, 0, *range(channels)))


def opus_tags() -> bytes:
    """The comment header (RFC 7845 §5.2), with no comments."""
    return b"OpusTags" + struct.pack("<I", len(_VENDOR)) + _VENDOR + struct.pack("<I", 0)


class OggOpusWriter:
    """Turns a call's multistream packets into Ogg pages, as bytes to append."""

    def __init__(self, channels: int, *, serial: int, page_samples: int = opus.RATE) -> None:
        self.channels = channels
        self._serial = serial
        self._sequence = 0
        self._granule = 0
        self._page_samples = page_samples
        self._pending: list[bytes] = []
        self._pending_samples = 0
        self._closed = False

    @property
    def samples(self) -> int:
        """48 kHz samples per channel taken so far."""
        return self._granule + self._pending_samples

    def start(self) -> bytes:
        """The two header pages, to write before any audio."""
        first = self._pages([opus_head(self.channels)], granule=0, flags=_FIRST)
        return first + self._pages([opus_tags()], granule=0)

    def write(self, streams: Sequence[opus.OpusPacket]) -> bytes:
        """Add one time step, a packet per channel of equal duration; return whole pages."""
        if self._closed:
            raise ValueError("write() after close()")
        if len(streams) != self.channels:
            raise ValueError(f"{len(streams)} packets for {self.channels} channels")
        samples = streams[0].samples
        if any(packet.samples != samples for packet in streams):
            raise ValueError("the channels' packets of one time step differ in duration")
        last = len(streams) - 1
        packet = b"".join(
            opus.pack(p.toc, p.frames, self_delimited=i < last) for i, p in enumerate(streams)
        )
        pages = b""
        # A page holds whole packets, so that its granule position is exact.
        if self._segments + _segments(packet) > _MAX_SEGMENTS:
            pages = self.flush()
        self._pending.append(packet)
        self._pending_samples += samples
        if self._pending_samples >= self._page_samples:
            pages += self.flush()
        return pages

    def flush(self) -> bytes:
        """Whatever is pending, as pages."""
        if not self._pending:
            return b""
        self._granule += self._pending_samples
        pages = self._pages(self._pending, granule=self._granule)
        self._pending, self._pending_samples = [], 0
        return pages

    def write_steps(self, columns: Sequence[Sequence[opus.OpusPacket]]) -> bytes:
        """Consecutive time steps, a sequence per channel."""
        return b"".join(self.write(step) for step in zip(*columns, strict=True))

    def close(self) -> bytes:
        """The pending audio and the page that ends the stream."""
        pages = self.flush()
        self._closed = True
        return pages + self._pages([], granule=self._granule, flags=_LAST)

    @property
    def _segments(self) -> int:
        return sum(_segments(packet) for packet in self._pending)

    def _pages(self, packets: Sequence[bytes], *, granule: int, flags: int = 0) -> bytes:
        """Pages for ``packets``; only a packet over 255 lacing values spans several."""
        lacing = [value for packet in packets for value in _lacing(packet)]
        body = memoryview(b"".join(packets))
        out = []
        continued = 0
        while True:
            take, lacing = lacing[:_MAX_SEGMENTS], lacing[_MAX_SEGMENTS:]
            size = sum(take)
            final = not lacing
            header = _PAGE_HEADER.pack(
                _CAPTURE,
                0,
                continued | (flags if final else flags & _FIRST),
                granule if final else -1,  # no packet ends on a page that goes on
                self._serial,
                self._sequence,
                0,
                len(take),
            )
            page = header + bytes(take) + body[:size]
            body = body[size:]
            out.append(page[:22] + struct.pack("<I", ogg_crc(page)) + page[26:])
            self._sequence += 1
            flags &= ~_FIRST
            continued = _CONTINUED
            if final:
                return b"".join(out)


def _lacing(packet: bytes) -> list[int]:
    """RFC 3533 §6: 255 per full segment, then the rest (0 if the packet fills them)."""
    return [255] * (len(packet) // 255) + [len(packet) % 255]


def _segments(packet: bytes) -> int:
    return len(packet) // 255 + 1

"""How long a live capture's audio lasts, read from its container as it streams by.

After a crash the process that counted a capture's samples is gone; the container
still says it. Ogg Opus (RFC 7845): the granule position of the last *whole* page
(a decoder stops at a page cut short), less the pre-skip of ``OpusHead``, at 48 kHz.
Sun ``.au`` holding G.711: one byte per sample per channel after the header. Only
the first page's body is kept; the rest is skipped, so memory stays a page header.
Matroska holding G.722 (as live capture writes it: a Segment and Clusters of unknown
size): the end of the last whole block, from its cluster's timestamp, its own offset
and its length at 8000 bytes per second; block bodies are skipped.
"""

from __future__ import annotations

import struct

_OPUS_RATE = 48_000
_PAGE = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, seq, crc, segments
_AU = struct.Struct(">4sIIIII")  # magic, data offset, data size, encoding, rate, channels
_AU_ONE_BYTE = {1, 27}  # μ-law, A-law
_MKA_ENTER = {b"\x18\x53\x80\x67", b"\x1f\x43\xb6\x75"}  # Segment, Cluster: read inside
_MKA_TIMESTAMP, _MKA_BLOCK = b"\xe7", b"\xa3"  # a Cluster's Timestamp; a SimpleBlock
_G722_BYTES_PER_MS = 8


def _vint_length(first: int) -> int:
    """An EBML number's length in bytes, told by its first byte's leading zeros."""
    if first == 0:
        raise ValueError("not EBML")
    return 9 - first.bit_length()


class _MatroskaLength:
    """Follows the element headers of live G.722 Matroska; ``end_ms``: last whole block's end."""

    def __init__(self) -> None:
        self._head = bytearray()  # the element header being read
        self._element: bytes | None = None  # Timestamp or SimpleBlock: its first bytes wanted
        self._size = 0
        self._body = bytearray()
        self._skip = 0  # body bytes to pass over
        self._block_end: float | None = None  # where the block being passed over ends, ms
        self._cluster_ms: int | None = None
        self.end_ms: float | None = None
        self.broken = False

    def feed(self, view: memoryview) -> None:
        try:
            while view and not self.broken:
                if self._skip:
                    taken = min(self._skip, len(view))
                    self._skip -= taken
                    view = view[taken:]
                    if not self._skip:
                        self._block_done()
                elif self._element is not None:
                    want = 8 if self._element == _MKA_TIMESTAMP else 4
                    take = view[: min(want, self._size) - len(self._body)]
                    self._body += take
                    view = view[len(take) :]
                    if len(self._body) == min(want, self._size):
                        self._read_body()
                else:
                    take = view[: self._head_length() - len(self._head)]
                    self._head += take
                    view = view[len(take) :]
                    if len(self._head) == self._head_length():
                        self._read_head()
        except ValueError:
            self.broken = True

    def _head_length(self) -> int:
        """Bytes of the element header being read, as far as its first bytes tell."""
        head = self._head
        if not head:
            return 1
        id_length = _vint_length(head[0])
        if len(head) <= id_length:
            return id_length + 1
        return id_length + _vint_length(head[id_length])

    def _read_head(self) -> None:
        id_length = _vint_length(self._head[0])
        element, size_bytes = bytes(self._head[:id_length]), self._head[id_length:]
        all_ones = (1 << (7 * len(size_bytes))) - 1
        size = int.from_bytes(size_bytes, "big") & all_ones
        self._head.clear()
        if element in _MKA_ENTER:
            return  # its children follow
        if size == all_ones:
            raise ValueError("an element of unknown size that holds no others")
        if element == _MKA_TIMESTAMP or (element == _MKA_BLOCK and self._cluster_ms is not None):
            self._element, self._size = element, size
            self._body.clear()
        else:
            self._skip = size

    def _read_body(self) -> None:
        element, body, size = self._element, self._body, self._size
        self._element = None
        if element == _MKA_TIMESTAMP:
            if size > 8:
                raise ValueError("a cluster timestamp longer than 8 bytes")
            self._cluster_ms = int.from_bytes(body, "big")
            return
        assert self._cluster_ms is not None
        if size < 4 or not body[0] & 0x80:  # a one-byte track number, a 16-bit offset, flags
            raise ValueError("a block unlike the live writer's")
        offset = int.from_bytes(body[1:3], "big", signed=True)
        self._block_end = self._cluster_ms + offset + (size - 4) / _G722_BYTES_PER_MS
        self._skip = size - 4
        if not self._skip:
            self._block_done()

    def _block_done(self) -> None:
        if self._block_end is not None:
            self.end_ms = max(self.end_ms or 0.0, self._block_end)
            self._block_end = None


class DurationProbe:
    """Feed a container's bytes in order; ``seconds`` is the length of what decodes."""

    def __init__(self, container: str) -> None:
        self._container = container
        self._size = 0
        self._header = bytearray()  # the current Ogg page's header, or the .au header
        self._body: int | None = None  # bytes of the current page body still to skip
        self._first = bytearray()  # the first page's body: OpusHead
        self._pages = 0
        self._granule: int | None = None
        self._broken = False
        self._matroska = _MatroskaLength() if container == "mka" else None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._size += len(view)
        if self._container == "au":
            self._header += view[: _AU.size - len(self._header)]
        elif self._container == "ogg":
            self._feed_ogg(view)
        elif self._matroska is not None:
            self._matroska.feed(view)

    def _feed_ogg(self, view: memoryview) -> None:
        while view and not self._broken:
            if self._body is not None:  # inside a page's body
                take = view[: self._body]
                if self._pages == 0:
                    self._first += take
                self._body -= len(take)
                view = view[len(take) :]
                if self._body == 0:
                    self._end_page()
                continue
            whole = _PAGE.size + (self._header[26] if len(self._header) >= _PAGE.size else 0)
            take = view[: whole - len(self._header)]
            self._header += take
            view = view[len(take) :]
            if len(self._header) < _PAGE.size:
                continue
            if self._header[:4] != b"OggS":
                self._broken = True  # not Ogg after all: no duration
            elif len(self._header) == _PAGE.size + self._header[26]:
                self._body = sum(self._header[_PAGE.size :])
                if self._body == 0:
                    self._end_page()

    def _end_page(self) -> None:
        granule: int = _PAGE.unpack_from(self._header)[3]
        if granule != -1:  # -1: no packet ends on this page
            self._granule = granule
        self._pages += 1
        self._header.clear()
        self._body = None

    def seconds(self) -> float | None:
        """The audio's length, or None if the container does not say."""
        if self._container == "au" and len(self._header) == _AU.size:
            magic, offset, _size, encoding, rate, channels = _AU.unpack(self._header)
            if magic != b".snd" or encoding not in _AU_ONE_BYTE or not rate or not channels:
                return None
            samples: int = max(0, self._size - int(offset)) // int(channels)
            return samples / int(rate)
        if self._matroska is not None:
            ended = self._matroska.end_ms
            return None if self._matroska.broken or ended is None else ended / 1000
        if self._container != "ogg" or self._broken or self._granule is None:
            return None
        if not self._first.startswith(b"OpusHead") or len(self._first) < 12:
            return None
        pre_skip: int = struct.unpack_from("<H", self._first, 10)[0]
        return max(0, self._granule - pre_skip) / _OPUS_RATE

"""How long a live capture's audio lasts, read from its container as it streams by.

After a crash the process that counted a capture's samples is gone; the container
still says it. Ogg Opus (RFC 7845): the granule position of the last *whole* page
(a decoder stops at a page cut short), less the pre-skip of ``OpusHead``, at 48 kHz.
Sun ``.au`` holding G.711: one byte per sample per channel after the header. Only
the first page's body is kept; the rest is skipped, so memory stays a page header.
"""

from __future__ import annotations

import struct

_OPUS_RATE = 48_000
_PAGE = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, seq, crc, segments
_AU = struct.Struct(">4sIIIII")  # magic, data offset, data size, encoding, rate, channels
_AU_ONE_BYTE = {1, 27}  # μ-law, A-law


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

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._size += len(view)
        if self._container == "au":
            self._header += view[: _AU.size - len(self._header)]
        elif self._container == "ogg":
            self._feed_ogg(view)

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
        if self._container != "ogg" or self._broken or self._granule is None:
            return None
        if not self._first.startswith(b"OpusHead") or len(self._first) < 12:
            return None
        pre_skip: int = struct.unpack_from("<H", self._first, 10)[0]
        return max(0, self._granule - pre_skip) / _OPUS_RATE

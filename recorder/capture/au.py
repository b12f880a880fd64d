"""G.711 in the Sun/NeXT ``.au`` container: a fixed header, then samples, nothing to patch.

The header's data size may say "unknown" (0xFFFFFFFF), so a live spool is written
front to back and a stream cut short by a crash is still a whole file up to its last
byte. μ-law and A-law are the container's own encodings 1 and 27, so the samples are
kept exactly as they came in RTP; channels are interleaved sample by sample.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

RATE = 8000
_HEADER = struct.Struct(">4sIIIII")
_UNKNOWN_SIZE = 0xFFFFFFFF
_ENCODING = {"pcmu": 1, "pcma": 27}
# The byte each law uses for a zero sample: what a gap becomes.
SILENCE = {"pcmu": 0xFF, "pcma": 0xD5}


class AuWriter:
    """Interleaves the channels' G.711 samples of each time step into ``.au`` bytes."""

    def __init__(self, channels: int, law: Literal["pcmu", "pcma"]) -> None:
        if not 1 <= channels <= 255:
            raise ValueError(f"{channels} channels: between 1 and 255")
        self.channels, self.law = channels, law
        self.samples = 0

    def start(self) -> bytes:
        return _HEADER.pack(
            b".snd", _HEADER.size, _UNKNOWN_SIZE, _ENCODING[self.law], RATE, self.channels
        )

    def write(self, streams: Sequence[bytes]) -> bytes:
        """One time step: the same number of samples from every channel, interleaved."""
        return self.write_steps([[stream] for stream in streams])

    def write_steps(self, columns: Sequence[Sequence[bytes]]) -> bytes:
        """Consecutive time steps, a sequence per channel, interleaved in one pass.

        A live call hands out a tenth of a second at a time: joining each channel's
        slots and interleaving once costs far less than doing it step by step.
        """
        if len(columns) != self.channels:
            raise ValueError(f"{len(columns)} streams for {self.channels} channels")
        joined = [b"".join(column) for column in columns]
        length = len(joined[0])
        if any(len(samples) != length for samples in joined):
            raise ValueError("the channels' samples of one time step differ in length")
        self.samples += length
        if self.channels == 1:
            return joined[0]
        out = bytearray(length * self.channels)
        for index, samples in enumerate(joined):
            out[index :: self.channels] = samples
        return bytes(out)

    def close(self) -> bytes:
        return b""

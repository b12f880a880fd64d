"""What one channel's sender sent and what reached us, from RTP sequence numbers.

A sender numbers its packets one by one, so the numbers a channel has seen tell how
many it sent: packets *expected* are the span from the first number to the highest,
and packets *lost* are those expected that never arrived (RFC 3550 §6.4.1, computed as
in its appendix A.3). Unlike gaps in the timestamps, this is not fooled by a sender
that stays quiet on purpose (DTX) or by a pause, during which packets still arrive and
are dropped by the capture session, not lost. A new SSRC (a restarted sender) starts
a new run whose counts add to the old one's.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEQ_MOD = 1 << 16


@dataclass(slots=True)
class Reception:
    """Packets received on one channel, and how many its sender numbered."""

    received: int = 0
    _expected_before: int = 0  # expected over the SSRC runs before this one
    _received_before: int = 0
    _ssrc: int | None = None
    _base: int = 0  # the first sequence number of this run, extended
    _highest: int = 0  # the highest, extended across wrap-arounds

    def receive(self, ssrc: int, sequence: int) -> None:
        """A packet arrived with this SSRC and 16-bit sequence number."""
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                self._expected_before += self._run_expected()
                self._received_before = self.received
            self._ssrc, self._base, self._highest = ssrc, sequence, sequence
        else:
            delta = (sequence - self._highest) % _SEQ_MOD
            if delta < _SEQ_MOD // 2:  # ahead (or a duplicate): the highest moves on
                self._highest += delta
        self.received += 1

    def _run_expected(self) -> int:
        return self._highest - self._base + 1 if self._ssrc is not None else 0

    @property
    def expected(self) -> int:
        """Packets the sender numbered, from the first one seen to the highest."""
        return self._expected_before + self._run_expected()

    @property
    def lost(self) -> int:
        """Packets numbered that never arrived (duplicates do not make it negative)."""
        run_received = self.received - self._received_before
        run_lost = max(self._run_expected() - run_received, 0)
        before = max(self._expected_before - self._received_before, 0)
        return before + run_lost

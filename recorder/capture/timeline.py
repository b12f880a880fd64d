"""One channel's timeline: RTP packets placed by their timestamps on the call's clock.

Every channel of a call is cut into slots of equal length on one wall clock that starts
when capture starts, so the channels stay in step whatever their senders do. A packet's
slot follows from its RTP timestamp, anchored to the wall clock by the first packet
(a late start is silence before it). A slot is handed out once the wall clock has passed
it by the reorder allowance: a packet that arrives within it finds its place, later ones
and duplicates are dropped, and a slot nobody filled (loss, a pause, a silent sender) is
``None``, which the container turns into silence. A timestamp that jumps away from the
wall clock (a new SSRC, a restarted sender) anchors the channel afresh, and so does the
first packet after a pause.

Pure: times are seconds on a monotonic clock, passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_TS_MOD = 1 << 32
_TS_HALF = _TS_MOD // 2


@dataclass(slots=True)
class ChannelStats:
    received: int = 0  # packets placed on the timeline
    late: int = 0  # arrived after their slot was handed out
    duplicates: int = 0  # a slot already held
    filled: int = 0  # slots handed out with audio
    silent: int = 0  # slots handed out empty (loss, pause, late start)
    resyncs: int = 0  # anchored afresh after a timestamp jump


@dataclass(slots=True)
class Timeline(Generic[T]):
    """Slots of ``slot`` samples at ``rate`` Hz, from the wall time ``start`` on."""

    rate: int
    slot: int
    start: float
    reorder_s: float = 0.08
    resync_s: float = 2.0
    stats: ChannelStats = field(default_factory=ChannelStats)
    _anchor: tuple[int, int] | None = None  # (extended RTP timestamp, slot index)
    _ssrc: int | None = None
    _last_ts: int = 0
    _slots: dict[int, T] = field(default_factory=dict)
    _next: int = 0  # the first slot not yet handed out

    def _wall_slot(self, now: float) -> int:
        return round((now - self.start) * self.rate) // self.slot

    def receive(self, ssrc: int, timestamp: int, slots: Sequence[T], now: float) -> None:
        """Place a packet, already cut into slots, by its timestamp.

        Runs for every packet of every call: locals rather than helpers.
        """
        slot = self.slot
        arrival = max(round((now - self.start) * self.rate) // slot, self._next)
        anchor = self._anchor
        if anchor is not None and ssrc == self._ssrc:
            # The 32-bit timestamp made monotonic across wrap-arounds (RFC 3550 §5.1).
            delta = (timestamp - self._last_ts) % _TS_MOD
            extended = self._last_ts + (delta - _TS_MOD if delta >= _TS_HALF else delta)
        else:
            extended = timestamp
            anchor = self._anchor = (extended, arrival)
            self._ssrc = ssrc
        first = anchor[1] + (extended - anchor[0]) // slot
        if abs(first - arrival) * slot > self.resync_s * self.rate:
            self.stats.resyncs += 1
            self._anchor, first = (extended, arrival), arrival
        self._last_ts = extended
        self.stats.received += 1
        held, upcoming = self._slots, self._next
        for index, content in enumerate(slots, start=first):
            if index < upcoming:
                self.stats.late += 1
            elif index in held:
                self.stats.duplicates += 1
            else:
                held[index] = content

    def reanchor(self) -> None:
        """Let the next packet anchor the channel afresh, wherever its timestamp points.

        After a pause the sender's clock says nothing about the wall clock: an SRC that
        went ``inactive`` resumes with timestamps that skipped less (or more) than the
        pause lasted, and its packets would otherwise all land behind the playout point.
        """
        self._anchor = None

    def playout_slot(self, now: float) -> int:
        """The first slot the wall clock has not yet passed by the reorder allowance."""
        return self._wall_slot(now - self.reorder_s)

    def end_slot(self, now: float) -> int:
        """Past the wall clock and the last slot received: where the channel ends now."""
        last = max(self._slots, default=self._next - 1) + 1
        return max(self._wall_slot(now), last)

    def take(self, until: int) -> list[T | None]:
        """Hand out the slots before ``until``, in order; ``None`` where none arrived."""
        out: list[T | None] = []
        for index in range(self._next, until):
            content = self._slots.pop(index, None)
            out.append(content)
            if content is None:
                self.stats.silent += 1
            else:
                self.stats.filled += 1
        self._next = max(self._next, until)
        return out

"""The capture session: one live call, whatever carries its media (WHIP, SIPREC).

A pure state machine over ``now``: the transport hands it RTP payloads and call
control, and it hands back the container bytes to append to the call's spool.

    awaiting_caller_consent ──accepted──▶ capturing ⇄ paused
            │ declined / opt-out               │ end, media timeout, max duration
            ▼                                  ▼
        discarded ◀──── opt-out ────────── ended

Until the caller accepts (an ``all_party`` call) media is dropped, not buffered: no
audio exists before consent. Capture starts the call's clock; every channel is a
timeline on it, so loss, pauses and a party who starts late become silence and the
channels stay in step. A pause drops media and leaves silence. Opt-out discards: what
the session produced must go, and the transport's adapter removes the spool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from recorder.capture.codecs import Codec, Container
from recorder.capture.timeline import ChannelStats, Timeline

T = TypeVar("T")


class CaptureState(StrEnum):
    AWAITING_CALLER_CONSENT = "awaiting_caller_consent"
    CAPTURING = "capturing"
    PAUSED = "paused"
    ENDED = "ended"
    DISCARDED = "discarded"


class EndCause(StrEnum):
    ENDED = "ended"  # the publisher or the platform ended the call
    MEDIA_TIMEOUT = "media_timeout"  # no packet for too long: the publisher vanished
    MAX_DURATION = "max_duration"
    CONSENT_REVOKED = "consent_revoked"  # the grant went; what came before is kept
    CALLER_DECLINED = "caller_declined"
    CALLER_OPTED_OUT = "caller_opted_out"


_LIVE = (CaptureState.AWAITING_CALLER_CONSENT, CaptureState.CAPTURING, CaptureState.PAUSED)
_CAPTURING = CaptureState.CAPTURING


class SessionClosed(ValueError):
    """Call control on a session that has ended or been discarded."""


@dataclass(slots=True)
class CaptureSession(Generic[T]):
    """One live call's channels, its state, and the container its audio goes into."""

    codec: Codec[T]
    channels: int
    now: float
    awaiting_caller_consent: bool = False
    media_timeout_s: float = 30.0
    max_duration_s: float = 4 * 3600.0
    serial: int = 1
    state: CaptureState = field(init=False)
    cause: EndCause | None = field(init=False, default=None)
    captured_at: float | None = field(init=False, default=None)
    dropped: int = field(init=False, default=0)  # packets outside capture, or malformed
    heard: bool = field(init=False, default=False)  # a packet was kept: there is audio
    malformed: int = field(init=False, default=0)
    _last_media: float = field(init=False)
    _pending: bytes = field(init=False, default=b"")  # the container's header, once capturing
    # Steps where no channel had audio, held back until audio follows or the call ends:
    # a publisher that vanished is then stored without the silence of the media timeout.
    _held: int = field(init=False, default=0)
    _timelines: list[Timeline[T]] = field(init=False, default_factory=list)
    _writer: Container[T] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError("a capture session has at least one channel")
        self._last_media = self.now
        self.state = CaptureState.AWAITING_CALLER_CONSENT
        if not self.awaiting_caller_consent:
            self._capture(self.now)

    @property
    def live(self) -> bool:
        return self.state in _LIVE

    @property
    def stats(self) -> list[ChannelStats]:
        return [timeline.stats for timeline in self._timelines]

    @property
    def duration_s(self) -> float:
        """Audio written so far, per channel."""
        return 0.0 if self._writer is None else self._writer.samples / self.codec.rate

    def _capture(self, now: float) -> None:
        self.state, self.captured_at = CaptureState.CAPTURING, now
        self._timelines = [
            Timeline(rate=self.codec.rate, slot=self.codec.slot, start=now)
            for _ in range(self.channels)
        ]
        self._writer = self.codec.writer(self.channels, serial=self.serial)
        self._pending = self._writer.start()

    def media(self, channel: int, ssrc: int, timestamp: int, payload: bytes, now: float) -> None:
        """An RTP payload for ``channel``; kept only while capturing."""
        if not 0 <= channel < self.channels:
            raise ValueError(f"no channel {channel} in a {self.channels}-channel session")
        self._last_media = now
        if self.state is not _CAPTURING:  # awaiting the caller, paused, or over
            self.dropped += 1
            return
        try:
            slots = self.codec.split(payload)
        except ValueError:
            self.malformed += 1
            self.dropped += 1
            return
        self._timelines[channel].receive(ssrc, timestamp, slots, now)
        self.heard = True

    def caller_answered(self, *, accepted: bool, now: float) -> None:
        """The caller's answer to the notice; capture starts on ``accepted``."""
        self._require_live("caller consent")
        if self.state != CaptureState.AWAITING_CALLER_CONSENT:
            raise SessionClosed(f"the session is {self.state}, not awaiting the caller's consent")
        if accepted:
            self._capture(now)
        else:
            self._discard(EndCause.CALLER_DECLINED)

    def pause(self) -> None:
        """Media is dropped from now on; the timelines leave silence in its place."""
        self._require_live("pause")
        if self.state == CaptureState.CAPTURING:
            self.state = CaptureState.PAUSED

    def resume(self) -> None:
        self._require_live("resume")
        if self.state == CaptureState.PAUSED:
            self.state = CaptureState.CAPTURING
            for timeline in self._timelines:
                timeline.reanchor()

    def opt_out(self) -> None:
        """The caller withdrew: everything captured must go."""
        self._require_live("opt-out")
        self._discard(EndCause.CALLER_OPTED_OUT)

    def end(self, now: float, cause: EndCause = EndCause.ENDED) -> bytes:
        """End the call: the rest of every channel, and the container's end."""
        self._require_live("end")
        return self._end(max((t.end_slot(now) for t in self._timelines), default=0), cause)

    def poll(self, now: float) -> bytes:
        """What the wall clock has made final; ends the session on a timeout."""
        if not self.live:
            return b""
        if self.state == CaptureState.PAUSED:
            # A paused sender may stop (SIPREC's a=inactive, a hold): its silence is no
            # sign it vanished, and the media timeout's wait starts again at the resume.
            self._last_media = max(self._last_media, now)
        if now - self._last_media > self.media_timeout_s:
            # The call ends with its last packet, not with the silence of the wait.
            self._held = 0
            last = self._last_media
            return self._end(
                max((t.end_slot(last) for t in self._timelines), default=0), EndCause.MEDIA_TIMEOUT
            )
        if self.captured_at is not None and now - self.captured_at > self.max_duration_s:
            limit = self.captured_at + self.max_duration_s
            return self._end(self._slot_at(limit), EndCause.MAX_DURATION)
        if self._writer is None:
            return b""
        return self._emit(min(timeline.playout_slot(now) for timeline in self._timelines))

    def _slot_at(self, moment: float) -> int:
        assert self.captured_at is not None
        return round((moment - self.captured_at) * self.codec.rate) // self.codec.slot

    def _end(self, until: int, cause: EndCause) -> bytes:
        if self._writer is None or not self.heard:  # nothing was ever captured
            self._discard(cause)
            return b""
        out = self._emit(until)
        out += self._release_held() + self._writer.close()
        self.state, self.cause = CaptureState.ENDED, cause
        return out

    def _emit(self, until: int) -> bytes:
        """The header if not yet out, then every channel's slots before ``until``."""
        assert self._writer is not None
        columns = [timeline.take(until) for timeline in self._timelines]
        out, self._pending = self._pending, b""
        steps = len(columns[0])
        heard = max(_last_heard(column) for column in columns) + 1
        if not heard:
            self._held += steps
            return out
        # Steps before the last one heard are written, silence where nothing came (held
        # steps first); the silent steps after it are held back.
        silence = self.codec.silence()
        lead = [silence] * self._held
        self._held = steps - heard
        filled = [
            lead + [silence if slot is None else slot for slot in column[:heard]]
            for column in columns
        ]
        return out + self._writer.write_steps(filled)

    def _release_held(self) -> bytes:
        assert self._writer is not None
        held, self._held = self._held, 0
        if not held:
            return b""
        return self._writer.write_steps([[self.codec.silence()] * held] * self.channels)

    def _discard(self, cause: EndCause) -> None:
        self.state, self.cause = CaptureState.DISCARDED, cause
        self._timelines, self._writer = [], None

    def _require_live(self, action: str) -> None:
        if not self.live:
            raise SessionClosed(f"cannot {action}: the session is {self.state}")


def _last_heard(column: Sequence[object | None]) -> int:
    """The index of the last slot that holds audio; -1 if none does."""
    for index in range(len(column) - 1, -1, -1):
        if column[index] is not None:
            return index
    return -1

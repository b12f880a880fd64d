"""Live calls on this replica: capture sessions fed by a transport, written to the vault.

A transport (WHIP, SIPREC) opens a ``LiveCall`` from the call's decision, hands it RTP
payloads, and closes it. Everything else happens here, the same for every transport:

- the decision is checked (it must allow recording on this transport's channel) and
  the recording is catalogued at once, so a decision starts one live capture only:
  the catalog refuses a second recording for the call;
- a loop polls each session on the wall clock and appends what it made final to the
  recording's encrypted spool, whose parts leave for S3 during the call;
- the call's row is the truth for call control: the loop reads the rows of its live
  calls twice a second, so caller consent, pause, resume, opt-out and end reach a
  session within a second whichever replica took the request, and at once when this
  replica committed them (the audit feed wakes the loop);
- an ended session is stored (``Vault.finish``), a discarded one leaves nothing
  (``Vault.discard``: spool removed, upload aborted, key destroyed, audited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from consent import ledger
from consent.decision import recheck
from consent.decisions import CallDecision, CallerAnswer, CallState, decision_of
from consent.errors import NotFound, PermissionDenied, StateConflict
from consent.lapse import lapse_call
from recorder._exceptions import CaptureBusy, UnknownSession
from recorder.capture import PacketSink
from recorder.capture.codecs import Codec
from recorder.capture.reception import Reception
from recorder.capture.session import CaptureSession, CaptureState, EndCause
from storage import audit_feed
from storage.audit import AuditEntry, AuditLog
from storage.audit_feed import FedEvent
from storage.catalog import Recording
from storage.db import session_scope
from storage.errors import CallrecError
from storage.ids import new_id
from storage.spool import SpoolWriter
from storage.vault import RecordingDraft, Vault

log = logging.getLogger(__name__)

# Audit events after which a live call's row or grant may say something new.
_CONTROL_KINDS = ("call.", "consent.revoked")


@dataclass(frozen=True)
class CallControl:
    """What a live call's row and its grant say at one moment."""

    call: CallDecision
    lapsed: bool = False  # its grant was revoked or ran out during the capture
    purge: bool = False  # ... by a revocation with purge_existing: keep nothing


@dataclass(frozen=True)
class LiveLimits:
    max_sessions: int = 200
    max_duration_s: float = 4 * 3600.0
    media_timeout_s: float = 30.0
    tick_s: float = 0.1  # how often sessions hand out what the wall clock made final
    control_s: float = 0.5  # how often the call rows are read for call control


@dataclass
class LiveTally:
    """The live calls' figures for ``/metrics``: the calls now live, and those settled.

    ``received``: RTP packets that reached a session (also while paused or awaiting the
    caller). ``lost``: packets their senders numbered that never arrived (RFC 3550
    §6.4.1). ``late``: packets that arrived after their place in the recording had been
    written (beyond the reorder allowance): received, yet silence in the recording.
    ``spooled``: container bytes appended to the recordings' spools (before encryption).
    """

    active: int = 0
    received: int = 0
    lost: int = 0
    late: int = 0
    spooled: int = 0
    ended: dict[str, int] = field(default_factory=dict)  # sessions settled, by cause

    def add(self, call: LiveCall) -> None:
        self.received += sum(r.received for r in call.reception)
        self.lost += sum(r.lost for r in call.reception)
        self.late += sum(s.late for s in call.session.stats)
        self.spooled += call.writer.plaintext_size


@dataclass
class LiveCall:
    """One live call on this replica."""

    id: str
    client_id: str
    call_id: str
    decision_id: str
    session: CaptureSession[Any]
    writer: SpoolWriter
    close_transport: Callable[[], Awaitable[None]]
    recording: Recording | None = None
    purge: bool = False  # discard what was captured: the grant went with purge_existing
    reception: list[Reception] = field(default_factory=list)  # one per channel
    settling: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class LiveCaptures:
    """The live calls of this replica, and the loop that writes and controls them."""

    def __init__(
        self,
        *,
        vault: Vault,
        engine: Engine,
        audit: AuditLog,
        clock: Callable[[], datetime],
        limits: LiveLimits | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vault, self._engine, self._audit, self._clock = vault, engine, audit, clock
        self.limits = limits or LiveLimits()
        self._monotonic = monotonic
        self._calls: dict[str, LiveCall] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._heard: audit_feed.Watcher | None = None
        self._wake = asyncio.Event()  # set when call control was committed here
        self.ended: dict[str, int] = {}  # sessions ended or discarded, by cause
        self._settled = LiveTally()  # the figures of calls no longer live
        # A scrape reads from another thread: a call is counted live or settled, never both.
        self._tally_lock = threading.Lock()

    @property
    def active(self) -> int:
        return len(self._calls)

    def tally(self) -> LiveTally:
        """Figures of every call this replica has held, live ones as they are now."""
        with self._tally_lock:
            calls = list(self._calls.values())
            settled = self._settled
            tally = LiveTally(
                len(calls),
                settled.received,
                settled.lost,
                settled.late,
                settled.spooled,
                dict(self.ended),
            )
            for call in calls:
                tally.add(call)
        return tally

    def get(self, live_id: str, *, client_id: str | None) -> LiveCall:
        """A live call by id; another tenant's is as unknown as a missing one."""
        call = self._calls.get(live_id)
        if call is None or (client_id is not None and call.client_id != client_id):
            raise UnknownSession(f"no live session {live_id}")
        return call

    def decision_for(
        self, decision_id: str, *, client_id: str, channel: str, actor: str
    ) -> CallDecision:
        """The decision a live capture starts from, if it allows one on ``channel`` now.

        Its grant is checked again first: a decision made before a revocation or before
        its grant ran out is refused like one made after (``consent.lapse``).
        """
        now = self._clock()
        with session_scope(self._engine) as session:
            decision = session.get(CallDecision, decision_id)
            if decision is None or decision.client_id != client_id:
                raise NotFound(f"no decision {decision_id}", code="unknown_decision")
            if decision.channel != channel:
                raise StateConflict(
                    f"decision {decision_id} is for the {decision.channel} channel, not {channel}",
                    code="wrong_channel",
                )
            events: list[AuditEntry] = []
            if lapse_call(session, decision, actor=actor, events=events, now=now):
                self._audit.append_many(session, events, now=now)
            session.flush()
            session.expunge(decision)
        if not (decision.record or decision.awaiting_caller_consent):
            raise PermissionDenied(
                f"call {decision.call_id} may not be recorded ({decision.reason})",
                code=decision.reason,
            )
        if decision.state not in (CallState.OPEN, CallState.PAUSED):
            raise StateConflict(f"call {decision.call_id} is {decision.state}", code="call_state")
        return decision

    async def open(
        self,
        decision: CallDecision,
        *,
        codec: Codec[Any],
        channels: int,
        close_transport: Callable[[], Awaitable[None]],
        prefix: str,
    ) -> LiveCall:
        """Catalogue the recording and start the capture session for ``decision``."""
        if self.active >= self.limits.max_sessions:
            raise CaptureBusy(f"this gateway already holds {self.active} live sessions")
        now = self._clock()
        draft = RecordingDraft(
            client_id=decision.client_id,
            call_id=decision.call_id,
            decision_id=decision.id,
            channel=decision.channel,
            codec=codec.name,
            container=codec.container,
            channels=channels,
            purposes=decision.purpose_expiries(),
            started_at=now,
        )
        writer = await asyncio.to_thread(self._vault.begin, draft, now=now)
        session: CaptureSession[Any] = CaptureSession(
            codec,
            channels=channels,
            now=self._monotonic(),
            awaiting_caller_consent=decision.awaiting_caller_consent,
            media_timeout_s=self.limits.media_timeout_s,
            max_duration_s=self.limits.max_duration_s,
        )
        if decision.state == CallState.PAUSED:
            session.pause()
        call = LiveCall(
            id=new_id(prefix, now),
            client_id=decision.client_id,
            call_id=decision.call_id,
            decision_id=decision.id,
            session=session,
            writer=writer,
            close_transport=close_transport,
            reception=[Reception() for _ in range(channels)],
        )
        self._calls[call.id] = call
        log.info(
            "live session %s started: call %s, client %s, %d channel(s), %s",
            call.id,
            call.call_id,
            call.client_id,
            channels,
            codec.name,
        )
        return call

    def inlet(self, call: LiveCall, channel: int) -> PacketSink:
        """Where a transport hands each RTP packet of ``channel``: its SSRC, sequence
        number (to count loss), timestamp and payload.

        A closure over the channel's parts: it runs for every packet of every call.
        """
        if not 0 <= channel < len(call.reception):
            raise ValueError(f"no channel {channel} in a {len(call.reception)}-channel call")
        count, media, monotonic = (
            call.reception[channel].receive,
            call.session.media,
            self._monotonic,
        )

        def packet(ssrc: int, sequence: int, timestamp: int, payload: bytes) -> None:
            count(ssrc, sequence)
            media(channel, ssrc, timestamp, payload, monotonic())  # kept while capturing

        return packet

    async def end(self, call: LiveCall, cause: EndCause = EndCause.ENDED) -> Recording | None:
        """End a call at once (the publisher's DELETE, a BYE) and store what it captured."""
        if call.session.live:
            call.writer.write(call.session.end(self._monotonic(), cause))
        await self._settle(call)
        await call.settled.wait()  # the loop may be the one storing it
        return call.recording

    def wake(self) -> None:
        """Read the live calls' rows now: call control was just committed on this loop.

        The audit feed wakes the loop as the COMMIT is sent, which a read may overtake;
        a transport that committed the change itself (a SIPREC pause) calls this after.
        """
        self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def heard(events: Sequence[FedEvent]) -> None:
            # Runs in the thread that committed; call control made on this gateway
            # reaches its sessions at once instead of at the next read of the rows.
            if self._calls and any(e.kind.startswith(_CONTROL_KINDS) for e in events):
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(self._wake.set)

        self._unwatch()  # a second start replaces the first's (its loop may be gone)
        audit_feed.watch(self._engine, heard)
        self._heard = heard
        self._loop_task = asyncio.create_task(self._run(), name="live-captures")

    async def stop(self) -> None:
        """Store every live call (the gateway is stopping), then stop the loop."""
        self._unwatch()
        if self._loop_task is not None:
            self._loop_task.cancel()
            # An ASGI host may run shutdown on another loop than startup: the task ends
            # with its own loop then, and cannot be awaited from this one.
            if self._loop_task.get_loop() is asyncio.get_running_loop():
                await asyncio.gather(self._loop_task, return_exceptions=True)
        for call in list(self._calls.values()):
            await self.end(call)

    def _unwatch(self) -> None:
        if self._heard is not None:
            audit_feed.unwatch(self._engine, self._heard)
            self._heard = None

    async def _run(self) -> None:
        last_control = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.limits.tick_s)
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                now = self._monotonic()
                if woken or now - last_control >= self.limits.control_s:
                    last_control = now
                    await self._apply_control()
                for call in list(self._calls.values()):
                    if call.session.live:
                        call.writer.write(call.session.poll(self._monotonic()))
                    if not call.session.live:
                        await self._settle(call)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad tick must not stop every live call
                log.exception("live capture loop")

    async def _apply_control(self) -> None:
        """Bring every session in line with its call's row and its grant."""
        if not self._calls:
            return
        by_decision = {call.decision_id: call for call in self._calls.values()}
        controls = await asyncio.to_thread(self._read_control, list(by_decision))
        for control in controls:
            call = by_decision[control.call.id]
            call.purge = call.purge or control.purge
            call.writer.write(_apply(call.session, control, now=self._monotonic()))

    def _read_control(self, decision_ids: Sequence[str]) -> list[CallControl]:
        """The rows of these calls, each with whether its grant has gone since."""
        now = self._clock()
        with Session(self._engine) as session:
            query = select(CallDecision).where(col(CallDecision.id).in_(decision_ids))
            rows = list(session.exec(query))
            # Live calls share a few grants: each is read and built once.
            grants: dict[tuple[str, str], tuple[tuple[Any, Any] | None, Any]] = {}
            controls = []
            for row in rows:
                lapsed = purge = False
                if row.record and row.grant_id is not None:
                    key = (row.client_id, row.grant_id)
                    if key not in grants:
                        found = ledger.grant_events(session, *key)
                        grants[key] = (found, None if found is None else ledger.to_grant(*found))
                    found, grant = grants[key]
                    lapsed = not recheck(decision_of(row), grant, now).record
                    purge = (
                        lapsed
                        and found is not None
                        and bool(found[1] is not None and found[1].purge_existing)
                    )
                controls.append(CallControl(row, lapsed=lapsed, purge=purge))
        return controls  # closing the session detached the rows, loaded as they are

    async def _settle(self, call: LiveCall) -> None:
        """Store an ended session, or throw a discarded one away; once."""
        if call.settling or call.session.live:
            return
        call.settling = True
        session = call.session
        cause = session.cause or EndCause.ENDED
        with self._tally_lock:
            self.ended[cause] = self.ended.get(cause, 0) + 1
        try:
            await call.close_transport()
        except Exception:
            log.exception("live session %s: closing its transport", call.id)
        now = self._clock()
        try:
            if session.state == CaptureState.ENDED and not call.purge:
                call.recording = await asyncio.to_thread(
                    self._vault.finish, call.writer, now=now, duration_s=session.duration_s
                )
            else:
                reason = (
                    "consent revoked with purge_existing"
                    if call.purge
                    else cause.value
                    if session.heard
                    else "no media arrived"
                )
                await asyncio.to_thread(self._vault.discard, call.writer, reason=reason, now=now)
        except CallrecError:
            log.exception("live session %s: storing its recording", call.id)
        finally:
            with self._tally_lock:
                self._calls.pop(call.id, None)  # counted as live until stored or discarded
                self._settled.add(call)
            call.settled.set()
        log.info("live session %s %s (%s)", call.id, session.state, cause)


def _apply(session: CaptureSession[Any], control: CallControl, *, now: float) -> bytes:
    """What the call's row and grant say, done to its live session; what to append."""
    row = control.call
    if not session.live:
        return b""
    if row.state == CallState.OPTED_OUT:
        session.opt_out()
        return b""
    if row.state == CallState.ENDED:
        return session.end(now)
    if control.lapsed or not (row.record or row.awaiting_caller_consent):
        awaiting = session.state == CaptureState.AWAITING_CALLER_CONSENT
        if awaiting and row.caller_answer == CallerAnswer.DECLINED:
            session.caller_answered(accepted=False, now=now)
            return b""
        # The grant went: keep what came before it (unless purge_existing said not to).
        return session.end(now, EndCause.CONSENT_REVOKED)
    if session.state == CaptureState.AWAITING_CALLER_CONSENT:
        if not row.awaiting_caller_consent and row.record:
            session.caller_answered(accepted=True, now=now)
        return b""
    if row.state == CallState.PAUSED:
        session.pause()
    elif row.state == CallState.OPEN:
        session.resume()
    return b""

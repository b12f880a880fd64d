"""The audit log: append-only, every event hash-chained to the one before.

Every domain event is appended here in its caller's transaction. That makes the log the
first half of the webhook outbox: the events integrators hear of
(storage.webhook_events) are durable here once that transaction commits, and the
dispatcher fans them out to endpoints later (storage.webhook_fanout), at no cost to it.

``hash = sha256(prev_hash + canonical event)``, the first event chaining to 64 zeros.
Editing an event breaks its hash, inserting or removing one breaks the next event's
``prev_hash`` or the sequence. Removing events from the *end* leaves a valid shorter
chain, so the head (last sequence number and hash) is also kept in an anchor row,
authenticated with an HMAC under a key derived from the master key: whoever can edit
the database but does not hold the master key cannot forge it.

Every append first compares the anchor with the newest event (two rows, no walk): an
append on a chain whose end was cut, extended or rewritten would move the anchor onto
the tampered chain and make it verify. On a mismatch nothing is appended, the append
raises AuditChainBroken, and the log remembers the problem for readiness and metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from storage import audit_feed
from storage.db import connection_of
from storage.errors import AuditChainBroken
from storage.types import UTCDateTime

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_POSTGRES_LOCK_ID = 0x63616C6C  # serializes appenders across replicas


class AuditEvent(SQLModel, table=True):
    """One event of the chain."""

    __tablename__ = "audit_events"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    kind: str = Field(max_length=60, index=True)
    actor: str = Field(max_length=100)
    client_id: str | None = Field(default=None, max_length=63, index=True)
    subject: str | None = Field(default=None, max_length=200, index=True)
    data: str = Field(sa_type=sa.Text)  # canonical JSON
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditAnchor(SQLModel, table=True):
    """The authenticated head of the chain (a single row)."""

    __tablename__ = "audit_anchor"

    id: int = Field(default=1, primary_key=True)
    seq: int
    hash: str = Field(max_length=64)
    mac: str = Field(max_length=64)


# Built once: the statements of every append.
_EVENTS: sa.Table = AuditEvent.__table__  # type: ignore[attr-defined]
_ANCHOR: sa.Table = AuditAnchor.__table__  # type: ignore[attr-defined]
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:id)")
# The newest event and the anchor in one statement, hence from one snapshot: between
# two statements under PostgreSQL's READ COMMITTED another replica may commit an append.
_HEAD_AND_ANCHOR = sa.select(
    *_EVENTS.c,
    _ANCHOR.c.seq.label("anchor_seq"),
    _ANCHOR.c.hash.label("anchor_hash"),
    _ANCHOR.c.mac.label("anchor_mac"),
).select_from(
    sa.select(sa.literal(1).label("one"))
    .subquery()
    .outerjoin(_ANCHOR, _ANCHOR.c.id == 1)
    .outerjoin(_EVENTS, _EVENTS.c.seq == sa.select(sa.func.max(_EVENTS.c.seq)).scalar_subquery())
)
_INSERT_EVENT = sa.insert(_EVENTS)
_UPDATE_ANCHOR = (
    sa.update(_ANCHOR)
    .where(_ANCHOR.c.id == 1)
    .values(seq=sa.bindparam("seq"), hash=sa.bindparam("hash"), mac=sa.bindparam("mac"))
)
_INSERT_ANCHOR = sa.insert(_ANCHOR)
_HASH_AT = sa.select(_EVENTS.c.hash).where(_EVENTS.c.seq == sa.bindparam("seq"))


@dataclass(frozen=True)
class ChainReport:
    """What ``AuditLog.verify`` found: ``first_bad`` is the first event that fails."""

    ok: bool
    events: int
    first_bad: int | None = None
    problem: str | None = None


class AuditEntry(NamedTuple):
    """An event to append; the log adds its sequence number, time and hashes."""

    kind: str
    actor: str
    client_id: str | None = None
    subject: str | None = None
    data: Mapping[str, Any] | None = None


class Appended(NamedTuple):
    """What ``AuditLog.append`` wrote: the event's place in the chain."""

    seq: int
    hash: str


def canonical(event: AuditEvent) -> str:
    """The bytes that get hashed: sorted keys, no spaces, UTC time to the microsecond."""
    return _canonical(
        {
            "seq": event.seq,
            "at": event.at,
            "kind": event.kind,
            "actor": event.actor,
            "client_id": event.client_id,
            "subject": event.subject,
            "data": event.data,
        }
    )


def _canonical(fields: Mapping[Any, Any]) -> str:
    return json.dumps(
        {
            "seq": fields["seq"],
            "at": fields["at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "kind": fields["kind"],
            "actor": fields["actor"],
            "client_id": fields["client_id"],
            "subject": fields["subject"],
            "data": json.loads(fields["data"]),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    return _hash(prev_hash, canonical(event))


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The chain hash of an event given as its fields (``at`` a datetime, ``data`` its JSON
    text), by the same rules as the log: for checking events copied out of it (packs)."""
    return _hash(prev_hash, _canonical(fields))


def _hash(prev_hash: str, canonical_event: str) -> str:
    return hashlib.sha256((prev_hash + canonical_event).encode()).hexdigest()


class AuditLog:
    """Appends events and verifies the chain; ``anchor_key`` authenticates the head."""

    def __init__(self, anchor_key: bytes) -> None:
        self._anchor_key = anchor_key
        self._broken: ChainReport | None = None  # the last head check, if it failed
        # The newest event this process wrote or found intact: its content is not
        # hashed again on every append (the costliest part of the check). An edit to it
        # made since is still found by ``verify``, and nothing appended re-anchors it.
        self._known_head: tuple[int, str] | None = None
        # The furthest event up to which a walk from the start found the chain intact
        # (``verify_through``): the next walk starts there instead of at event 1.
        self._walked: tuple[int, str] = (0, GENESIS_HASH)

    @property
    def broken(self) -> str | None:
        """What the last head check found wrong, or None while the head matched."""
        report = self._broken
        return report.problem if report is not None else None

    def check_head(self, session: Session | sa.Connection) -> ChainReport:
        """Compare the anchor with the chain's newest event, without walking the chain.

        Finds a cut, extended or rewritten end of the chain and a forged or missing
        anchor; an edit further back is left to ``verify``. The outcome is remembered
        (``broken``) and a newly found problem is logged at CRITICAL.
        """
        return self._note(
            self._head_report(connection_of(session).execute(_HEAD_AND_ANCHOR).mappings().one())
        )

    def require_head(self, session: Session | sa.Connection) -> None:
        """Raise AuditChainBroken unless the head matches its anchor (before side effects)."""
        report = self.check_head(session)
        if not report.ok:
            raise AuditChainBroken(f"audit chain broken: {report.problem}")

    def append(
        self,
        session: Session | sa.Connection,
        *,
        kind: str,
        actor: str,
        now: datetime,
        client_id: str | None = None,
        subject: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Appended:
        """Append one event in the caller's transaction (the caller commits)."""
        entry = AuditEntry(kind, actor, client_id=client_id, subject=subject, data=data)
        return self.append_many(session, [entry], now=now)[-1]

    def append_many(
        self, session: Session | sa.Connection, entries: Sequence[AuditEntry], *, now: datetime
    ) -> list[Appended]:
        """Append events in order, in the caller's transaction (the caller commits).

        ``session`` may be a bare connection (the call hook's). Core statements rather
        than ORM objects either way: every call decision appends one event, and the ORM
        costs several times what the statements do. The head is read and the anchor
        moved once however many events go in.
        """
        if not entries:
            return []
        if isinstance(session, Session):
            # The caller's pending objects go first, as they always did: callers may
            # count on append() having flushed them.
            session.flush()
        connection = connection_of(session)
        if connection.dialect.name == "postgresql":
            connection.execute(_LOCK, {"id": _POSTGRES_LOCK_ID})
        head = connection.execute(_HEAD_AND_ANCHOR).mappings().one()
        report = self._note(self._head_report(head))
        if not report.ok:
            raise AuditChainBroken(f"audit chain broken: {report.problem}")
        seq, hash_ = (head["seq"], head["hash"]) if head["seq"] is not None else (0, GENESIS_HASH)
        # Plain dicts, not AuditEvents: building a SQLModel object costs more than the
        # insert itself.
        events: list[dict[str, Any]] = []
        appended = []
        for entry in entries:
            seq += 1
            event: dict[str, Any] = {
                "seq": seq,
                "at": now,
                "kind": entry.kind,
                "actor": entry.actor,
                "client_id": entry.client_id,
                "subject": entry.subject,
                "data": json.dumps(
                    dict(entry.data or {}), sort_keys=True, separators=(",", ":"), default=str
                ),
                "prev_hash": hash_,
            }
            hash_ = event["hash"] = _hash(hash_, _canonical(event))
            events.append(event)
            appended.append(Appended(seq, hash_))
        # Webhooks need nothing more here: the event is their outbox's first half
        # (storage.webhook_fanout reads it once committed).
        connection.execute(_INSERT_EVENT, events)
        if audit_feed.watched(connection):
            first = seq - len(entries) + 1
            audit_feed.stage(
                connection,
                (
                    audit_feed.FedEvent(
                        first + i, now, e.kind, e.actor, e.client_id, e.subject, e.data or {}
                    )
                    for i, e in enumerate(entries)
                ),
            )
        anchor = {"seq": seq, "hash": hash_, "mac": self._mac(seq, hash_)}
        if head["anchor_seq"] is None:  # the very first event (the head check saw no events)
            connection.execute(_INSERT_ANCHOR, {"id": 1, **anchor})
        else:
            connection.execute(_UPDATE_ANCHOR, anchor)
        self._known_head = (seq, hash_)
        return appended

    def _head_report(self, head: sa.RowMapping) -> ChainReport:
        seq, hash_ = (head["seq"], head["hash"]) if head["seq"] is not None else (0, GENESIS_HASH)
        anchor_seq, anchor_hash = head["anchor_seq"], head["anchor_hash"]
        if anchor_seq is None:
            if seq == 0:
                return ChainReport(True, 0)
            problem = f"the anchor is missing, yet the chain holds events up to {seq}"
            return ChainReport(False, seq, 1, problem)
        if not hmac.compare_digest(head["anchor_mac"], self._mac(anchor_seq, anchor_hash)):
            problem = f"the anchor (naming event {anchor_seq}) was forged: its MAC fails"
            return ChainReport(False, seq, anchor_seq, problem)
        if anchor_seq != seq:
            problem = f"the anchor names event {anchor_seq} but the newest event is {seq}"
            return ChainReport(False, seq, min(anchor_seq, seq) + 1, problem)
        if anchor_hash != hash_:
            problem = f"event {seq} has hash {hash_[:12]}…, its anchor names {anchor_hash[:12]}…"
            return ChainReport(False, seq, seq, problem)
        if seq and (seq, hash_) != self._known_head:
            if _hash(head["prev_hash"], _canonical(head)) != hash_:
                return ChainReport(False, seq, seq, f"event {seq}, the newest, was altered")
            self._known_head = (seq, hash_)
        return ChainReport(True, seq)

    def _note(self, report: ChainReport) -> ChainReport:
        previous, self._broken = self._broken, (None if report.ok else report)
        if not report.ok and (previous is None or previous.problem != report.problem):
            log.critical(
                "audit chain broken at event %s: %s; nothing is appended until it is "
                "resolved (`callrec audit verify` walks the whole chain)",
                report.first_bad,
                report.problem,
            )
        elif report.ok and previous is not None:
            log.warning("audit chain: the head matches its anchor again")
        return report

    def verify(self, session: Session) -> ChainReport:
        """Walk the whole chain; report the first edited, inserted or removed event."""
        query = select(AuditEvent).order_by(AuditEvent.seq)  # type: ignore[arg-type]
        # Streamed in batches; closed explicitly so an early return frees the server cursor.
        events = session.exec(query.execution_options(yield_per=2000))
        try:
            return self._walk(session, events)
        finally:
            events.close()

    def _walk(self, session: Session, events: Iterable[AuditEvent]) -> ChainReport:
        expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
        for event in events:
            if event.seq != expected_seq:
                problem = f"event {expected_seq} is missing (sequence jumps to {event.seq})"
                return ChainReport(False, count, expected_seq, problem)
            if event.prev_hash != prev_hash:
                problem = f"event {event.seq} does not follow event {event.seq - 1}"
                return ChainReport(False, count, event.seq, problem)
            if chain_hash(prev_hash, event) != event.hash:
                return ChainReport(False, count, event.seq, f"event {event.seq} was altered")
            prev_hash, expected_seq, count = event.hash, expected_seq + 1, count + 1
        if count > self._walked[0]:
            self._walked = (count, prev_hash)  # ``verify_through`` goes on from here
        return self._check_anchor(session, count, prev_hash)

    def verify_through(self, session: Session | sa.Connection, last: int) -> ChainReport:
        """Check the chain from its start through event ``last`` (``events``: how far).

        What a walk from the start found intact is remembered, so the next call walks
        only the events after it (a million events take seconds to hash; the events
        since the last call, microseconds each). The remembered event is read again
        first: an edit that re-hashed the chain through it is found. An edit that
        re-hashed a stretch wholly before it is not found here, but by the next full
        walk (``verify``, ``callrec audit verify``); callers that rely on particular
        events re-hash those (``check_events``).
        """
        connection = connection_of(session)
        walked_seq, walked_hash = self._walked
        if walked_seq and connection.execute(_HASH_AT, {"seq": walked_seq}).scalar() != walked_hash:
            walked_seq, walked_hash = 0, GENESIS_HASH  # walk again from the start
        if walked_seq >= last:
            return ChainReport(True, last)
        query = sa.select(*_EVENTS.c).where(_EVENTS.c.seq > walked_seq, _EVENTS.c.seq <= last)
        rows = connection.execution_options(yield_per=5000).execute(query.order_by(_EVENTS.c.seq))
        try:
            report = self._walk_rows(rows, walked_seq, walked_hash, last)
        finally:
            rows.close()
        return report

    def _walk_rows(
        self, rows: Iterable[sa.Row[Any]], seq: int, prev_hash: str, last: int
    ) -> ChainReport:
        for row in rows:
            if row.seq != seq + 1:
                problem = f"event {seq + 1} is missing (sequence jumps to {row.seq})"
                return ChainReport(False, seq, seq + 1, problem)
            if row.prev_hash != prev_hash:
                problem = f"event {row.seq} does not follow event {seq}"
                return ChainReport(False, seq, row.seq, problem)
            if _hash(prev_hash, _canonical(row._mapping)) != row.hash:
                return ChainReport(False, seq, row.seq, f"event {row.seq} was altered")
            seq, prev_hash = row.seq, row.hash
            if seq > self._walked[0]:
                self._walked = (seq, prev_hash)
        if seq != last:
            return ChainReport(False, seq, seq + 1, f"event {seq + 1} is missing")
        return ChainReport(True, seq)

    def check_events(self, session: Session | sa.Connection, seqs: Iterable[int]) -> ChainReport:
        """Re-hash these events and check each is linked to its neighbours.

        Finds an edit of any of them, re-hashed or not, unless the chain was re-hashed
        from it onwards to the end (which the anchor finds: ``check_head``).
        """
        wanted = sorted(set(seqs))
        around = sorted({n for seq in wanted for n in (seq - 1, seq, seq + 1) if n > 0})
        rows = {
            row.seq: row
            for row in connection_of(session).execute(
                sa.select(*_EVENTS.c).where(_EVENTS.c.seq.in_(around))
            )
        }
        for seq in wanted:
            row = rows.get(seq)
            if row is None:
                return ChainReport(False, 0, seq, f"event {seq} is missing")
            before = rows.get(seq - 1)
            expected_prev = GENESIS_HASH if seq == 1 else (before.hash if before else None)
            if row.prev_hash != expected_prev:
                return ChainReport(False, 0, seq, f"event {seq} does not follow event {seq - 1}")
            if _hash(row.prev_hash, _canonical(row._mapping)) != row.hash:
                return ChainReport(False, 0, seq, f"event {seq} was altered")
            after = rows.get(seq + 1)
            if after is not None and after.prev_hash != row.hash:
                return ChainReport(
                    False, 0, seq + 1, f"event {seq + 1} does not follow event {seq}"
                )
        return ChainReport(True, len(wanted))

    def _check_anchor(self, session: Session, count: int, head_hash: str) -> ChainReport:
        anchor = session.get(AuditAnchor, 1)
        if anchor is None:
            if count == 0:
                return ChainReport(True, 0)
            return ChainReport(False, count, 1, "the chain's anchor is missing")
        if not hmac.compare_digest(anchor.mac, self._mac(anchor.seq, anchor.hash)):
            return ChainReport(False, count, anchor.seq, "the chain's anchor was forged")
        if anchor.seq != count or anchor.hash != head_hash:
            first_bad = min(anchor.seq, count) + 1
            problem = f"the chain ends at event {count} but its anchor is event {anchor.seq}"
            return ChainReport(False, count, first_bad, problem)
        return ChainReport(True, count)

    def _mac(self, seq: int, head_hash: str) -> str:
        return hmac.new(self._anchor_key, f"{seq}:{head_hash}".encode(), hashlib.sha256).hexdigest()

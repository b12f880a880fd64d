"""A signed evidence pack for an inspection: what a regulator asks for, for one period.

For a client (or all) and a period ``[start, end)``, the pack holds:

- ``report/retention.json`` and ``report/retention.html``: the retention report as of the
  period's end (or now, if the end is ahead), over the period's length in days;
- ``consent/ledger.json``: every grant and revocation of the ledger made before the end;
- ``decisions.json``: the call decisions made in the period;
- ``deletion-certificates.json``: the deletion certificates written in the period;
- ``subject-requests.json``: the subject requests made or completed in the period;
- ``audit/events.jsonl``: the audit events of the period in chain order, from the first
  event written in it to the last, one JSON object a line with ``prev_hash`` and ``hash``.

The manifest (``retention.pack_format``) names the chain's anchor before the period (the
event just before the first one, or the start of the chain) and after it (the last one):
walking the events from the one must end on the other. In one client's pack another
client's events (and callrec's own, which name no client) are *withheld*: only their
sequence number and hashes are there, so the chain can still be followed without
showing them. Phone numbers appear only as the keyed hashes the database keeps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from consent import clients
from consent.decisions import CallDecision
from consent.ledger import ConsentEvent, event_public
from retention.errors import InvalidRequest
from retention.pack_format import EVENTS, START, Anchor, json_bytes, timestamp, write_pack
from retention.report import to_json
from retention.report_html import to_html
from retention.report_run import retention_report
from retention.subjects import SubjectRequest
from storage.audit import AuditEvent, AuditLog
from storage.signing import SigningKey

__all__ = ["STEPS", "build_pack", "pack_filename"]

# What ``on_progress(done, STEPS)`` counts: the report, four tables, the audit events.
STEPS = 6
_EVENTS: sa.Table = AuditEvent.__table__  # type: ignore[attr-defined]
# Bounds that keep every date computed from the period (the report's) representable.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)
Progress = Callable[[int, int], None]


def pack_filename(client_id: str | None, start: datetime, end: datetime) -> str:
    return f"evidence-{client_id or 'all'}-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}.zip"


def build_pack(
    session: Session,
    *,
    client_id: str | None,
    start: datetime,
    end: datetime,
    audit: AuditLog,
    key: SigningKey,
    now: datetime,
    on_progress: Progress | None = None,
) -> bytes:
    """The signed archive (zip bytes); InvalidRequest for a bad period, NotFound for an
    unknown client (whose pack would otherwise look like a clean, empty one)."""
    for name, value in (("from", start), ("to", end)):
        if value.utcoffset() is None:
            raise InvalidRequest(f"'{name}' needs a time zone (e.g. Z or +00:00)")
    if start >= end:
        raise InvalidRequest("'from' must come before 'to'")
    if start < _EARLIEST or end > _LATEST:
        raise InvalidRequest("the period must lie within the years 1970 to 9998")
    if client_id is not None:
        clients.get_client(session, client_id)
    progress = on_progress or (lambda done, total: None)
    files: dict[str, bytes] = {}
    as_of = min(end, now)
    report = retention_report(
        session,
        audit=audit,
        now=as_of,
        client_id=client_id,
        period_days=max(1, math.ceil((end - start) / timedelta(days=1))),
    )
    files["report/retention.json"] = to_json(report).encode()
    files["report/retention.html"] = to_html(report).encode()
    progress(1, STEPS)
    files["consent/ledger.json"] = json_bytes(_ledger(session, client_id, end))
    progress(2, STEPS)
    files["decisions.json"] = json_bytes(_decisions(session, client_id, start, end))
    progress(3, STEPS)
    files["deletion-certificates.json"] = json_bytes(_certificates(session, client_id, start, end))
    progress(4, STEPS)
    files["subject-requests.json"] = json_bytes(_requests(session, client_id, start, end))
    progress(5, STEPS)
    events, chain = _audit_events(session, client_id, start, end)
    files[EVENTS] = events
    progress(6, STEPS)
    return write_pack(
        files,
        parameters={"client_id": client_id, "from": timestamp(start), "to": timestamp(end)},
        audit=chain,
        key=key,
        created_at=now,
    )


def _ledger(session: Session, client_id: str | None, end: datetime) -> list[dict[str, Any]]:
    query = select(ConsentEvent).where(ConsentEvent.at < end)
    if client_id is not None:
        query = query.where(ConsentEvent.client_id == client_id)
    query = query.order_by(col(ConsentEvent.client_id), col(ConsentEvent.ledger_version))
    return [
        {"client_id": event.client_id, **_plain(event_public(event))}
        for event in session.exec(query)
    ]


def _decisions(
    session: Session, client_id: str | None, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    query = select(CallDecision).where(
        CallDecision.decided_at >= start, CallDecision.decided_at < end
    )
    if client_id is not None:
        query = query.where(CallDecision.client_id == client_id)
    rows = session.exec(query.order_by(col(CallDecision.decided_at), col(CallDecision.id)))
    decisions = []
    for row in rows:
        decision = _plain(_columns(row))
        # Stored as JSON text; shown as what they are. Participants are keyed hashes.
        decision["participants"] = json.loads(row.participants)
        decision["purposes"] = json.loads(row.purposes)
        decisions.append(decision)
    return decisions


def _certificates(
    session: Session, client_id: str | None, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    query = select(AuditEvent).where(
        AuditEvent.kind == "recording.purged", AuditEvent.at >= start, AuditEvent.at < end
    )
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    return [
        {
            "recording_id": event.subject,
            "client_id": event.client_id,
            "at": timestamp(event.at),
            "event_id": event.seq,
            "event_hash": event.hash,
            "certificate": json.loads(event.data),
        }
        for event in session.exec(query.order_by(col(AuditEvent.seq)))
    ]


def _requests(
    session: Session, client_id: str | None, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    made = sa.and_(col(SubjectRequest.created_at) >= start, col(SubjectRequest.created_at) < end)
    done = sa.and_(
        col(SubjectRequest.completed_at) >= start, col(SubjectRequest.completed_at) < end
    )
    query = select(SubjectRequest).where(sa.or_(made, done))
    if client_id is not None:
        query = query.where(SubjectRequest.client_id == client_id)
    rows = session.exec(query.order_by(col(SubjectRequest.created_at), col(SubjectRequest.id)))
    requests = []
    for row in rows:
        request = _plain(_columns(row))  # the number only as its keyed hash, as stored
        request["result"] = json.loads(row.result)
        requests.append(request)
    return requests


def _audit_events(
    session: Session, client_id: str | None, start: datetime, end: datetime
) -> tuple[bytes, dict[str, Any]]:
    """The period's stretch of the chain, and its anchors for the manifest."""
    in_period = (col(AuditEvent.at) >= start, col(AuditEvent.at) < end)
    first, last = session.exec(
        select(sa.func.min(AuditEvent.seq), sa.func.max(AuditEvent.seq)).where(*in_period)
    ).one()
    if first is None or last is None:  # nothing in the period: both anchors on the event before
        before_seq = session.exec(
            select(sa.func.max(AuditEvent.seq)).where(col(AuditEvent.at) < start)
        ).one()
        before = _anchor(session, before_seq)
        return b"", _chain_fields(before, before, events=0, withheld=0)
    before = _anchor(session, first - 1)
    # Core rows, not ORM objects: a period may hold millions of events, and building an
    # object for each costs more than reading it.
    query = sa.select(*_EVENTS.c).where(_EVENTS.c.seq >= first, _EVENTS.c.seq <= last)
    rows = (
        session.connection()
        .execution_options(yield_per=5000)
        .execute(query.order_by(_EVENTS.c.seq))
    )
    lines, withheld, after = [], 0, before
    try:
        for event in rows:
            shown = client_id is None or event.client_id == client_id
            withheld += not shown
            lines.append(json.dumps(_event_line(event, shown), sort_keys=True, ensure_ascii=False))
            after = Anchor(event.seq, event.hash)
    finally:
        rows.close()
    body = ("\n".join(lines) + "\n").encode()
    return body, _chain_fields(before, after, events=len(lines), withheld=withheld)


def _anchor(session: Session, seq: int | None) -> Anchor:
    if not seq:
        return START
    event = session.get(AuditEvent, seq)
    return START if event is None else Anchor(event.seq, event.hash)


def _chain_fields(before: Anchor, after: Anchor, *, events: int, withheld: int) -> dict[str, Any]:
    return {
        "anchor_before": before.as_json(),
        "anchor_after": after.as_json(),
        "events": events,
        "withheld": withheld,
    }


def _event_line(event: sa.Row[Any], shown: bool) -> dict[str, Any]:
    if not shown:
        return {
            "seq": event.seq,
            "withheld": True,
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        }
    return {
        "seq": event.seq,
        "at": timestamp(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "client_id": event.client_id,
        "subject": event.subject,
        "data": json.loads(event.data),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _columns(row: SQLModel) -> dict[str, Any]:
    """A row's columns as stored (a plain ``model_dump`` warns on enums read back as text)."""
    table: sa.Table = type(row).__table__  # type: ignore[attr-defined]
    return {column.name: getattr(row, column.name) for column in table.columns}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Times as the audit log writes them; everything else as it is."""
    return {k: timestamp(v) if isinstance(v, datetime) else v for k, v in values.items()}

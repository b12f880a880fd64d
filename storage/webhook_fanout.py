"""The outbox's first half is the audit log; the fan-out turns its events into deliveries.

Every event an integrator may hear of is an audit event, written durably in the
event's own transaction (storage.audit) with all a webhook needs: its sequence number,
kind, client, subject and data. So that transaction does nothing more for webhooks: no
endpoint look-up, no outbox row. The dispatcher (recorder.webhook_dispatch) later runs
``fan_out`` in a transaction of its own: it reads the audit events of webhook kinds
above a durable cursor, writes one outbox row per notice and subscribed endpoint
(storage.outbox, whose rows it then claims, sends and settles), and moves the cursor
past them. Rows and cursor commit together: a crash before that commit leaves the
cursor where it was, and the next fan-out reads the same events again.

Why a cursor is enough: appends are serialized (an advisory lock on PostgreSQL held
until commit, SQLite's single writer), so an event becomes visible only after every
event before it. Once event N is seen, none below N can still appear.

No duplicates: on PostgreSQL the fan-out locks the cursor row (``FOR UPDATE``), so two
gateways fan out one after the other, the second from where the first stopped; SQLite
has one writer. And a delivery's id is derived from its endpoint, its event's sequence
number and the notice's place among the event's notices, so a row written twice would
be the same row, and the second insert is dropped.

Who hears of an event: the endpoints of its client subscribed to its type that existed
when it happened (created before it: ``since_seq`` is the audit sequence number of the
endpoint's own ``webhook.created`` event) and that are not deleted by the time of the
fan-out. Deleting an endpoint cancels its rows already written (storage.webhooks); the
events not yet fanned out are never written for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

from storage import outbox
from storage.audit import AuditEvent
from storage.db import connection_of
from storage.webhook_events import SOURCE_KINDS, Notice, Source, notices_of
from storage.webhooks import WebhookEndpoint

# Audit events read per fan-out transaction: keeps each transaction short.
BATCH = 1000


class WebhookFanoutCursor(SQLModel, table=True):
    """The audit sequence number up to which events are fanned out (a single row)."""

    __tablename__ = "webhook_fanout"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(sa_type=sa.BigInteger)


_CURSOR: sa.Table = WebhookFanoutCursor.__table__  # type: ignore[attr-defined]
_EVENTS: sa.Table = AuditEvent.__table__  # type: ignore[attr-defined]
_ENDPOINTS: sa.Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
_OUTBOX: sa.Table = outbox.WebhookDelivery.__table__  # type: ignore[attr-defined]
_READ_CURSOR = sa.select(_CURSOR.c.seq).where(_CURSOR.c.id == 1)
_HEAD = sa.select(sa.func.max(_EVENTS.c.seq))
_E = _EVENTS.c
_SOURCES = (
    sa.select(_E.seq, _E.at, _E.hash, _E.kind, _E.client_id, _E.subject, _E.data)
    .where(
        _E.seq > sa.bindparam("after"),
        _E.seq <= sa.bindparam("upto"),
        _E.kind.in_(sorted(SOURCE_KINDS)),
    )
    .order_by(_E.seq)
)
_LIVE_ENDPOINTS = sa.select(
    _ENDPOINTS.c.id, _ENDPOINTS.c.client_id, _ENDPOINTS.c.events, _ENDPOINTS.c.since_seq
).where(_ENDPOINTS.c.deleted_at.is_(None))


def behind(connection: sa.Connection) -> bool:
    """Whether events were appended since the last fan-out (a read: no lock taken)."""
    cursor = connection.execute(_READ_CURSOR).scalar_one()
    return bool((connection.execute(_HEAD).scalar() or 0) > cursor)


def fan_out(connection: sa.Connection, *, now: datetime, limit: int = BATCH) -> tuple[int, bool]:
    """Write the deliveries of up to ``limit`` webhook events not yet fanned out, and move
    the cursor past them, in the caller's transaction (which commits).

    Returns how many rows were written and whether more events wait.
    """
    read = _READ_CURSOR
    if connection.dialect.name == "postgresql":
        read = read.with_for_update()  # the other gateways wait here, then start after us
    after = connection.execute(read).scalar_one()
    head = connection.execute(_HEAD).scalar() or 0
    if head <= after:
        return 0, False
    events = _sources(connection, after=after, upto=head, limit=limit)
    more = len(events) == limit
    upto = events[-1][0].seq if more else head
    rows = _deliveries(events, _subscribed(connection, events, lock=True), now=now)
    if rows:
        connection.execute(_insert_ignoring_repeats(connection), rows)
    connection.execute(sa.update(_CURSOR).where(_CURSOR.c.id == 1).values(seq=upto))
    return len(rows), more


def waiting(executor: Any, *, client_id: str | None = None) -> tuple[int, datetime | None]:
    """Deliveries of events not yet fanned out (one client's, or everyone's), and the
    oldest such event's time: pending too, for the report. A read: nothing is written."""
    connection = connection_of(executor)
    after = connection.execute(_READ_CURSOR).scalar_one()
    head = connection.execute(_HEAD).scalar() or 0
    if head <= after:
        return 0, None
    events = _sources(connection, after=after, upto=head, limit=None)
    rows = [
        row
        for row in _deliveries(events, _subscribed(connection, events, lock=False), now=None)
        if client_id is None or row["client_id"] == client_id
    ]
    return len(rows), min((row["created_at"] for row in rows), default=None)


def _sources(
    connection: sa.Connection, *, after: int, upto: int, limit: int | None
) -> list[tuple[Source, datetime]]:
    query = _SOURCES if limit is None else _SOURCES.limit(limit)
    found = connection.execute(query, {"after": after, "upto": upto})
    return [
        (Source(r.seq, r.hash, r.kind, r.client_id, r.subject, json.loads(r.data)), r.at)
        for r in found
    ]


def _subscribed(
    connection: sa.Connection, events: Sequence[tuple[Source, datetime]], *, lock: bool
) -> dict[str, list[tuple[str, frozenset[str], int]]]:
    """The live endpoints of these events' clients: client → (id, types, since_seq)."""
    clients = sorted({n.client_id for source, _ in events for n in notices_of(source)})
    if not clients:
        return {}
    query = _LIVE_ENDPOINTS.where(_ENDPOINTS.c.client_id.in_(clients))
    if lock and connection.dialect.name == "postgresql":
        # An endpoint deleted meanwhile waits for this commit, then cancels these rows.
        query = query.with_for_update(read=True)
    subscribed: dict[str, list[tuple[str, frozenset[str], int]]] = {}
    for endpoint_id, client, types, since in connection.execute(query):
        subscribed.setdefault(client, []).append((endpoint_id, frozenset(types.split(",")), since))
    return subscribed


def _deliveries(
    events: Iterable[tuple[Source, datetime]],
    subscribed: dict[str, list[tuple[str, frozenset[str], int]]],
    *,
    now: datetime | None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for source, at in events:
        for place, notice in enumerate(notices_of(source)):
            endpoints = [
                endpoint_id
                for endpoint_id, types, since in subscribed.get(notice.client_id, ())
                if notice.type in types and source.seq > since
            ]
            if not endpoints:
                continue
            body = _body(notice, at)
            rows += [
                {
                    "id": delivery_id(endpoint_id, source.seq, place),
                    "endpoint_id": endpoint_id,
                    "client_id": notice.client_id,
                    "type": notice.type,
                    "body": body,
                    "audit_seq": source.seq,
                    # The day of retries counts from the event, however late the fan-out.
                    "created_at": at,
                    "status": outbox.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for endpoint_id in endpoints
            ]
    return rows


def _body(notice: Notice, at: datetime) -> str:
    """The exact bytes sent: the event's type, the time it happened, its data."""
    timestamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    payload = {"type": notice.type, "timestamp": timestamp, "data": notice.data}
    return json.dumps(payload, separators=(",", ":"), default=str)


def delivery_id(endpoint_id: str, seq: int, place: int) -> str:
    """The ``webhook-id`` of one notice for one endpoint: the same however often it is
    fanned out, so a repeat is the same row (and a receiver would see the same id)."""
    digest = hashlib.sha256(f"{endpoint_id}:{seq}:{place}".encode()).digest()
    return "msg_" + base64.b32encode(digest).decode("ascii").lower()[:26]


def _insert_ignoring_repeats(connection: sa.Connection) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(_OUTBOX).on_conflict_do_nothing(index_elements=["id"])
    return sqlite.insert(_OUTBOX).on_conflict_do_nothing(index_elements=["id"])


def backlog(executor: Any, *, client_id: str | None = None) -> outbox.Backlog:
    """Deliveries not done, for the report: rows pending or dead, and the deliveries of
    events not yet fanned out, counted as pending."""
    # The events first: a fan-out committing in between is then counted twice, not missed.
    count, oldest = waiting(executor, client_id=client_id)
    rows = outbox.backlog(executor, client_id=client_id)
    if not count:
        return rows
    firsts = [t for t in (rows.oldest_pending, oldest) if t is not None]
    return outbox.Backlog(rows.pending + count, min(firsts), rows.dead, rows.last_dead)

"""The webhook outbox's second half: one row per event and endpoint, until it is settled.

The first half is the audit log: an event is durable, with everything its webhook
needs, once its own transaction commits (storage.audit). The dispatcher's fan-out
(storage.webhook_fanout) writes these rows from it later, in a transaction of its own,
and moves its cursor in that same transaction. Delivery is the dispatcher's too
(recorder.webhook_dispatch): it claims due rows (``claim``), sends them, and records
each outcome (``settle``). A claim is a lease: a replica that dies while sending leaves
rows that another claims once the lease ends. So delivery is at least once from end to
end: an event committed is in the log until fanned out, a row written stays pending
until settled. On PostgreSQL concurrent claims skip each other's locked rows; SQLite
has one writer at a time, and the lease alone keeps two processes from sending a row
together.

Statuses: ``pending`` (waiting or being retried), ``delivered`` (a 2xx answer),
``dead`` (no success within the maximum age), ``cancelled`` (its endpoint was deleted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from storage.db import connection_of
from storage.types import UTCDateTime
from storage.webhooks import WebhookEndpoint

PENDING, DELIVERED, DEAD, CANCELLED = "pending", "delivered", "dead", "cancelled"
MAX_ERROR_LENGTH = 300


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint, from the moment it happened until it is settled."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (sa.Index("ix_webhook_outbox_due", "status", "next_attempt_at"),)

    # The ``webhook-id``, the same on retries; derived from the endpoint, the event and
    # the notice (storage.webhook_fanout.delivery_id), so a repeated fan-out cannot add
    # a second row. Rows written before migration 0012 have random ids.
    id: str = Field(primary_key=True, max_length=40)
    # No index of their own: what reads by endpoint or client reads pending and dead
    # rows only, which the (status, next_attempt_at) index finds.
    endpoint_id: str = Field(max_length=40)
    client_id: str = Field(max_length=63)
    type: str = Field(max_length=40)
    body: str = Field(sa_type=sa.Text)  # the exact bytes sent (UTF-8 JSON)
    audit_seq: int = Field(sa_type=sa.BigInteger)
    created_at: datetime = Field(sa_type=UTCDateTime)  # when the event happened
    status: str = Field(default=PENDING, max_length=10)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=MAX_ERROR_LENGTH)
    settled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


_OUTBOX: sa.Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
_ENDPOINTS: sa.Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one dispatcher for one attempt."""

    id: str
    endpoint_id: str
    url: str
    body: str
    attempts: int
    created_at: datetime


def _due(now: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    o = _OUTBOX.c
    return (
        o.status == PENDING,
        o.next_attempt_at <= now,
        sa.or_(o.lease_until.is_(None), o.lease_until <= now),
    )


def any_due(connection: sa.Connection, *, now: datetime) -> bool:
    """Whether a delivery is due (a read: no lock taken)."""
    query = sa.select(_OUTBOX.c.id).where(*_due(now)).limit(1)
    return connection.execute(query).first() is not None


def claim(
    connection: sa.Connection, *, now: datetime, limit: int, lease: timedelta
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries to the caller (in its transaction, which commits)."""
    o, e = _OUTBOX.c, _ENDPOINTS.c
    query = (
        sa.select(o.id, o.endpoint_id, e.url, o.body, o.attempts, o.created_at)
        .join_from(_OUTBOX, _ENDPOINTS, e.id == o.endpoint_id)
        .where(*_due(now))
        .order_by(o.next_attempt_at)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(of=_OUTBOX, skip_locked=True)
    claimed = [Claimed(*row) for row in connection.execute(query)]
    if claimed:
        connection.execute(
            sa.update(_OUTBOX)
            .where(o.id.in_([c.id for c in claimed]))
            .values(lease_until=now + lease)
        )
    return claimed


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: ``error`` is None for a 2xx answer."""

    id: str
    attempts: int
    created_at: datetime
    error: str | None


def settle(
    connection: sa.Connection,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    backoff: Sequence[float],
    max_age: timedelta,
) -> None:
    """Record attempts: delivered, due again after the next backoff step, or dead."""
    o = _OUTBOX.c
    delivered = [{"key": x.id, "attempts": x.attempts + 1} for x in outcomes if x.error is None]
    failed = []
    for x in outcomes:
        if x.error is None:
            continue
        step = backoff[min(x.attempts, len(backoff) - 1)]
        due = now + timedelta(seconds=step)
        dead = due - x.created_at > max_age
        failed.append(
            {
                "key": x.id,
                "attempts": x.attempts + 1,
                "status": DEAD if dead else PENDING,
                "next": due,
                "error": x.error[:MAX_ERROR_LENGTH],
                "settled": now if dead else None,
            }
        )
    # Still pending: an endpoint deleted meanwhile cancelled its rows, and that stands.
    key = sa.and_(o.id == sa.bindparam("key"), o.status == PENDING)
    if delivered:
        connection.execute(
            sa.update(_OUTBOX)
            .where(key)
            .values(
                status=DELIVERED,
                attempts=sa.bindparam("attempts"),
                lease_until=None,
                last_error=None,
                settled_at=now,
            ),
            delivered,
        )
    if failed:
        connection.execute(
            sa.update(_OUTBOX)
            .where(key)
            .values(
                status=sa.bindparam("status"),
                attempts=sa.bindparam("attempts"),
                next_attempt_at=sa.bindparam("next"),
                lease_until=None,
                last_error=sa.bindparam("error"),
                settled_at=sa.bindparam("settled"),
            ),
            failed,
        )


def cancel_pending(executor: Any, *, endpoint_id: str, now: datetime) -> int:
    """Cancel what still waits for a deleted endpoint; return how many."""
    o = _OUTBOX.c
    result = connection_of(executor).execute(
        sa.update(_OUTBOX)
        .where(o.endpoint_id == endpoint_id, o.status == PENDING)
        .values(status=CANCELLED, lease_until=None, settled_at=now)
    )
    return int(result.rowcount)


@dataclass(frozen=True)
class Backlog:
    """Deliveries not done, for the report: waiting ones and dead ones."""

    pending: int
    oldest_pending: datetime | None
    dead: int
    last_dead: datetime | None


def backlog(executor: Any, *, client_id: str | None = None) -> Backlog:
    """How many rows wait and how many died (one client's, or everyone's); the report
    adds the events not yet fanned out (storage.webhook_fanout.backlog)."""
    o = _OUTBOX.c
    query = (
        sa.select(o.status, sa.func.count(), sa.func.min(o.created_at), sa.func.max(o.settled_at))
        .where(o.status.in_([PENDING, DEAD]))
        .group_by(o.status)
    )
    if client_id is not None:
        query = query.where(o.client_id == client_id)
    found = {row[0]: row[1:] for row in connection_of(executor).execute(query)}
    pending = found.get(PENDING, (0, None, None))
    dead = found.get(DEAD, (0, None, None))
    return Backlog(int(pending[0]), _aware(pending[1]), int(dead[0]), _aware(dead[2]))


def _aware(value: datetime | None) -> datetime | None:
    """Aggregates come back without the column's type: naive on SQLite."""
    if value is None:
        return None
    return UTCDateTime().process_result_value(value, None)


def signature(secret: bytes, *, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` (Standard Webhooks)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")

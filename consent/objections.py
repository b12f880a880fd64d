"""Objections: a client's do-not-record list, keyed hashes of its customers' numbers."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select

from storage.audit import AuditLog
from storage.types import UTCDateTime


class Objection(SQLModel, table=True):
    __tablename__ = "objections"

    client_id: str = Field(primary_key=True, foreign_key="clients.id", max_length=63)
    phone_hash: str = Field(primary_key=True, max_length=64)
    source: str = Field(max_length=100)  # e.g. the subject request that asked for it
    created_at: datetime = Field(sa_type=UTCDateTime)


def add_objection(
    session: Session,
    *,
    client_id: str,
    phone_hash: str,
    source: str,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> Objection:
    """Put a number on the client's do-not-record list (idempotent)."""
    row = session.get(Objection, (client_id, phone_hash))
    if row is not None:
        return row
    row = Objection(client_id=client_id, phone_hash=phone_hash, source=source, created_at=now)
    session.add(row)
    audit.append(
        session,
        kind="objection.added",
        actor=actor,
        now=now,
        client_id=client_id,
        subject=source,
    )
    session.flush()
    return row


def objections_of(session: Session, client_id: str) -> frozenset[str]:
    rows = session.exec(select(Objection.phone_hash).where(Objection.client_id == client_id))
    return frozenset(rows)

"""Data-subject requests, made by a client on behalf of one of its customers.

By phone number, kept only as its keyed hash: ``access`` (an export of audio and
metadata), ``erasure`` (purge now, unless a legal hold stops it — and say which),
``restriction`` (kept, but neither served nor processed) and ``objection`` (never
record this number again for this client). Each has a due date (one month by
default, GDPR Art. 12(3)) and a status.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, col, select

from consent.calls import CallDecision
from consent.objections import add_objection
from consent.phones import hash_phone
from retention.errors import InvalidRequest, NotFound
from retention.holds import holds_covering
from retention.purge import ERASURE, Purger
from storage import catalog
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingState
from storage.ids import new_id
from storage.types import UTCDateTime

DUE_AFTER = timedelta(days=30)


class RequestKind(StrEnum):
    ACCESS = "access"
    ERASURE = "erasure"
    RESTRICTION = "restriction"
    OBJECTION = "objection"


class SubjectRequest(SQLModel, table=True):
    __tablename__ = "subject_requests"

    id: str = SQLField(primary_key=True, max_length=40)
    client_id: str = SQLField(foreign_key="clients.id", index=True, max_length=63)
    kind: str = SQLField(max_length=20)
    phone_hash: str = SQLField(max_length=64, index=True)
    status: str = SQLField(max_length=30)
    result: str = SQLField(default="{}", sa_type=sa.Text)  # JSON
    created_by: str = SQLField(max_length=100)
    created_at: datetime = SQLField(sa_type=UTCDateTime)
    due_at: datetime = SQLField(sa_type=UTCDateTime, index=True)
    completed_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)


class SubjectRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(description="The client the customer called")
    kind: RequestKind = Field(description="`access`, `erasure`, `restriction` or `objection`")
    phone: str = Field(description="The customer's number, E.164")


class SubjectRequestPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The request's id."""
    client_id: str
    """The client it was made to."""
    kind: str
    """`access`, `erasure`, `restriction` or `objection`."""
    status: str
    """Where it stands (`completed`, `partially_completed`…)."""
    created_at: datetime
    """When it was made."""
    due_at: datetime
    """When it must be answered by."""
    completed_at: datetime | None
    """When it was done."""
    recordings: list[str]
    """The number's recordings it concerned."""
    held: dict[str, list[str]] | None = None  # recording id → the cases holding it
    """For an erasure: each recording kept by a legal hold, and the cases holding it."""
    export_url: str | None = None
    """For an access request: where to download the export."""


def recordings_of_number(session: Session, *, client_id: str, phone_hash: str) -> list[Recording]:
    """The client's recordings of calls in which the number took part."""
    decisions = select(CallDecision.id).where(
        CallDecision.client_id == client_id,
        col(CallDecision.participants).contains(phone_hash),
    )
    query = (
        select(Recording)
        .where(
            Recording.client_id == client_id,
            col(Recording.decision_id).in_(decisions),
            Recording.state != RecordingState.PURGED,
        )
        .order_by(col(Recording.id))
    )
    return list(session.exec(query))


def submit(
    session: Session,
    *,
    request: SubjectRequestCreate,
    phone_key: bytes,
    purger: Purger,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> SubjectRequest:
    """Carry out a request at once and record what was done (the caller commits)."""
    try:
        phone_hash = hash_phone(phone_key, request.phone)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_phone") from None
    recordings = recordings_of_number(session, client_id=request.client_id, phone_hash=phone_hash)
    row = SubjectRequest(
        id=new_id("sr", now),
        client_id=request.client_id,
        kind=request.kind,
        phone_hash=phone_hash,
        status="completed",
        created_by=actor,
        created_at=now,
        due_at=now + DUE_AFTER,
        completed_at=now,
    )
    result: dict[str, Any] = {"recordings": [r.id for r in recordings]}
    if request.kind == RequestKind.ERASURE:
        held = {}
        for recording in recordings:
            cases = holds_covering(session, recording)
            if cases:
                held[recording.id] = cases
                continue
            purger.purge_recording(
                session,
                recording,
                rule=f"erasure requested by the data subject ({row.id}; GDPR Art. 17)",
                reason=ERASURE,
                actor=actor,
                now=now,
            )
        result["held"] = held
        if held:
            row.status, row.completed_at = "partially_completed", None
    elif request.kind == RequestKind.RESTRICTION:
        restricted = []
        for recording in recordings:
            if recording.state == RecordingState.STORED:
                catalog.transition(recording, RecordingState.RESTRICTED, now=now)
                session.add(recording)
                restricted.append(recording.id)
        result["restricted"] = restricted  # each one's webhook (storage.webhook_events)
    elif request.kind == RequestKind.OBJECTION:
        add_objection(
            session,
            client_id=request.client_id,
            phone_hash=phone_hash,
            source=row.id,
            actor=actor,
            audit=audit,
            now=now,
        )
    row.result = json.dumps(result)
    session.add(row)
    audit.append(
        session,
        kind=f"subject_request.{request.kind}",
        actor=actor,
        now=now,
        client_id=request.client_id,
        subject=row.id,
        data={"status": row.status, **result},
    )
    session.flush()
    return row


def get_request(session: Session, request_id: str, *, client_id: str | None) -> SubjectRequest:
    row = session.get(SubjectRequest, request_id)
    if row is None or (client_id is not None and row.client_id != client_id):
        raise NotFound(f"no subject request {request_id}")
    return row


def to_public(row: SubjectRequest) -> SubjectRequestPublic:
    result = json.loads(row.result)
    return SubjectRequestPublic(
        id=row.id,
        client_id=row.client_id,
        kind=row.kind,
        status=row.status,
        created_at=row.created_at,
        due_at=row.due_at,
        completed_at=row.completed_at,
        recordings=result.get("recordings", []),
        held=result.get("held"),
        export_url=(
            f"/v1/subject-requests/{row.id}/export" if row.kind == RequestKind.ACCESS else None
        ),
    )

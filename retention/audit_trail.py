"""The audit trail as compliance reads it: events filtered and paged, and the chain check.

Events carry their chain fields (``prev_hash``, ``hash``) so that what is shown can be
checked against the chain. A call's events are those about its decisions, its
recordings and the legal holds that name it: the log keys events by what they are
about (``subject``), and a call is known by those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Session, col, select

from consent.decisions import CallDecision
from consent.errors import InvalidRequest
from retention.holds import LegalHoldTarget
from storage.audit import AuditEvent, AuditLog, ChainReport
from storage.catalog import Recording


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    seq: int
    """Its place in the chain."""
    at: datetime
    """When it happened."""
    kind: str
    """What happened (`recording.stored`, `consent.granted`…)."""
    actor: str
    """Who caused it: `key:<key id>`, or `callrec` for callrec's own jobs."""
    client_id: str | None
    """The client it concerns."""
    subject: str | None
    """The id of what it is about (a recording, a decision, a hold…)."""
    data: dict[str, Any]
    """The event's facts (never a phone number)."""
    prev_hash: str
    """The hash of the event before it."""
    hash: str
    """SHA-256 of `prev_hash` and this event, canonically encoded."""


class ChainCheckPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    ok: bool
    """Whether the whole chain checks out."""
    events: int
    """Events checked."""
    first_bad: int | None = None
    """Sequence number of the first event that does not."""
    problem: str | None = None
    """What is wrong there."""


@dataclass(frozen=True)
class AuditFilter:
    """What to select; every field left ``None`` selects everything."""

    client_id: str | None = None
    recording_id: str | None = None
    call_id: str | None = None
    kinds: tuple[str, ...] = ()
    actor: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidRequest(f"{_PARAM[name]} needs a time zone (e.g. Z or +00:00)")
        if self.since and self.until and self.since >= self.until:
            raise InvalidRequest("'from' must come before 'to'")


_PARAM = {"since": "'from'", "until": "'to'"}


def list_events(
    session: Session, selection: AuditFilter, *, after: int | None = None, limit: int = 100
) -> list[AuditEventPublic]:
    """Events in chain order after the sequence number ``after``."""
    query = select(AuditEvent).order_by(col(AuditEvent.seq)).limit(limit)
    if after is not None:
        query = query.where(AuditEvent.seq > after)
    if selection.client_id is not None:
        query = query.where(AuditEvent.client_id == selection.client_id)
    if selection.recording_id is not None:
        query = query.where(AuditEvent.subject == selection.recording_id)
    if selection.call_id is not None:
        query = query.where(col(AuditEvent.subject).in_(_subjects_of_call(selection.call_id)))
    if selection.kinds:
        query = query.where(col(AuditEvent.kind).in_(selection.kinds))
    if selection.actor is not None:
        query = query.where(AuditEvent.actor == selection.actor)
    if selection.since is not None:
        query = query.where(AuditEvent.at >= selection.since)
    if selection.until is not None:
        query = query.where(AuditEvent.at < selection.until)
    return [_public(event) for event in session.exec(query)]


def check_chain(session: Session, audit: AuditLog) -> ChainCheckPublic:
    """Walk the whole chain (as ``callrec audit verify`` does)."""
    report: ChainReport = audit.verify(session)
    return ChainCheckPublic(
        ok=report.ok, events=report.events, first_bad=report.first_bad, problem=report.problem
    )


def _subjects_of_call(call_id: str) -> sa.CompoundSelect[tuple[str]]:
    return sa.union(
        select(CallDecision.id).where(CallDecision.call_id == call_id),
        select(Recording.id).where(Recording.call_id == call_id),
        select(LegalHoldTarget.hold_id).where(
            LegalHoldTarget.kind == "call", LegalHoldTarget.target == call_id
        ),
    )


def _public(event: AuditEvent) -> AuditEventPublic:
    return AuditEventPublic(
        seq=event.seq,
        at=event.at,
        kind=event.kind,
        actor=event.actor,
        client_id=event.client_id,
        subject=event.subject,
        data=json.loads(event.data),
        prev_hash=event.prev_hash,
        hash=event.hash,
    )


__all__ = ["AuditEventPublic", "AuditFilter", "ChainCheckPublic", "check_chain", "list_events"]

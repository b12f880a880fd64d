"""The consent ledger: append-only grant and revocation events; the state is derived.

Each event bumps the client's ledger version; a grant's ``version`` is the ledger
version that created it, and a revocation records the version that ended it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, select

from consent.domain import Channel, Direction, Grant, Notice
from consent.errors import InvalidRequest, NotFound, StateConflict
from storage.audit import AuditLog
from storage.ids import new_id
from storage.types import UTCDateTime

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EventKind(StrEnum):
    GRANT = "grant"
    REVOKE = "revoke"


class ConsentEvent(SQLModel, table=True):
    """One ledger event; rows are only ever inserted."""

    __tablename__ = "consent_events"
    __table_args__ = (sa.UniqueConstraint("client_id", "ledger_version"),)

    id: str = SQLField(primary_key=True, max_length=40)
    client_id: str = SQLField(foreign_key="clients.id", index=True, max_length=63)
    grant_id: str = SQLField(index=True, max_length=40)
    kind: str = SQLField(max_length=10)  # an EventKind
    ledger_version: int
    purposes: str = SQLField(default="[]", sa_type=sa.Text)  # JSON list
    directions: str = SQLField(default="[]", sa_type=sa.Text)  # JSON list
    channels: str = SQLField(default="[]", sa_type=sa.Text)  # JSON list
    notice: str | None = SQLField(default=None, max_length=20)
    notice_version: str | None = SQLField(default=None, max_length=100)
    notice_sha256: str | None = SQLField(default=None, max_length=64)
    valid_from: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    valid_until: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    granted_by: str | None = SQLField(default=None, max_length=200)
    evidence: str | None = SQLField(default=None, sa_type=sa.Text)
    reason: str | None = SQLField(default=None, sa_type=sa.Text)
    purge_existing: bool = False
    actor: str = SQLField(max_length=100)
    at: datetime = SQLField(sa_type=UTCDateTime)


class Scope(BaseModel):
    """Which calls a grant covers; empty means all."""

    model_config = ConfigDict(extra="forbid")

    directions: list[Direction] = Field(
        default_factory=lambda: list(Direction), description="Call directions covered"
    )
    channels: list[Channel] = Field(
        default_factory=lambda: list(Channel), description="Audio sources covered"
    )


class GrantRequest(BaseModel):
    """A client's permission to record (``POST /v1/clients/{client}/consents``)."""

    model_config = ConfigDict(extra="forbid")

    purposes: list[str] = Field(
        min_length=1, description="Purposes recordings may serve, by registry name"
    )
    notice: Notice = Field(
        description="How callers learn of the recording: an `announcement` the platform "
        "plays (required where every party must agree) or a `contract`"
    )
    granted_by: str = Field(min_length=1, max_length=200, description="Who granted it")
    evidence: str = Field(
        min_length=1, max_length=2000, description="A document reference or hash proving it"
    )
    scope: Scope = Field(default_factory=Scope, description="The calls covered; default: all")
    notice_version: str | None = Field(
        default=None, max_length=100, description="Version of the notice text or audio"
    )
    notice_sha256: str | None = Field(
        default=None, description="Hex SHA-256 of the notice text or audio"
    )
    valid_from: datetime | None = Field(
        default=None, description="Start of validity (with a time zone); default: now"
    )
    valid_until: datetime | None = Field(
        default=None, description="End of validity (with a time zone); default: none"
    )

    @field_validator("notice_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be 64 hex characters")
        return value.lower() if value else value

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-01-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _window(self) -> GrantRequest:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.notice == Notice.ANNOUNCEMENT and not self.notice_sha256:
            raise ValueError("an announcement needs notice_sha256 (hash of its text or audio)")
        return self


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="Why, for the ledger")
    purge_existing: bool = Field(
        default=False,
        description="Also withdraw the grant's purposes from recordings already made "
        "(those left with none are purged)",
    )


class GrantPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The grant's id."""
    client_id: str
    """The client that granted it."""
    version: int
    """The ledger version that created it."""
    purposes: list[str]
    """Purposes recordings may serve."""
    notice: Notice
    """How callers learn of the recording."""
    notice_version: str | None
    """Version of the notice."""
    notice_sha256: str | None
    """SHA-256 of the notice text or audio."""
    scope: Scope
    """The calls covered."""
    valid_from: datetime
    """Start of validity."""
    valid_until: datetime | None
    """End of validity (none: until revoked)."""
    granted_by: str | None
    """Who granted it."""
    evidence: str | None
    """The document reference or hash proving it."""
    revoked_at: datetime | None
    """When it was revoked."""
    revoked_version: int | None
    """The ledger version that revoked it."""
    status: str
    """`active`, `pending` (not yet valid), `expired` or `revoked`, now."""


def _next_version(session: Session, client_id: str) -> int:
    current = session.exec(
        select(sa.func.max(ConsentEvent.ledger_version)).where(ConsentEvent.client_id == client_id)
    ).one()
    return int(current or 0) + 1


def grant(
    session: Session,
    *,
    client_id: str,
    request: GrantRequest,
    known_purposes: Iterable[str],
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> ConsentEvent:
    """Append a grant event (the caller has checked the client is active)."""
    unknown = sorted(set(request.purposes) - set(known_purposes))
    if unknown:
        raise InvalidRequest(f"unknown purposes: {', '.join(unknown)}", code="unknown_purpose")
    event = ConsentEvent(
        id=new_id("evt", now),
        client_id=client_id,
        grant_id=new_id("grt", now),
        kind=EventKind.GRANT,
        ledger_version=_next_version(session, client_id),
        purposes=json.dumps(sorted(set(request.purposes))),
        directions=json.dumps(sorted(set(request.scope.directions))),
        channels=json.dumps(sorted(set(request.scope.channels))),
        notice=request.notice,
        notice_version=request.notice_version,
        notice_sha256=request.notice_sha256,
        valid_from=request.valid_from or now,
        valid_until=request.valid_until,
        granted_by=request.granted_by,
        evidence=request.evidence,
        actor=actor,
        at=now,
    )
    session.add(event)
    audit.append(
        session,
        kind="consent.granted",
        actor=actor,
        now=now,
        client_id=client_id,
        subject=event.grant_id,
        data={
            "version": event.ledger_version,
            "purposes": json.loads(event.purposes),
            "notice": event.notice,
            "notice_sha256": event.notice_sha256,
            "evidence_sha256": hashlib.sha256(request.evidence.encode()).hexdigest(),
        },
    )
    session.flush()
    return event


def revoke(
    session: Session,
    *,
    client_id: str,
    grant_id: str,
    request: RevokeRequest,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> ConsentEvent:
    """Append a revocation: recording under this grant stops at once."""
    events = _events(session, client_id, grant_id)
    if not events:
        raise NotFound(f"no consent grant {grant_id}")
    if any(e.kind == EventKind.REVOKE for e in events):
        raise StateConflict(f"consent grant {grant_id} is already revoked", code="already_revoked")
    event = ConsentEvent(
        id=new_id("evt", now),
        client_id=client_id,
        grant_id=grant_id,
        kind=EventKind.REVOKE,
        ledger_version=_next_version(session, client_id),
        purposes=events[0].purposes,
        reason=request.reason,
        purge_existing=request.purge_existing,
        actor=actor,
        at=now,
    )
    session.add(event)
    audit.append(
        session,
        kind="consent.revoked",
        actor=actor,
        now=now,
        client_id=client_id,
        subject=grant_id,
        data={"version": event.ledger_version, "purge_existing": request.purge_existing},
    )
    session.flush()
    return event


def _events(session: Session, client_id: str, grant_id: str | None = None) -> list[ConsentEvent]:
    query = select(ConsentEvent).where(ConsentEvent.client_id == client_id)
    if grant_id is not None:
        query = query.where(ConsentEvent.grant_id == grant_id)
    return list(session.exec(query.order_by(ConsentEvent.ledger_version)))  # type: ignore[arg-type]


def ledger(session: Session, client_id: str) -> list[ConsentEvent]:
    """Every event of a client, oldest first."""
    return _events(session, client_id)


def current_grants(
    events: Iterable[ConsentEvent],
) -> dict[str, tuple[ConsentEvent, ConsentEvent | None]]:
    """Grant id → (grant event, revocation event or None), from a client's events."""
    grants: dict[str, tuple[ConsentEvent, ConsentEvent | None]] = {}
    for event in events:
        if event.kind == EventKind.GRANT:
            grants[event.grant_id] = (event, None)
        elif event.grant_id in grants:
            grants[event.grant_id] = (grants[event.grant_id][0], event)
    return grants


def grant_of(session: Session, client_id: str, grant_id: str) -> Grant | None:
    """The current state of one grant of a client, or None if the ledger has no such grant."""
    found = grant_events(session, client_id, grant_id)
    return None if found is None else to_grant(*found)


def grant_events(
    session: Session, client_id: str, grant_id: str
) -> tuple[ConsentEvent, ConsentEvent | None] | None:
    """One grant's event and its revocation (None while in force), or None if unknown."""
    return current_grants(_events(session, client_id, grant_id)).get(grant_id)


def to_grant(granted: ConsentEvent, revoked: ConsentEvent | None) -> Grant:
    """The decision engine's view of one grant."""
    assert granted.notice is not None and granted.valid_from is not None
    return Grant(
        id=granted.grant_id,
        version=granted.ledger_version,
        purposes=frozenset(json.loads(granted.purposes)),
        directions=frozenset(Direction(d) for d in json.loads(granted.directions)),
        channels=frozenset(Channel(c) for c in json.loads(granted.channels)),
        notice=Notice(granted.notice),
        notice_version=granted.notice_version,
        valid_from=granted.valid_from,
        valid_until=granted.valid_until,
        revoked_at=revoked.at if revoked else None,
    )


def to_public(granted: ConsentEvent, revoked: ConsentEvent | None, *, now: datetime) -> GrantPublic:
    assert granted.notice is not None and granted.valid_from is not None
    if revoked is not None:
        status = "revoked"
    elif granted.valid_until is not None and granted.valid_until <= now:
        status = "expired"
    elif granted.valid_from > now:
        status = "pending"
    else:
        status = "active"
    return GrantPublic(
        id=granted.grant_id,
        client_id=granted.client_id,
        version=granted.ledger_version,
        purposes=json.loads(granted.purposes),
        notice=Notice(granted.notice),
        notice_version=granted.notice_version,
        notice_sha256=granted.notice_sha256,
        scope=Scope(
            directions=json.loads(granted.directions), channels=json.loads(granted.channels)
        ),
        valid_from=granted.valid_from,
        valid_until=granted.valid_until,
        granted_by=granted.granted_by,
        evidence=granted.evidence,
        revoked_at=revoked.at if revoked else None,
        revoked_version=revoked.ledger_version if revoked else None,
        status=status,
    )


def event_public(event: ConsentEvent) -> dict[str, Any]:
    """A ledger event as JSON, its lists decoded."""
    data = event.model_dump(exclude={"client_id"})
    for name in ("purposes", "directions", "channels"):
        data[name] = json.loads(data[name])
    return data

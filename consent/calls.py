"""Calls: the decision asked for at call setup, the caller's answer, and the call's state.

``ask`` reads the client's consent, runs the pure ``decide`` and persists the answer
with an audit event, whatever the outcome. If the consent data cannot be read the
answer is "do not record" (``consent_unavailable``): fail closed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, select

from consent.decision import apply_caller_answer, decide
from consent.domain import CallFacts, Channel, Decision, Direction, Reason
from consent.errors import NotFound, StateConflict
from consent.jurisdiction import normalize_jurisdiction
from consent.phones import hash_phone, normalize_phone
from consent.reader import ConsentReader
from storage.audit import AuditLog
from storage.ids import new_id
from storage.types import UTCDateTime

log = logging.getLogger(__name__)

_CALL_ID = re.compile(r"^[A-Za-z0-9._:@+-]{1,200}$")


class CallState(StrEnum):
    OPEN = "open"
    PAUSED = "paused"
    ENDED = "ended"
    OPTED_OUT = "opted_out"


class CallerAnswer(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"


class CallRequest(BaseModel):
    """The call hook's question (``POST /v1/calls``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    call_id: str = Field(description="The platform's call id (letters, digits, ._:@+-)")
    direction: Direction
    from_: str = Field(alias="from", description="Caller, E.164 or sip:/tel: URI")
    to: str = Field(description="Callee, E.164 or sip:/tel: URI")
    channel: Channel
    jurisdiction: str | None = Field(
        default=None, description="Where the other party is (MA, US-CA…); unknown = strictest"
    )
    purposes: list[str] | None = Field(default=None, description="Default: all granted")

    @field_validator("call_id")
    @classmethod
    def _call_id(cls, value: str) -> str:
        if not _CALL_ID.match(value):
            raise ValueError("1-200 characters among letters, digits and ._:@+-")
        return value

    @field_validator("from_", "to")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("jurisdiction")
    @classmethod
    def _jurisdiction(cls, value: str | None) -> str | None:
        return None if value is None else normalize_jurisdiction(value)


class CallerConsentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accepted: bool
    method: str = Field(pattern="^(dtmf|speech)$")
    notice_version: str = Field(min_length=1, max_length=100)


class CallDecision(SQLModel, table=True):
    """A persisted decision: one per (client, call)."""

    __tablename__ = "call_decisions"
    __table_args__ = (sa.UniqueConstraint("client_id", "call_id"),)

    id: str = SQLField(primary_key=True, max_length=40)
    client_id: str = SQLField(index=True, max_length=63)
    call_id: str = SQLField(max_length=200)
    channel: str = SQLField(max_length=20)
    direction: str = SQLField(max_length=20)
    participants: str = SQLField(sa_type=sa.Text)  # JSON list of keyed phone hashes
    jurisdiction: str | None = SQLField(default=None, max_length=10)
    record: bool
    reason: str = SQLField(max_length=40, index=True)
    purposes: str = SQLField(default="{}", sa_type=sa.Text)  # JSON {purpose: expiry ISO}
    grant_id: str | None = SQLField(default=None, max_length=40)
    grant_version: int | None = None
    rule: str = SQLField(max_length=20)
    rule_jurisdiction: str | None = SQLField(default=None, max_length=10)
    rule_version: int | None = None
    announcement_required: bool = False
    awaiting_caller_consent: bool = False
    caller_answer: str | None = SQLField(default=None, max_length=20)
    caller_method: str | None = SQLField(default=None, max_length=20)
    caller_notice_version: str | None = SQLField(default=None, max_length=100)
    caller_answered_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    state: CallState = SQLField(default=CallState.OPEN, sa_type=sa.String(20))
    decided_at: datetime = SQLField(sa_type=UTCDateTime)
    updated_at: datetime = SQLField(sa_type=UTCDateTime)

    def purpose_expiries(self) -> dict[str, datetime]:
        return {p: datetime.fromisoformat(e) for p, e in json.loads(self.purposes).items()}

    @property
    def may_keep_audio(self) -> bool:
        """True while audio for this call may be kept (consent complete, not opted out)."""
        return (
            self.record
            and not self.awaiting_caller_consent
            and self.state in (CallState.OPEN, CallState.PAUSED, CallState.ENDED)
        )


@dataclass(frozen=True, slots=True)
class DecisionView:
    """A decision as the call hook answers it: the row's fields, without an ORM object.

    A fresh decision is inserted with one Core statement; building a ``CallDecision``
    only to read it back would cost more than the insert.
    """

    id: str
    client_id: str
    call_id: str
    channel: str
    record: bool
    reason: str
    purposes: str  # JSON {purpose: expiry ISO}, as stored
    grant_id: str | None
    grant_version: int | None
    rule: str
    rule_jurisdiction: str | None
    announcement_required: bool
    awaiting_caller_consent: bool
    state: str

    @classmethod
    def of(cls, row: CallDecision) -> DecisionView:
        return cls(**{name: getattr(row, name) for name in cls.__slots__})

    def purpose_expiries(self) -> dict[str, datetime]:
        return {p: datetime.fromisoformat(e) for p, e in json.loads(self.purposes).items()}


def ask(
    session: Session,
    *,
    client_id: str,
    request: CallRequest,
    phone_key: bytes,
    reader: ConsentReader,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> DecisionView:
    """Decide whether to record a call, persist the decision and audit it.

    Asking again for the same call returns the first decision unchanged.
    """
    # Core statements on the session's connection: the ORM would cost more than they do.
    connection = session.connection()
    existing = connection.execute(
        _FIND_ID, {"client_id": client_id, "call_id": request.call_id}
    ).scalar_one_or_none()
    if existing is not None:
        return DecisionView.of(session.get_one(CallDecision, existing))
    participants = (hash_phone(phone_key, request.from_), hash_phone(phone_key, request.to))
    facts = CallFacts(
        call_id=request.call_id,
        direction=request.direction,
        channel=request.channel,
        participants=participants,
        jurisdictions=(request.jurisdiction, request.jurisdiction),
        purposes=None if request.purposes is None else frozenset(request.purposes),
    )
    consent = reader.client_consent(session, client_id, participants)
    decision = decide(consent, facts, reader.reference(session).rules, now)
    fields = {
        "id": new_id("dec", now),
        "client_id": client_id,
        "call_id": request.call_id,
        "channel": request.channel,
        "direction": request.direction,
        "participants": json.dumps(participants),
        "jurisdiction": request.jurisdiction,
        "state": CallState.OPEN,
        "decided_at": now,
        "updated_at": now,
        **_decision_fields(decision),
    }
    connection.execute(_INSERT, fields)
    view = DecisionView(**{name: fields[name] for name in DecisionView.__slots__})
    _audit(session, audit, view, "call.decided", actor, now)
    return view


def answer_caller_consent(
    session: Session,
    *,
    client_id: str,
    call_id: str,
    request: CallerConsentRequest,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> CallDecision:
    """Record the caller's answer to the notice; recording may start only if accepted."""
    row = get_call(session, client_id=client_id, call_id=call_id)
    if not row.awaiting_caller_consent:
        raise StateConflict(
            f"call {call_id} is not waiting for the caller's consent", code="not_awaiting"
        )
    decision = apply_caller_answer(_to_decision(row), accepted=request.accepted)
    for name, value in _decision_fields(decision).items():
        setattr(row, name, value)
    row.caller_answer = CallerAnswer.ACCEPTED if request.accepted else CallerAnswer.DECLINED
    row.caller_method, row.caller_notice_version = request.method, request.notice_version
    row.caller_answered_at = row.updated_at = now
    session.add(row)
    _audit(session, audit, DecisionView.of(row), "call.caller_consent", actor, now)
    session.flush()
    return row


_NEXT_STATE = {
    "pause": ({CallState.OPEN}, CallState.PAUSED),
    "resume": ({CallState.PAUSED}, CallState.OPEN),
    "opt-out": ({CallState.OPEN, CallState.PAUSED}, CallState.OPTED_OUT),
    "end": ({CallState.OPEN, CallState.PAUSED}, CallState.ENDED),
}


def change_state(
    session: Session,
    *,
    client_id: str,
    call_id: str,
    action: str,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> CallDecision:
    """Pause, resume, opt out of or end a call."""
    allowed_from, target = _NEXT_STATE[action]
    row = get_call(session, client_id=client_id, call_id=call_id)
    if row.state not in allowed_from:
        raise StateConflict(f"call {call_id} is {row.state}; cannot {action}", code="call_state")
    row.state, row.updated_at = target, now
    session.add(row)
    _audit(session, audit, DecisionView.of(row), f"call.{target}", actor, now)
    session.flush()
    return row


_DECISIONS: sa.Table = CallDecision.__table__  # type: ignore[attr-defined]
_FIND_ID = sa.select(_DECISIONS.c.id).where(
    _DECISIONS.c.client_id == sa.bindparam("client_id"),
    _DECISIONS.c.call_id == sa.bindparam("call_id"),
)
_INSERT = sa.insert(_DECISIONS)


def find_call(session: Session, *, client_id: str, call_id: str) -> CallDecision | None:
    return session.exec(
        select(CallDecision).where(
            CallDecision.client_id == client_id, CallDecision.call_id == call_id
        )
    ).first()


def get_call(session: Session, *, client_id: str, call_id: str) -> CallDecision:
    """The call of this client, or NotFound (also for another client's call id)."""
    row = find_call(session, client_id=client_id, call_id=call_id)
    if row is None:
        raise NotFound(f"no call {call_id}", code="unknown_call")
    return row


def _decision_fields(decision: Decision) -> dict[str, Any]:
    return {
        "record": decision.record,
        "reason": decision.reason,
        "purposes": json.dumps({p: e.isoformat() for p, e in decision.purposes.items()}),
        "grant_id": decision.grant_id,
        "grant_version": decision.grant_version,
        "rule": decision.rule,
        "rule_jurisdiction": decision.rule_jurisdiction,
        "rule_version": decision.rule_version,
        "announcement_required": decision.announcement_required,
        "awaiting_caller_consent": decision.awaiting_caller_consent,
    }


def _to_decision(row: CallDecision) -> Decision:
    from consent.domain import Rule

    return Decision(
        record=row.record,
        reason=Reason(row.reason),
        purposes=row.purpose_expiries(),
        grant_id=row.grant_id,
        grant_version=row.grant_version,
        rule=Rule(row.rule),
        rule_jurisdiction=row.rule_jurisdiction,
        rule_version=row.rule_version,
        announcement_required=row.announcement_required,
        awaiting_caller_consent=row.awaiting_caller_consent,
    )


def _audit(
    session: Session, audit: AuditLog, row: DecisionView, kind: str, actor: str, now: datetime
) -> None:
    audit.append(
        session,
        kind=kind,
        actor=actor,
        now=now,
        client_id=row.client_id,
        subject=row.id,
        data={
            "call_id": row.call_id,
            "record": row.record,
            "reason": row.reason,
            "purposes": json.loads(row.purposes),
            "grant_id": row.grant_id,
            "grant_version": row.grant_version,
            "rule": row.rule,
            "rule_jurisdiction": row.rule_jurisdiction,
            "state": row.state,
        },
    )

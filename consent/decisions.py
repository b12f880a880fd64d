"""A call's decision as stored: one row per (client, call), and the view the hook answers.

Decided once at call setup by ``calls.ask``; afterwards only the caller's answer, the
call's state and, when its grant ends before any audio is captured, its outcome
(``consent.lapse``) change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from consent.domain import Decision, Reason, Rule
from storage.audit import AuditEntry
from storage.types import UTCDateTime

__all__ = [
    "DECISIONS",
    "CallDecision",
    "CallState",
    "CallerAnswer",
    "DecisionView",
    "audit_entry",
    "decision_fields",
    "decision_of",
]


class CallState(StrEnum):
    OPEN = "open"
    PAUSED = "paused"
    ENDED = "ended"
    OPTED_OUT = "opted_out"


class CallerAnswer(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"


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


DECISIONS: sa.Table = CallDecision.__table__  # type: ignore[attr-defined]


def decision_fields(decision: Decision) -> dict[str, Any]:
    """A decision's outcome as the row's columns."""
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


def decision_of(row: CallDecision) -> Decision:
    """The stored outcome as the decision engine's value."""
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


def audit_entry(row: DecisionView, kind: str, actor: str) -> AuditEntry:
    """The audit event of a change to a call's decision or state."""
    return AuditEntry(
        kind,
        actor,
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

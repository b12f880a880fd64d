"""Calls: the decision asked for at call setup, the caller's answer, and the call's state.

``ask`` reads the client's consent, runs the pure ``decide`` and persists the answer
with an audit event, whatever the outcome. If the consent data cannot be read the
answer is "do not record" (``consent_unavailable``): fail closed.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, select

from consent.decision import apply_caller_answer, decide
from consent.decisions import (
    DECISIONS,
    CallDecision,
    CallerAnswer,
    CallState,
    DecisionView,
    audit_entry,
    decision_fields,
    decision_of,
)
from consent.domain import CallFacts, Channel, Direction
from consent.errors import NotFound, StateConflict
from consent.jurisdiction import normalize_jurisdiction
from consent.lapse import lapse_call
from consent.phones import hash_party, normalize_phone, party_name
from consent.reader import ConsentReader
from storage.audit import AuditEntry, AuditLog
from storage.ids import new_id

__all__ = [
    "CallDecision",
    "CallRequest",
    "CallState",
    "CallerAnswer",
    "CallerConsentRequest",
    "DecisionView",
    "answer_caller_consent",
    "ask",
    "change_state",
    "find_call",
    "get_call",
    "siprec_request",
]

log = logging.getLogger(__name__)

_CALL_ID = re.compile(r"^[A-Za-z0-9._:@+-]{1,200}$")
_E164_SCHEMA = r"^\+[1-9][0-9]{6,14}$"
_JURISDICTION_SCHEMA = r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$"
_INSERT = sa.insert(DECISIONS)
_VIEW_BY_ID = sa.select(*(DECISIONS.c[name] for name in DecisionView.__slots__)).where(
    DECISIONS.c.id == sa.bindparam("id")
)


class CallRequest(BaseModel):
    """The call hook's question (``POST /v1/calls``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # The patterns below document the canonical forms (what a generator should send);
    # the validators also accept the looser forms their descriptions name.
    call_id: str = Field(
        description="The platform's call id: 1-200 letters, digits or ._:@+-",
        json_schema_extra={"pattern": _CALL_ID.pattern, "examples": ["c-1001"]},
    )
    direction: Direction = Field(description="`inbound` or `outbound`, seen from the client")
    from_: str = Field(
        alias="from",
        description="The caller, E.164 (spaces, dots, dashes, a 00 prefix, sip:/tel: URIs "
        "are normalised)",
        json_schema_extra={"pattern": _E164_SCHEMA, "examples": ["+212612345678"]},
    )
    to: str = Field(
        description="The callee, in the same forms as `from`",
        json_schema_extra={"pattern": _E164_SCHEMA, "examples": ["+212522000000"]},
    )
    channel: Channel = Field(description="How the audio will come: its source")
    jurisdiction: str | None = Field(
        default=None,
        description="ISO 3166 code of where the other party is (MA, US-CA); "
        "absent or unknown: the strictest rule applies",
        json_schema_extra={"pattern": _JURISDICTION_SCHEMA, "examples": ["US-NY"]},
    )
    purposes: list[str] | None = Field(
        default=None,
        description="The purposes to record for, by name; absent: every purpose granted",
        json_schema_extra={"examples": [["research"]]},
    )

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
    """The caller's answer to the notice (``POST /v1/calls/{call_id}/caller-consent``)."""

    model_config = ConfigDict(extra="forbid")

    accepted: bool = Field(description="Whether the caller agreed to be recorded")
    method: str = Field(pattern="^(dtmf|speech)$", description="How the caller answered")
    notice_version: str = Field(
        min_length=1, max_length=100, description="The version of the notice the caller heard"
    )


class _PartyCallRequest(CallRequest):
    """A call whose parties may be addresses rather than numbers (SIPREC participants)."""

    @field_validator("from_", "to")
    @classmethod
    def _phone(cls, value: str) -> str:
        try:
            return normalize_phone(value)
        except ValueError:
            party_name(value)  # something must name the party
            if len(value) > 500:
                raise ValueError("a party's address is at most 500 characters") from None
            return value.strip()


def siprec_request(
    *,
    call_id: str,
    direction: str,
    from_: str,
    to: str,
    jurisdiction: str | None = None,
    purposes: list[str] | None = None,
) -> CallRequest:
    """The question a SIPREC session asks: its parties are E.164 numbers where they can
    be read as such, else their addresses as written (an extension, ``sip:alice@host``).

    ValueError (pydantic's ValidationError) on a bad call id, direction or jurisdiction.
    """
    return _PartyCallRequest.model_validate(
        {
            "call_id": call_id,
            "direction": direction,
            "from": from_,
            "to": to,
            "channel": Channel.SIPREC,
            "jurisdiction": jurisdiction,
            "purposes": purposes,
        }
    )


def ask(
    connection: sa.Connection,
    *,
    client_id: str,
    request: CallRequest,
    phone_key: bytes,
    reader: ConsentReader,
    actor: str,
    events: list[AuditEntry],
    now: datetime,
    jurisdictions: tuple[str | None, str | None] | None = None,
) -> DecisionView:
    """Decide whether to record a call and persist the decision.

    The decision's audit entry goes into ``events``, for the caller to append in the
    same transaction. Asking again for the same call returns the first decision,
    unless its grant has ended since and nothing is captured yet (``consent.lapse``).
    Core statements on a bare connection, no ORM: this runs at every call
    setup, and the ORM would cost several times what the statements do.

    ``jurisdictions`` (caller's, callee's) replaces the request's one jurisdiction for
    both parties when given (SIPREC resolves them per party); the row still keeps the
    request's ``jurisdiction``, the one named for the whole call.
    """
    participants = (hash_party(phone_key, request.from_), hash_party(phone_key, request.to))
    snapshot = reader.read(
        connection, client_id=client_id, call_id=request.call_id, participants=participants
    )
    if snapshot.decided is not None:
        return _earlier(connection, snapshot.decided, actor=actor, events=events, now=now)
    facts = CallFacts(
        call_id=request.call_id,
        direction=request.direction,
        channel=request.channel,
        participants=participants,
        jurisdictions=(request.jurisdiction, request.jurisdiction)
        if jurisdictions is None
        else jurisdictions,
        purposes=None if request.purposes is None else frozenset(request.purposes),
    )
    decision = decide(snapshot.consent, facts, reader.reference(connection).rules, now)
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
        **decision_fields(decision),
    }
    connection.execute(_INSERT, fields)
    view = DecisionView(**{name: fields[name] for name in DecisionView.__slots__})
    events.append(audit_entry(view, "call.decided", actor))
    return view


def _earlier(
    connection: sa.Connection,
    decision_id: str,
    *,
    actor: str,
    events: list[AuditEntry],
    now: datetime,
) -> DecisionView:
    earlier = DecisionView(**connection.execute(_VIEW_BY_ID, {"id": decision_id}).one()._mapping)
    if not earlier.record:
        return earlier
    # The ORM on the caller's transaction: only a call asked about twice comes here.
    with Session(bind=connection) as session:
        row = session.get_one(CallDecision, decision_id)
        if not lapse_call(session, row, actor=actor, events=events, now=now):
            return earlier
        session.flush()
        return DecisionView.of(row)


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
    """Record the caller's answer to the notice; recording may start only if accepted.

    If the call's grant was revoked or has expired since the call was decided, the
    answer is not taken: the call is not recorded (``consent_revoked`` /
    ``consent_expired``).
    """
    row = get_call(session, client_id=client_id, call_id=call_id)
    if row.awaiting_caller_consent:
        lapsed: list[AuditEntry] = []
        if lapse_call(session, row, actor=actor, events=lapsed, now=now):
            # The grant ended while the caller listened: the answer no longer matters.
            audit.append_many(session, lapsed, now=now)
            session.flush()
            return row
    if not row.awaiting_caller_consent:
        raise StateConflict(
            f"call {call_id} is not waiting for the caller's consent", code="not_awaiting"
        )
    decision = apply_caller_answer(decision_of(row), accepted=request.accepted)
    for name, value in decision_fields(decision).items():
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


def _audit(
    session: Session | sa.Connection,
    audit: AuditLog,
    row: DecisionView,
    kind: str,
    actor: str,
    now: datetime,
) -> None:
    audit.append_many(session, [audit_entry(row, kind, actor)], now=now)

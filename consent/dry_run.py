"""The call hook's answer for a hypothetical call, with nothing persisted.

An integrator checking its set-up, or a client checking its grants, asks what the call
hook would answer for a call: the same read (``ConsentReader``) and the same pure
``decide`` as ``calls.ask``, without the insert and without an audit event. A call
already decided gets what the hook would give it again: its decision, checked against
its grant at ``now`` (``decision.recheck``) as the hook does before any audio is
captured, but without writing the lapse down.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from consent import ledger
from consent.calls import CallRequest
from consent.decision import decide, recheck
from consent.decisions import CallDecision, CallState, DecisionView, decision_fields, decision_of
from consent.domain import CallFacts
from consent.lapse import captured
from consent.phones import hash_party
from consent.reader import ConsentReader
from storage.db import connection_of

__all__ = ["dry_run"]


def dry_run(
    session: Session,
    *,
    client_id: str,
    request: CallRequest,
    phone_key: bytes,
    reader: ConsentReader,
    now: datetime,
) -> DecisionView:
    """The decision the call hook would answer now; its ``id`` is empty for a new call
    and names the call's decision for one decided already. Writes nothing."""
    connection = connection_of(session)
    participants = (hash_party(phone_key, request.from_), hash_party(phone_key, request.to))
    snapshot = reader.read(
        connection, client_id=client_id, call_id=request.call_id, participants=participants
    )
    if snapshot.decided is not None:
        return _again(session, snapshot.decided, now)
    facts = CallFacts(
        call_id=request.call_id,
        direction=request.direction,
        channel=request.channel,
        participants=participants,
        jurisdictions=(request.jurisdiction, request.jurisdiction),
        purposes=None if request.purposes is None else frozenset(request.purposes),
    )
    decision = decide(snapshot.consent, facts, reader.reference(connection).rules, now)
    fields = {
        "id": "",
        "client_id": client_id,
        "call_id": request.call_id,
        "channel": request.channel,
        "state": CallState.OPEN,
        **decision_fields(decision),
    }
    return DecisionView(**{name: fields[name] for name in DecisionView.__slots__})


def _again(session: Session, decision_id: str, now: datetime) -> DecisionView:
    """An earlier decision as the hook would give it back (``consent.lapse``), unwritten."""
    row = session.get_one(CallDecision, decision_id)
    view = DecisionView.of(row)
    if not row.record or captured(session, row):
        return view
    grant = None if row.grant_id is None else ledger.grant_of(session, row.client_id, row.grant_id)
    before = decision_of(row)
    after = recheck(before, grant, now)
    if after is before:
        return view
    fields = {name: getattr(view, name) for name in DecisionView.__slots__}
    fields.update(decision_fields(after))
    return DecisionView(**{name: fields[name] for name in DecisionView.__slots__})

"""Evidence for one number at one client: every decision and recording it took part in.

For answering a data subject's access request or a complaint. The number is never
stored or logged: it is normalised as the call hook does and hashed with the phone
key, and the client's decisions are searched for that hash among their parties.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlmodel import Session, col, select

from consent import clients
from consent.decisions import CallDecision
from consent.phones import hash_phone
from retention.errors import InvalidRequest
from retention.evidence import (
    Events,
    caller_consent_of,
    chain_status,
    decision_fact_of,
    recording_evidence,
)
from retention.evidence_model import CallEvidence, ChainStatus, NumberEvidence
from storage.audit import AuditEvent, AuditLog
from storage.catalog import Recording

__all__ = ["number_evidence"]


def number_evidence(
    session: Session,
    *,
    client_id: str,
    phone: str,
    phone_key: bytes,
    audit: AuditLog,
    now: datetime,
) -> NumberEvidence:
    """The evidence of every call of ``client_id`` in which ``phone`` took part."""
    clients.get_client(session, client_id)  # NotFound for an unknown client
    try:
        phone_hash = hash_phone(phone_key, phone)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_phone") from None
    decisions = [
        row
        for row in session.exec(
            select(CallDecision).where(
                CallDecision.client_id == client_id,
                col(CallDecision.participants).contains(phone_hash),
            )
        )
        if phone_hash in json.loads(row.participants)
    ]
    ids = [row.id for row in decisions]
    events = Events(
        session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.subject).in_(ids), AuditEvent.client_id == client_id)
            .order_by(col(AuditEvent.seq))
        )
    )
    # In chain order: decisions taken at the same instant still come in the order taken.
    first_seen: dict[str | None, int] = {}
    for event in reversed(events.all):
        first_seen[event.subject] = event.seq
    decisions.sort(key=lambda row: (row.decided_at, first_seen.get(row.id, 0)))
    ids = [row.id for row in decisions]
    recordings: dict[str, list[str]] = {decision_id: [] for decision_id in ids}
    for recording_id, decision_id in session.exec(
        select(Recording.id, Recording.decision_id)
        .where(Recording.client_id == client_id, col(Recording.decision_id).in_(ids))
        .order_by(col(Recording.id))
    ):
        if decision_id is not None:
            recordings[decision_id].append(recording_id)
    calls = [
        CallEvidence(
            decision_id=row.id,
            call_id=row.call_id,
            decision=decision_fact_of(events, row),
            caller_consent=caller_consent_of(events, row),
            recordings=recordings[row.id],
        )
        for row in decisions
    ]
    evidence = [
        recording_evidence(session, recording_id, client_id=client_id, audit=audit, now=now)
        for decision_id in ids
        for recording_id in recordings[decision_id]
    ]
    chains = [e.chain for e in evidence] + [chain_status(session, audit, events.cited)]
    broken = [chain for chain in chains if not chain.ok]
    last = max(chain.checked_up_to for chain in chains)
    chain = (
        broken[0].model_copy(update={"checked_up_to": last})
        if broken
        else ChainStatus(ok=True, checked_up_to=last)
    )
    return NumberEvidence(client_id=client_id, calls=calls, recordings=evidence, chain=chain)

"""Evidence for one recording, built from the audit log: why, until when, who read it.

The events about a recording are keyed by what they are about (``subject``): the
recording itself, its call's decision, the grant the decision rests on, the legal
holds that cover it and the subject requests about its parties. They are read in one
query on that index; the tables they point to (the ledger, the holds, the decision)
add what the events do not carry, and every fact names the event it rests on. The
chain is then checked through the newest event cited (``AuditLog.verify_through``),
each cited event re-hashed against its neighbours, and the head against its anchor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from consent import ledger, registry
from consent.decisions import CallDecision, CallerAnswer
from retention.errors import NotFound
from retention.evidence_model import (
    CallerConsentFact,
    CertificateFact,
    ChainStatus,
    Cited,
    DecisionFact,
    GrantFact,
    HoldFact,
    HoldRelease,
    PurposeEnd,
    PurposeFact,
    ReadFact,
    RecordingEvidence,
    RestrictionFact,
    RevocationFact,
    StoredFact,
)
from retention.evidence_sentence import kept_because
from retention.holds import LegalHold, LegalHoldTarget, targets_naming
from retention.subjects import SubjectRequest
from storage import catalog
from storage.audit import AuditEvent, AuditLog
from storage.catalog import Recording

__all__ = [
    "AUDIO_ROUTE",
    "EXPORT_ROUTE",
    "Events",
    "caller_consent_of",
    "chain_status",
    "decision_fact_of",
    "recording_evidence",
]

AUDIO_ROUTE = "GET /v1/recordings/{recording_id}/audio"
EXPORT_ROUTE = "GET /v1/subject-requests/{request_id}/export"

F = TypeVar("F", bound=Cited)


class Events:
    """The events found, and those cited so far (for the chain check)."""

    def __init__(self, events: Iterable[AuditEvent]) -> None:
        self.all = list(events)
        self.cited: set[int] = set()

    def of(self, subject: str | None, *kinds: str) -> list[tuple[AuditEvent, dict[str, Any]]]:
        return [
            (e, json.loads(e.data)) for e in self.all if e.subject == subject and e.kind in kinds
        ]

    def first(self, subject: str | None, kind: str) -> tuple[AuditEvent, dict[str, Any]] | None:
        found = self.of(subject, kind)
        return found[0] if found else None

    def cite(self, fact: type[F], event: AuditEvent, **fields: Any) -> F:
        self.cited.add(event.seq)
        return fact(
            event_id=event.seq, event_hash=event.hash, at=event.at, actor=event.actor, **fields
        )


def recording_evidence(
    session: Session, recording_id: str, *, client_id: str | None, audit: AuditLog, now: datetime
) -> RecordingEvidence:
    """The evidence for a recording; ``client_id`` set: another client's is NotFound."""
    recording = catalog.get_recording(session, recording_id, client_id=client_id)
    if recording is None:
        raise NotFound(f"no recording {recording_id}")
    decision = session.get(CallDecision, recording.decision_id) if recording.decision_id else None
    holds = _holds_of(session, recording)
    requests = _requests_of(session, recording, decision)
    subjects = {recording.id, *holds, *requests}
    if decision is not None:
        subjects.add(decision.id)
        if decision.grant_id:
            subjects.add(decision.grant_id)
    query = (
        select(AuditEvent)
        .where(col(AuditEvent.subject).in_(subjects))
        .where(
            sa.or_(
                col(AuditEvent.client_id).is_(None),
                col(AuditEvent.client_id) == recording.client_id,
            )
        )
        .order_by(col(AuditEvent.seq))
    )
    events = Events(session.exec(query))
    decision_fact = decision_fact_of(events, decision)
    grant = _grant(session, events, decision)
    caller = caller_consent_of(events, decision)
    stored = _stored(events, recording)
    certificate = _certificate(events, recording)
    purposes = _purposes(session, events, recording, decision)
    hold_facts = _holds(session, events, holds)
    restrictions = _restrictions(events, recording, requests)
    reads = _reads(events, recording, requests)
    answer = RecordingEvidence(
        recording_id=recording.id,
        client_id=recording.client_id,
        call_id=recording.call_id,
        state=recording.state,
        kept_because="",
        decision=decision_fact,
        grant=grant,
        caller_consent=caller,
        stored=stored,
        purposes=purposes,
        holds=hold_facts,
        restrictions=restrictions,
        reads=reads,
        certificate=certificate,
        chain=chain_status(session, audit, events.cited),
    )
    answer.kept_because = kept_because(answer, now)
    return answer


def _holds_of(session: Session, recording: Recording) -> dict[str, list[str]]:
    """Every case (open or released) naming the recording, its call or its client."""
    query = select(LegalHoldTarget).where(targets_naming(recording))
    covers: dict[str, list[str]] = {}
    for target in session.exec(query):
        covers.setdefault(target.hold_id, []).append(target.kind)
    return covers


def _requests_of(
    session: Session, recording: Recording, decision: CallDecision | None
) -> list[str]:
    """The subject requests about either party of the recording's call."""
    if decision is None:
        return []
    parties = json.loads(decision.participants)
    query = select(SubjectRequest.id).where(
        SubjectRequest.client_id == recording.client_id,
        col(SubjectRequest.phone_hash).in_(parties),
    )
    return list(session.exec(query))


def decision_fact_of(events: Events, decision: CallDecision | None) -> DecisionFact | None:
    found = events.first(decision.id, "call.decided") if decision else None
    if decision is None or found is None:
        return None
    event, data = found
    return events.cite(
        DecisionFact,
        event,
        decision_id=decision.id,
        call_id=data["call_id"],
        record=data["record"],
        reason=data["reason"],
        rule=data["rule"],
        rule_jurisdiction=data["rule_jurisdiction"],
        rule_version=decision.rule_version,
        purposes=data["purposes"],
        grant_id=data["grant_id"],
        grant_version=data["grant_version"],
    )


def _grant(session: Session, events: Events, decision: CallDecision | None) -> GrantFact | None:
    if decision is None or decision.grant_id is None:
        return None
    found = events.first(decision.grant_id, "consent.granted")
    rows = ledger.grant_events(session, decision.client_id, decision.grant_id)
    if found is None or rows is None:
        return None
    (event, data), (granted, revoked) = found, rows
    revocation = None
    revoked_event = events.first(decision.grant_id, "consent.revoked")
    if revoked is not None and revoked_event is not None:
        revocation = events.cite(
            RevocationFact,
            revoked_event[0],
            reason=revoked.reason,
            purge_existing=revoked.purge_existing,
        )
    evidence = granted.evidence
    digest = hashlib.sha256(evidence.encode()).hexdigest() if evidence is not None else None
    return events.cite(
        GrantFact,
        event,
        grant_id=granted.grant_id,
        version=data["version"],
        purposes=data["purposes"],
        notice=data["notice"],
        notice_version=granted.notice_version,
        notice_sha256=data["notice_sha256"],
        granted_by=granted.granted_by,
        evidence=evidence,
        evidence_matches_event=digest == data.get("evidence_sha256"),
        valid_from=granted.valid_from,
        valid_until=granted.valid_until,
        revoked=revocation,
    )


def caller_consent_of(events: Events, decision: CallDecision | None) -> CallerConsentFact | None:
    found = events.first(decision.id, "call.caller_consent") if decision else None
    if decision is None or found is None:
        return None
    event, _ = found
    return events.cite(
        CallerConsentFact,
        event,
        accepted=decision.caller_answer == CallerAnswer.ACCEPTED,
        method=decision.caller_method,
        notice_version=decision.caller_notice_version,
    )


def _stored(events: Events, recording: Recording) -> StoredFact | None:
    found = events.first(recording.id, "recording.stored") or events.first(
        recording.id, "recording.recovered"
    )
    if found is None:
        return None
    event, data = found
    return events.cite(
        StoredFact,
        event,
        sha256=data.get("sha256"),
        size=data.get("size"),
        audio_sha256=data.get("audio_sha256"),
        object_key=data.get("object_key"),
    )


def _certificate(events: Events, recording: Recording) -> CertificateFact | None:
    found = events.first(recording.id, "recording.purged")
    if found is None:
        return None
    event, data = found
    return events.cite(CertificateFact, event, certificate=data)


def _purposes(
    session: Session, events: Events, recording: Recording, decision: CallDecision | None
) -> list[PurposeFact]:
    """Each purpose: expiry from the decision (or the catalog while live), legal basis
    from the registry, and the event that ended it, if any."""
    live = catalog.purposes_of(session, recording.id)
    decided = decision.purpose_expiries() if decision is not None else {}
    source = events.first(recording.id, "recording.stored") or (
        events.first(decision.id, "call.decided") if decision else None
    )
    if source is None:
        return []
    registered = registry.purposes(session)
    ends = _purpose_ends(events, recording)
    facts = []
    for name in sorted(set(decided) | set(live)):
        purpose = registered.get(name)
        facts.append(
            events.cite(
                PurposeFact,
                source[0],
                name=name,
                legal_basis=purpose.legal_basis if purpose else None,
                regulator_reference=purpose.regulator_reference if purpose else None,
                expires_at=live.get(name, decided.get(name)),
                live=name in live,
                ended=None if name in live else ends.get(name),
            )
        )
    return facts


def _purpose_ends(events: Events, recording: Recording) -> dict[str, PurposeEnd]:
    ends: dict[str, PurposeEnd] = {}
    kinds = ("recording.purposes_expired", "recording.purposes_withdrawn", "recording.purged")
    for event, data in events.of(recording.id, *kinds):
        why: str | None
        if event.kind == "recording.purposes_expired":
            names, how, why = list(data.get("expired", {})), "expired", "retention ran out"
        elif event.kind == "recording.purposes_withdrawn":
            grant = data.get("grant_id")
            why = f"consent {grant} revoked" if grant else data.get("cause")
            names, how = list(data.get("withdrawn", [])), "withdrawn"
        else:
            names, how, why = list(data.get("purposes", {})), "purged", data.get("rule")
        for name in names:
            if name not in ends:
                ends[name] = events.cite(PurposeEnd, event, how=how, why=why)
    return ends


def _holds(session: Session, events: Events, holds: dict[str, list[str]]) -> list[HoldFact]:
    facts = []
    for hold_id, covers in sorted(holds.items()):
        placed = events.first(hold_id, "legal_hold.placed")
        if placed is None:
            continue
        event, data = placed
        released = events.first(hold_id, "legal_hold.released")
        hold = session.get(LegalHold, hold_id)
        facts.append(
            events.cite(
                HoldFact,
                event,
                hold_id=hold_id,
                reason=data.get("reason", ""),
                covers=sorted(covers),
                until=hold.until if hold else None,
                released=events.cite(HoldRelease, released[0]) if released else None,
            )
        )
    return facts


def _restrictions(
    events: Events, recording: Recording, requests: list[str]
) -> list[RestrictionFact]:
    facts = []
    for request_id in requests:
        for event, data in events.of(request_id, "subject_request.restriction"):
            if recording.id in data.get("recordings", []):
                facts.append(
                    events.cite(
                        RestrictionFact, event, request_id=request_id, status=data.get("status", "")
                    )
                )
    return sorted(facts, key=lambda f: f.event_id)


def _reads(events: Events, recording: Recording, requests: list[str]) -> list[ReadFact]:
    facts = [
        events.cite(ReadFact, event, role=data.get("role"), route=data.get("route", AUDIO_ROUTE))
        for event, data in events.of(recording.id, "recording.accessed")
    ]
    for request_id in requests:
        for event, data in events.of(request_id, "subject_request.exported"):
            if recording.id in data.get("recordings", []):
                route = EXPORT_ROUTE.replace("{request_id}", request_id)
                facts.append(events.cite(ReadFact, event, role=None, route=route))
    return sorted(facts, key=lambda f: f.event_id)


def chain_status(session: Session, audit: AuditLog, cited: set[int]) -> ChainStatus:
    if not cited:
        return ChainStatus(ok=True, checked_up_to=0)
    last = max(cited)
    for report in (
        audit.check_events(session, cited),
        audit.verify_through(session, last),
        audit.check_head(session),
    ):
        if not report.ok:
            return ChainStatus(
                ok=False, checked_up_to=last, first_bad=report.first_bad, problem=report.problem
            )
    return ChainStatus(ok=True, checked_up_to=last)

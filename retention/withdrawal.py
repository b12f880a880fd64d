"""Revoking a grant, and with ``purge_existing`` withdrawing it from existing recordings.

The recordings made under the revoked grant lose the grant's purposes (tags first,
then the catalog); those left with no purpose and no legal hold are purged at once,
with their deletion certificate. ``revoke_consent`` is the one operation both edges
(the HTTP route and ``callrec consent revoke``) run.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlmodel import Session, col, select

from consent import ledger, operations
from consent.calls import CallDecision
from consent.ledger import ConsentEvent
from retention.errors import StateConflict
from retention.holds import holds_covering
from retention.purge import REVOCATION, Purger
from storage import catalog
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingState


def withdraw_revoked_purposes(
    session: Session, *, revocation: ConsentEvent, purger: Purger, actor: str, now: datetime
) -> int:
    """Apply a ``purge_existing`` revocation; return how many recordings were purged."""
    withdrawn = set(json.loads(revocation.purposes))
    decisions = select(CallDecision.id).where(
        CallDecision.client_id == revocation.client_id,
        CallDecision.grant_id == revocation.grant_id,
    )
    recordings = session.exec(
        select(Recording).where(
            col(Recording.decision_id).in_(decisions),
            col(Recording.state).in_([RecordingState.STORED, RecordingState.RESTRICTED]),
        )
    )
    purged = 0
    for recording in recordings:
        purposes = catalog.purposes_of(session, recording.id)
        remaining = {p: e for p, e in purposes.items() if p not in withdrawn}
        held = bool(holds_covering(session, recording))
        if not remaining and not held:
            rule = f"consent {revocation.grant_id} revoked with purge_existing"
            purger.purge_recording(
                session, recording, rule=rule, reason=REVOCATION, actor=actor, now=now
            )
            purged += 1
            continue
        purger.remove_purposes(session, recording, withdrawn, retag=remaining, held=held)
        purger.audit.append(
            session,
            kind="recording.purposes_withdrawn",
            actor=actor,
            now=now,
            client_id=recording.client_id,
            subject=recording.id,
            data={"grant_id": revocation.grant_id, "withdrawn": sorted(withdrawn & set(purposes))},
        )
    return purged


def revoke_consent(
    session: Session,
    *,
    client_id: str,
    grant_id: str,
    request: ledger.RevokeRequest,
    audit: AuditLog,
    purger: Purger | None,
    actor: str,
    now: datetime,
) -> ledger.GrantPublic:
    """Revoke a grant: recording under it stops at once; with ``purge_existing`` its
    purposes leave existing recordings too, in the same transaction (``purger`` reaches
    the bucket; without one such a revocation is refused before anything is written)."""
    if request.purge_existing and purger is None:
        raise StateConflict("purge_existing needs the object store", code="unsupported")
    event = ledger.revoke(
        session,
        client_id=client_id,
        grant_id=grant_id,
        request=request,
        actor=actor,
        audit=audit,
        now=now,
    )
    if purger is not None and request.purge_existing:
        withdraw_revoked_purposes(session, revocation=event, purger=purger, actor=actor, now=now)
    return operations.grant_state(session, client_id=client_id, grant_id=grant_id, now=now)

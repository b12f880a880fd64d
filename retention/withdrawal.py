"""Withdrawing purposes from existing recordings when a client revokes with ``purge_existing``.

The recordings made under the revoked grant lose the grant's purposes (tags first,
then the catalog); those left with no purpose and no legal hold are purged at once,
with their deletion certificate.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlmodel import Session, col, select

from consent.calls import CallDecision
from consent.ledger import ConsentEvent
from retention.holds import holds_covering
from retention.purge import REVOCATION, Purger
from storage import catalog
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

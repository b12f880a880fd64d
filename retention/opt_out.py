"""A caller's opt-out: the call stops, and whatever was already kept of it goes.

The call's state changes first (no audio of it is admitted any more), then each of
its recordings is purged at once with its deletion certificate (reason
``caller_opt_out``), in the same transaction: if S3 will not let an object go, nothing
is changed and the platform can ask again. A recording under a legal hold cannot be
purged; it loses every purpose instead (tags first, then the catalog), so that the
sweep purges it as soon as the last case covering it is released.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from consent import calls
from consent.calls import CallDecision
from retention.holds import holds_covering
from retention.purge import CALLER_OPT_OUT, Purger
from storage import catalog
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingState

__all__ = ["opt_out"]

# What is kept of a call: served, or kept without being served.
_KEPT = (RecordingState.STORED, RecordingState.RESTRICTED)


def opt_out(
    session: Session,
    *,
    client_id: str,
    call_id: str,
    purger: Purger,
    actor: str,
    audit: AuditLog,
    now: datetime,
) -> CallDecision:
    """Opt the caller out of a call and purge what was kept of it (held: withdrawn)."""
    row = calls.change_state(
        session,
        client_id=client_id,
        call_id=call_id,
        action="opt-out",
        actor=actor,
        audit=audit,
        now=now,
    )
    kept = session.exec(
        select(Recording)
        .where(
            Recording.client_id == client_id,
            Recording.call_id == call_id,
            col(Recording.state).in_(_KEPT),
        )
        .order_by(col(Recording.id))
    ).all()
    for recording in kept:
        holds = holds_covering(session, recording)
        if not holds:
            rule = f"the caller opted out of call {call_id} ({row.id})"
            purger.purge_recording(
                session, recording, rule=rule, reason=CALLER_OPT_OUT, actor=actor, now=now
            )
            continue
        purposes = catalog.purposes_of(session, recording.id)
        purger.remove_purposes(session, recording, purposes, retag={}, held=True)
        audit.append(
            session,
            kind="recording.purposes_withdrawn",
            actor=actor,
            now=now,
            client_id=recording.client_id,
            subject=recording.id,
            data={"cause": CALLER_OPT_OUT, "withdrawn": sorted(purposes), "holds": holds},
        )
    return row

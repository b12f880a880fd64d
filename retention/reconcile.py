"""Reconciliation: the catalog against the bucket, reported and never silently fixed.

Orphans are objects the catalog does not know; ghosts are stored recordings whose
object is missing. Both need a person to look: an orphan may be an upload whose
catalog write was lost, a ghost may be a deletion nobody certified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from storage.audit import AuditLog
from storage.capabilities import PROBE_PREFIX
from storage.catalog import Recording, RecordingState
from storage.objectstore import ObjectStore

_STORED = (RecordingState.STORED, RecordingState.RESTRICTED)
# Objects that may exist without a stored row: an upload in flight.
_IN_FLIGHT = (RecordingState.RECORDING,)


@dataclass
class ReconciliationReport:
    checked_at: datetime
    objects: int = 0
    recordings: int = 0
    orphans: list[str] = field(default_factory=list)
    ghosts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.orphans and not self.ghosts


def reconcile(session: Session, store: ObjectStore, *, now: datetime) -> ReconciliationReport:
    """Compare every object key with every catalogued recording."""
    report = ReconciliationReport(checked_at=now)
    keys = {key for key in store.list_keys() if not key.startswith(PROBE_PREFIX)}
    rows = session.exec(
        select(Recording.id, Recording.object_key, Recording.state).where(
            col(Recording.state).in_([*_STORED, *_IN_FLIGHT])
        )
    ).all()
    known = {key for _, key, _ in rows}
    stored = {key: recording_id for recording_id, key, state in rows if state in _STORED}
    report.objects, report.recordings = len(keys), len(stored)
    report.orphans = sorted(keys - known)
    report.ghosts = sorted(stored[key] for key in set(stored) - keys)
    return report


def record(session: Session, report: ReconciliationReport, *, audit: AuditLog, actor: str) -> None:
    """Write the result into the audit log (the caller commits)."""
    audit.append(
        session,
        kind="reconciliation.report",
        actor=actor,
        now=report.checked_at,
        data={
            "objects": report.objects,
            "recordings": report.recordings,
            "orphans": report.orphans[:100],
            "ghosts": report.ghosts[:100],
            "orphan_count": len(report.orphans),
            "ghost_count": len(report.ghosts),
        },
    )

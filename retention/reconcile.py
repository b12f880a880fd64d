"""Reconciliation: the catalog against the bucket, reported and never silently fixed.

Orphans are objects the catalog does not know; ghosts are stored recordings whose
object is missing. Both need a person to look: an orphan may be an upload whose
catalog write was lost, a ghost may be a deletion nobody certified.

Two more kinds of leftovers are reported, and cleaned when asked: multipart uploads
that no capture is finishing (a crash or an outage kept their abort from S3), and
versions of a stored recording's key other than the one the catalog names (a crash
between an upload and its catalog write, then the retry, stores the object twice).
Both only cost storage, hold no readable audio without their recording's key, and
are cleaned only once older than a bound: a younger one may belong to work that
started after the catalog was read. Each cleaning is an audit event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from storage.audit import AuditLog
from storage.bucket_cleanup import UnfinishedUpload, VersionRef
from storage.capabilities import PROBE_PREFIX
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.errors import ObjectStoreError
from storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

# The audit event each run leaves; the retention report shows the last one.
RECONCILIATION_EVENT = "reconciliation.report"
_STORED = (RecordingState.STORED, RecordingState.RESTRICTED)
# Objects that may exist without a stored row: an upload in flight.
_IN_FLIGHT = (RecordingState.RECORDING,)
_LISTED = 100  # items named in the audit event; the counts are always whole


class _Row(NamedTuple):
    id: str
    client_id: str
    object_key: str
    state: RecordingState
    version_id: str | None


@dataclass(frozen=True)
class StrayVersion:
    """A version of a stored recording's key that the catalog does not name."""

    key: str
    version_id: str
    last_modified: datetime
    is_latest: bool
    recording_id: str
    client_id: str


@dataclass
class ReconciliationReport:
    checked_at: datetime
    objects: int = 0
    recordings: int = 0
    orphans: list[str] = field(default_factory=list)
    ghosts: list[str] = field(default_factory=list)
    unfinished_uploads: list[UnfinishedUpload] = field(default_factory=list)
    stray_versions: list[StrayVersion] = field(default_factory=list)
    # Filled in by ``clean``: what it removed, and what it tried and S3 refused.
    aborted: list[UnfinishedUpload] = field(default_factory=list)
    deleted: list[StrayVersion] = field(default_factory=list)
    clean_failures: int = 0

    @property
    def leftovers(self) -> int:
        """Unfinished uploads and stray versions still in the bucket."""
        found = len(self.unfinished_uploads) + len(self.stray_versions)
        return found - len(self.aborted) - len(self.deleted)

    @property
    def ok(self) -> bool:
        return not self.orphans and not self.ghosts and not self.leftovers


def reconcile(session: Session, store: ObjectStore, *, now: datetime) -> ReconciliationReport:
    """Compare every object, version and unfinished upload with the catalog."""
    report = ReconciliationReport(checked_at=now)
    rows = [
        _Row(*row)
        for row in session.execute(
            sa.select(
                col(Recording.id),
                col(Recording.client_id),
                col(Recording.object_key),
                col(Recording.state),
                col(Recording.version_id),
            ).where(col(Recording.state).in_([*_STORED, *_IN_FLIGHT]))
        )
    ]
    known = {row.object_key for row in rows}
    in_flight = {row.object_key for row in rows if row.state in _IN_FLIGHT}
    stored = {row.object_key: row for row in rows if row.state in _STORED}
    keys: set[str] = set()
    for version in store.list_all_versions():
        if version.key.startswith(PROBE_PREFIX):
            continue
        if version.is_latest and not version.is_delete_marker:
            keys.add(version.key)
        row = stored.get(version.key)
        # A delete marker is no stray: removing it would silently "fix" a ghost.
        if row is None or row.version_id is None or version.is_delete_marker:
            continue
        if version.version_id != row.version_id:
            report.stray_versions.append(
                StrayVersion(
                    version.key,
                    version.version_id,
                    version.last_modified,
                    version.is_latest,
                    row.id,
                    row.client_id,
                )
            )
    report.objects, report.recordings = len(keys), len(stored)
    report.orphans = sorted(keys - known)
    report.ghosts = sorted(stored[key].id for key in set(stored) - keys)
    report.unfinished_uploads = [
        upload
        for upload in store.list_uploads()
        if upload.key not in in_flight and not upload.key.startswith(PROBE_PREFIX)
    ]
    return report


def clean(
    session: Session,
    store: ObjectStore,
    report: ReconciliationReport,
    *,
    older_than: timedelta,
    audit: AuditLog,
    actor: str,
) -> None:
    """Abort the unfinished uploads and delete the stray versions older than the bound.

    One audit event per item removed, in the caller's transaction (the caller commits).
    What S3 refuses is logged, counted, and left for the next run. A stray version that
    is the key's current one stays (reported): deleting it would change what the key
    serves and which version its tags sit on, which is for a person to decide.
    """
    if older_than < timedelta(0):
        raise ValueError("the bound of a cleaning cannot be negative")
    cutoff, now = report.checked_at - older_than, report.checked_at
    for upload in report.unfinished_uploads:
        if upload.initiated > cutoff:
            continue
        try:
            store.abort_upload(upload.key, upload.upload_id, quiet=False)
        except ObjectStoreError as exc:
            log.warning("could not abort the unfinished upload of %s: %s", upload.key, exc)
            report.clean_failures += 1
            continue
        report.aborted.append(upload)
        audit.append(
            session,
            kind="reconciliation.upload_aborted",
            actor=actor,
            now=now,
            data={
                "object_key": upload.key,
                "upload_id": upload.upload_id,
                "initiated": upload.initiated.isoformat(),
            },
        )
    stale = [s for s in report.stray_versions if s.last_modified <= cutoff and not s.is_latest]
    try:
        refused = set(
            store.delete_versions([VersionRef(s.key, s.version_id, False) for s in stale])
        )
    except ObjectStoreError as exc:
        log.warning("could not delete stray versions: %s", exc)
        report.clean_failures += len(stale)
        return
    for stray in stale:
        if VersionRef(stray.key, stray.version_id, False) in refused:
            report.clean_failures += 1
            continue
        report.deleted.append(stray)
        audit.append(
            session,
            kind="reconciliation.version_deleted",
            actor=actor,
            now=now,
            client_id=stray.client_id,
            subject=stray.recording_id,
            data={
                "object_key": stray.key,
                "version_id": stray.version_id,
                "last_modified": stray.last_modified.isoformat(),
            },
        )


def record(session: Session, report: ReconciliationReport, *, audit: AuditLog, actor: str) -> None:
    """Write the result into the audit log (the caller commits)."""
    audit.append(
        session,
        kind=RECONCILIATION_EVENT,
        actor=actor,
        now=report.checked_at,
        data={
            "objects": report.objects,
            "recordings": report.recordings,
            "orphans": report.orphans[:_LISTED],
            "ghosts": report.ghosts[:_LISTED],
            "orphan_count": len(report.orphans),
            "ghost_count": len(report.ghosts),
            "unfinished_upload_count": len(report.unfinished_uploads),
            "stray_version_count": len(report.stray_versions),
            "uploads_aborted": len(report.aborted),
            "versions_deleted": len(report.deleted),
            "leftover_count": report.leftovers,
        },
    )


def run(
    engine: Engine,
    store: ObjectStore,
    *,
    audit: AuditLog,
    actor: str,
    now: datetime,
    clean_older_than: timedelta | None = None,
) -> ReconciliationReport:
    """One reconciliation, recorded; leftovers past ``clean_older_than`` cleaned if given."""
    with Session(engine) as session:
        report = reconcile(session, store, now=now)
    with session_scope(engine) as session:
        if clean_older_than is not None:
            clean(session, store, report, older_than=clean_older_than, audit=audit, actor=actor)
        record(session, report, audit=audit, actor=actor)
    return report

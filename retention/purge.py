"""The purge sweep: withdraw expired purposes, delete what must go, prove each deletion.

Per recording, in one transaction that holds a claim on its catalog row (``FOR
UPDATE SKIP LOCKED`` on PostgreSQL, so replicas sweeping at once never take the same
row): tags first, then the catalog; for a purge every version of the object is
deleted, the data key destroyed, the bucket read back, the row marked ``purged`` and
the deletion certificate written to the audit log. A failure part-way rolls the row
back and leaves the object half-deleted at worst; the next sweep finishes the job,
since each step is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from retention.holds import holds_covering
from retention.plan import RetentionAction, RetentionState, plan
from storage import catalog
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingPurpose, RecordingState
from storage.db import session_scope
from storage.keyring import Keyring
from storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

_LIVE = (RecordingState.STORED, RecordingState.RESTRICTED)


@dataclass
class SweepReport:
    """What one sweep did (or, with ``dry_run``, would do)."""

    as_of: datetime
    dry_run: bool
    purposes_expired: int = 0
    purged: int = 0
    held: int = 0
    failed: list[str] = field(default_factory=list)


def due_recordings(session: Session, *, as_of: datetime, limit: int | None = None) -> list[str]:
    """Ids of stored recordings with a purpose expired at ``as_of``, or none left at all."""
    expired = (
        select(RecordingPurpose.recording_id).where(RecordingPurpose.expires_at <= as_of).distinct()
    )
    without_purpose = select(Recording.id).where(
        Recording.state.in_(_LIVE),  # type: ignore[attr-defined]
        ~sa.exists().where(RecordingPurpose.recording_id == Recording.id),  # type: ignore[arg-type]
    )
    query = sa.union(
        select(Recording.id).where(
            Recording.state.in_(_LIVE),  # type: ignore[attr-defined]
            Recording.id.in_(expired),  # type: ignore[attr-defined]
        ),
        without_purpose,
    ).order_by("id")
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).scalars())


class Purger:
    """Runs purge sweeps against the catalog, the bucket and the keyring."""

    def __init__(
        self, *, engine: Engine, store: ObjectStore, keyring: Keyring, audit: AuditLog
    ) -> None:
        self._engine = engine
        self.store = store
        self._keyring = keyring
        self.audit = audit

    def sweep(
        self,
        *,
        as_of: datetime,
        now: datetime,
        dry_run: bool = False,
        actor: str = "retention",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> SweepReport:
        """Apply every action due at ``as_of``; ``now`` stamps the audit events."""
        report = SweepReport(as_of=as_of, dry_run=dry_run)
        with Session(self._engine) as session:
            due = due_recordings(session, as_of=as_of)
        for done, recording_id in enumerate(due, start=1):
            try:
                self._sweep_one(recording_id, as_of, now, dry_run, actor, report)
            except Exception as exc:  # one bad object must not stop the sweep
                log.warning("purge of %s failed, retried next sweep: %s", recording_id, exc)
                report.failed.append(recording_id)
            if on_progress:
                on_progress(done, len(due))
        return report

    def _sweep_one(
        self,
        recording_id: str,
        as_of: datetime,
        now: datetime,
        dry_run: bool,
        actor: str,
        report: SweepReport,
    ) -> None:
        with session_scope(self._engine) as session:
            recording = _claim(session, recording_id)
            if recording is None or recording.state not in _LIVE:
                return  # another replica has it, or it is done
            purposes = catalog.purposes_of(session, recording_id)
            held = bool(holds_covering(session, recording))
            state = RetentionState(recording_id, purposes, held=held)
            actions = plan([state], as_of=as_of)
            if not actions:
                return
            action = actions[0]
            report.purposes_expired += len(action.expire)
            report.purged += action.purge
            report.held += not action.remaining and not action.purge
            if dry_run:
                session.rollback()
                return
            if action.expire:
                self._expire(session, recording, action, purposes, held, actor, now)
            if action.purge:
                rule = f"{action.rule} (as of {as_of:%Y-%m-%d %H:%M} UTC)"
                self.purge_recording(
                    session,
                    recording,
                    rule=rule,
                    actor=actor,
                    now=now,
                    last_expiry=max(purposes.values(), default=None),
                )

    def _expire(
        self,
        session: Session,
        recording: Recording,
        action: RetentionAction,
        purposes: dict[str, datetime],
        held: bool,
        actor: str,
        now: datetime,
    ) -> None:
        remaining = {p: e for p, e in purposes.items() if p in action.remaining}
        # A purged object needs no tags: the purge follows in this same transaction.
        retag = None if action.purge else remaining
        self.remove_purposes(session, recording, action.expire, retag=retag, held=held)
        self.audit.append(
            session,
            kind="recording.purposes_expired",
            actor=actor,
            now=now,
            client_id=recording.client_id,
            subject=recording.id,
            data={
                "expired": {p: f"{purposes[p]:%Y-%m-%d}" for p in sorted(action.expire)},
                "remaining": sorted(action.remaining),
            },
        )

    def remove_purposes(
        self,
        session: Session,
        recording: Recording,
        removed: Collection[str],
        *,
        retag: Mapping[str, datetime] | None,
        held: bool,
    ) -> None:
        """Drop purposes from a recording: tags first (to ``retag``), then the catalog."""
        if retag is not None:
            tags = catalog.object_tags(recording.client_id, retag, legal_hold=held)
            self.store.put_tags(recording.object_key, tags)
        session.execute(
            sa.delete(RecordingPurpose).where(
                col(RecordingPurpose.recording_id) == recording.id,
                col(RecordingPurpose.purpose).in_(removed),
            )
        )

    def purge_recording(
        self,
        session: Session,
        recording: Recording,
        *,
        rule: str,
        actor: str,
        now: datetime,
        last_expiry: datetime | None = None,
    ) -> None:
        """Delete every version, destroy the key, check, mark purged, certify (no commit)."""
        deletion = self.store.delete_all_versions(recording.object_key)
        key_was_live = self._keyring.destroy_recording_key(
            session, recording_id=recording.id, now=now
        )
        if not deletion.gone:
            raise RuntimeError(f"{recording.object_key} still in the bucket after delete")
        catalog.transition(recording, RecordingState.PURGED, now=now)
        recording.purged_at = now
        session.add(recording)
        self.audit.append(
            session,
            kind="recording.purged",
            actor=actor,
            now=now,
            client_id=recording.client_id,
            subject=recording.id,
            data={
                "certificate": "deletion",
                "object_key": recording.object_key,
                "sha256": recording.sha256,
                "size": recording.size,
                "rule": rule,
                "last_expiry": last_expiry.isoformat() if last_expiry else None,
                "versions_removed": deletion.versions_removed,
                "key_destroyed": True,
                "key_was_live": key_was_live,
                "check": "object absent (no version, no delete marker)",
            },
        )


def _claim(session: Session, recording_id: str) -> Recording | None:
    query = select(Recording).where(Recording.id == recording_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.exec(query).first()

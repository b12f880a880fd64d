"""The purge sweep: withdraw expired purposes, delete what must go, prove each deletion.

Due recordings are taken in batches, each in one transaction that holds a claim on
its catalog rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas sweeping at
once never take the same row). A purpose that expires loses its tag first, then its
catalog row. A recording with no purpose left and no hold is purged: every version
of its object deleted (one DeleteObjects per batch), the bucket read back, its data
key destroyed, its row marked ``purged`` and its deletion certificate written to the
audit log. A failure part-way rolls the batch's rows back and leaves objects
half-deleted at worst; the next sweep finishes the job, since each step is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from retention.holds import held_among
from retention.plan import RetentionAction, RetentionState, plan
from storage import catalog
from storage.audit import AuditEntry, AuditLog
from storage.backend import StorageBackend
from storage.catalog import Recording, RecordingPurpose, RecordingState
from storage.db import session_scope
from storage.errors import ObjectStoreError
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


# Why a recording was purged, as its certificate says (``reason``); the report groups by it.
RETENTION, ERASURE, REVOCATION, CALLER_OPT_OUT = (
    "retention",
    "erasure",
    "revocation",
    "caller_opt_out",
)


@dataclass(frozen=True)
class PurgeOrder:
    """One recording to purge, and why (for its certificate)."""

    recording: Recording
    rule: str
    purposes: Mapping[str, datetime] = field(default_factory=dict)  # what it had left
    reason: str = RETENTION  # the cause, a stable code; ``rule`` says it in words

    @property
    def last_expiry(self) -> datetime | None:
        return max(self.purposes.values(), default=None)


class Purger:
    """Runs purge sweeps against the catalog, the bucket and the keyring."""

    def __init__(
        self,
        *,
        engine: Engine,
        store: ObjectStore,
        keyring: Keyring,
        audit: AuditLog,
        batch_size: int = 500,
    ) -> None:
        self._engine = engine
        self.store = store
        self._keyring = keyring
        self.audit = audit
        self._batch_size = batch_size

    @classmethod
    def for_backend(cls, backend: StorageBackend) -> Purger:
        return cls(
            engine=backend.engine,
            store=backend.store,
            keyring=backend.keyring,
            audit=backend.audit,
            batch_size=backend.settings.purge_batch_size,
        )

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
        for start in range(0, len(due), self._batch_size):
            batch = due[start : start + self._batch_size]
            try:
                self._sweep_batch(batch, as_of, now, dry_run, actor, report)
            except Exception as exc:  # one bad batch must not stop the sweep
                log.warning(
                    "purge of %d recordings failed, retried next sweep: %s", len(batch), exc
                )
                report.failed += batch
            if on_progress:
                on_progress(start + len(batch), len(due))
        return report

    def _sweep_batch(
        self,
        recording_ids: list[str],
        as_of: datetime,
        now: datetime,
        dry_run: bool,
        actor: str,
        report: SweepReport,
    ) -> None:
        counts = SweepReport(as_of=as_of, dry_run=dry_run)  # this batch's, kept on success
        with session_scope(self._engine) as session:
            # Rows another replica holds are skipped; rows already done are left.
            recordings = {r.id: r for r in _claim(session, recording_ids) if r.state in _LIVE}
            purposes = catalog.purposes_of_each(session, recordings)
            held = held_among(session, recordings.values())
            states = [RetentionState(rid, purposes[rid], held=rid in held) for rid in recordings]
            orders = []
            for action in plan(states, as_of=as_of):
                recording = recordings[action.recording_id]
                counts.purposes_expired += len(action.expire)
                counts.purged += action.purge
                counts.held += not action.remaining and not action.purge
                if dry_run:
                    continue
                if action.purge:
                    rule = f"{action.rule} (as of {as_of:%Y-%m-%d %H:%M} UTC)"
                    orders.append(PurgeOrder(recording, rule, purposes[recording.id]))
                    continue
                try:
                    self._expire(
                        session,
                        recording,
                        action,
                        purposes[recording.id],
                        recording.id in held,
                        now,
                        actor,
                    )
                except ObjectStoreError as exc:  # its tags are as they were: retried next sweep
                    log.warning("purposes of %s not withdrawn: %s", recording.id, exc)
                    counts.failed.append(recording.id)
                    counts.purposes_expired -= len(action.expire)
            if dry_run:
                session.rollback()
            else:
                not_gone = self.purge_recordings(session, orders, actor=actor, now=now)
                counts.purged -= len(not_gone)
                counts.failed += not_gone
        report.purposes_expired += counts.purposes_expired
        report.purged += counts.purged
        report.held += counts.held
        report.failed += counts.failed

    def _expire(
        self,
        session: Session,
        recording: Recording,
        action: RetentionAction,
        purposes: dict[str, datetime],
        held: bool,
        now: datetime,
        actor: str,
    ) -> None:
        remaining = {p: e for p, e in purposes.items() if p in action.remaining}
        self.remove_purposes(session, recording, action.expire, retag=remaining, held=held)
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
        retag: Mapping[str, datetime],
        held: bool,
    ) -> None:
        """Drop purposes from a recording: tags first (to ``retag``), then the catalog."""
        self.audit.require_head(session)  # before S3 changes what could not be audited
        tags = catalog.object_tags(recording.client_id, retag, legal_hold=held)
        self.store.put_tags(recording.object_key, tags)
        catalog.remove_purposes(session, [recording.id], removed)

    def purge_recording(
        self,
        session: Session,
        recording: Recording,
        *,
        rule: str,
        reason: str,
        actor: str,
        now: datetime,
    ) -> None:
        """Purge one recording now, before its expiry (``reason`` says why), in the
        caller's transaction; raise if S3 keeps it."""
        purposes = catalog.purposes_of(session, recording.id)
        if self.purge_recordings(
            session, [PurgeOrder(recording, rule, purposes, reason)], actor=actor, now=now
        ):
            raise ObjectStoreError(f"{recording.object_key} still in the bucket after delete")

    def purge_recordings(
        self, session: Session, orders: Sequence[PurgeOrder], *, actor: str, now: datetime
    ) -> list[str]:
        """Purge these recordings in the caller's transaction (no commit).

        Every version of each object is deleted and the keys read back; only for the
        objects that are gone is the data key destroyed, the catalog updated and the
        certificate written. Returns the ids of the recordings S3 would not let go.
        """
        if not orders:
            return []
        # No deletion without its certificate: a broken chain stops the purge before S3.
        self.audit.require_head(session)
        known = {
            o.recording.object_key: [o.recording.version_id] if o.recording.version_id else []
            for o in orders
        }
        deletions = self.store.purge(known)
        gone = [o for o in orders if deletions[o.recording.object_key].gone]
        ids = {o.recording.id for o in gone}
        key_was_live = self._keyring.destroy_recording_keys(session, ids, now=now)
        catalog.remove_purposes(session, ids)
        catalog.mark_purged(session, ids, now=now)
        certificates = []
        for order in gone:
            recording, last_expiry = order.recording, order.last_expiry
            certificates.append(
                AuditEntry(
                    "recording.purged",
                    actor,
                    client_id=recording.client_id,
                    subject=recording.id,
                    data={
                        "certificate": "deletion",
                        "object_key": recording.object_key,
                        "sha256": recording.sha256,
                        "size": recording.size,
                        "rule": order.rule,
                        "reason": order.reason,
                        "purposes": {p: f"{e:%Y-%m-%d}" for p, e in sorted(order.purposes.items())},
                        "last_expiry": last_expiry.isoformat() if last_expiry else None,
                        "versions_removed": deletions[recording.object_key].versions_removed,
                        "key_destroyed": True,
                        "key_was_live": recording.id in key_was_live,
                        "check": "object absent (no version, no delete marker)",
                    },
                )
            )
        self.audit.append_many(session, certificates, now=now)
        return [o.recording.id for o in orders if o.recording.id not in ids]


def _claim(session: Session, recording_ids: Collection[str]) -> Sequence[Recording]:
    query = select(Recording).where(col(Recording.id).in_(recording_ids)).order_by(Recording.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.exec(query).all()

"""Background jobs of ``callrec serve``: the purge sweep, the spool retry, reconciliation.

Every replica runs them; the purge shares its work through row claims (see
retention.purge) and each replica retries only the spool on its own disk. Each
replica's reconciliation reads the same catalog and bucket; the report shows the
last one recorded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from retention import reconcile as reconciliation
from retention.purge import Purger
from storage.backend import StorageBackend

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def start_jobs(backend: StorageBackend) -> BackgroundScheduler:
    """Start the jobs at the intervals the settings give; the caller shuts them down."""
    settings = backend.settings
    purger = Purger.for_backend(backend)

    def purge() -> None:
        now = _now()
        report = purger.sweep(as_of=now, now=now)
        if report.purposes_expired or report.purged or report.failed:
            log.info(
                "purge sweep: %d purposes expired, %d recordings purged, %d failed",
                report.purposes_expired,
                report.purged,
                len(report.failed),
            )

    def retry_spool() -> None:
        uploaded = backend.vault.recover(now=_now())
        if uploaded:
            log.info("uploaded %d recordings waiting in the spool", uploaded)

    clean_after = settings.reconcile_clean_after_s
    clean_older_than = timedelta(seconds=clean_after) if clean_after else None

    def reconcile() -> None:
        report = reconciliation.run(
            backend.engine,
            backend.store,
            audit=backend.audit,
            actor="retention",
            now=_now(),
            clean_older_than=clean_older_than,
        )
        if report.aborted or report.deleted:
            log.info(
                "reconciliation: aborted %d unfinished uploads, deleted %d stray versions",
                len(report.aborted),
                len(report.deleted),
            )
        if not report.ok:  # orphans and ghosts are reported, never fixed: a person has to look
            log.warning(
                "reconciliation: %d orphan objects, %d ghost recordings, %d leftovers in the "
                "bucket (see the report)",
                len(report.orphans),
                len(report.ghosts),
                report.leftovers,
            )

    scheduler = BackgroundScheduler(
        timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1}
    )
    scheduler.add_job(purge, "interval", seconds=settings.purge_interval_s, id="purge")
    scheduler.add_job(
        retry_spool, "interval", seconds=settings.spool_retry_interval_s, id="spool-retry"
    )
    scheduler.add_job(reconcile, "interval", seconds=settings.reconcile_interval_s, id="reconcile")
    scheduler.start()
    # What waited in the spool goes up as soon as the embedded S3 is back.
    backend.on_s3_restarted(lambda: scheduler.modify_job("spool-retry", next_run_time=_now()))
    return scheduler

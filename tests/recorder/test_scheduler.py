from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from io import BytesIO

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from sqlmodel import Session, select

from recorder.scheduler import start_jobs
from retention.report_run import retention_report
from storage.audit import AuditEvent
from storage.backend import StorageBackend
from storage.catalog import RecordingState
from storage.settings import Settings
from storage.vault import RecordingDraft


def test_serve_runs_the_purge_and_the_spool_retry(backend: StorageBackend) -> None:
    jobs = start_jobs(backend)
    try:
        purge, retry = jobs.get_job("purge"), jobs.get_job("spool-retry")
        assert purge.trigger.interval == timedelta(seconds=backend.settings.purge_interval_s)
        assert retry.trigger.interval == timedelta(seconds=backend.settings.spool_retry_interval_s)
        purge.func()  # an empty catalog: nothing to do, and no error
        retry.func()
    finally:
        jobs.shutdown(wait=True)


class _Runs:
    """Counts the spool retry job's runs; a failed run fails the test."""

    def __init__(self) -> None:
        self.count = 0
        self.errors: list[BaseException] = []
        self._changed = threading.Condition()

    def __call__(self, event: JobExecutionEvent) -> None:
        if event.job_id != "spool-retry":
            return
        with self._changed:
            self.count += 1
            if event.exception is not None:
                self.errors.append(event.exception)
            self._changed.notify_all()

    def wait_beyond(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.count > count, timeout=60)


def test_an_upload_across_several_spool_retry_runs_is_stored(
    backend: StorageBackend, now: datetime
) -> None:
    minimum = Settings.model_fields["spool_retry_interval_s"].metadata[0].ge
    backend.settings = backend.settings.model_copy(update={"spool_retry_interval_s": minimum})
    jobs = start_jobs(backend)
    runs = _Runs()
    jobs.add_listener(runs, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    audio = os.urandom(3 * backend.settings.s3_part_size // 2)
    draft = RecordingDraft(
        client_id="acme",
        call_id="long-upload",
        channel="upload",
        codec="opus",
        container="ogg",
        purposes={"research": now + timedelta(days=30)},
    )
    try:
        writer = backend.vault.begin(draft, now=now)
        step = len(audio) // 4
        for start in range(0, len(audio), step):
            writer.write(audio[start : start + step])
            seen = runs.count
            jobs.modify_job("spool-retry", next_run_time=datetime.now(UTC))  # run it now
            runs.wait_beyond(seen)
        recording = backend.vault.finish(writer, now=now)
    finally:
        jobs.shutdown(wait=True)
    assert runs.count >= 4 and runs.errors == []
    assert recording.state == RecordingState.STORED
    plaintext = BytesIO()
    backend.vault.read(recording, plaintext)
    assert plaintext.getvalue() == audio


def test_the_scheduled_reconciliation_is_the_reports_last_run(backend: StorageBackend) -> None:
    backend.store.put_bytes("acme/2026/11/28/rec_nobody.ogg", b"x", tags={"client": "acme"})
    jobs = start_jobs(backend)
    try:
        job = jobs.get_job("reconcile")
        assert job.trigger.interval == timedelta(seconds=backend.settings.reconcile_interval_s)
        assert backend.settings.reconcile_interval_s == 86400  # the documented default
        job.func()
    finally:
        jobs.shutdown(wait=True)
    with Session(backend.engine) as session:
        # The report is asked a day later: the last run is found, not only a fresh one.
        later = datetime.now(UTC) + timedelta(days=1)
        report = retention_report(session, audit=backend.audit, now=later)
    recon = report.reconciliation
    assert (recon.run, recon.ok, recon.orphans, recon.ghosts) == (True, False, 1, 0)
    assert recon.orphan_keys == ["acme/2026/11/28/rec_nobody.ogg"]
    assert recon.checked_at is not None and recon.checked_at < later
    assert report.checks.reconciliation is False


def test_the_scheduled_reconciliation_cleans_leftovers_past_its_bound(
    backend: StorageBackend,
) -> None:
    assert backend.settings.reconcile_clean_after_s == 86400  # the documented default
    key = "acme/2026/11/28/rec_crashed.ogg"
    backend.store.create_upload(key, tags={})  # an abort that never reached S3
    jobs = start_jobs(backend)
    try:
        jobs.get_job("reconcile").func()  # a day is far off: only reported
        assert [u.key for u in backend.store.list_uploads()] == [key]
    finally:
        jobs.shutdown(wait=True)

    backend.settings = backend.settings.model_copy(update={"reconcile_clean_after_s": 1})
    jobs = start_jobs(backend)
    try:
        job = jobs.get_job("reconcile")
        for _ in range(300):  # polled: the upload passes the bound within a second or two
            job.func()
            if not list(backend.store.list_uploads()):
                break
            threading.Event().wait(0.1)
    finally:
        jobs.shutdown(wait=True)
    assert list(backend.store.list_uploads()) == []
    with Session(backend.engine) as session:
        aborted = session.exec(
            select(AuditEvent).where(AuditEvent.kind == "reconciliation.upload_aborted")
        ).all()
    assert [json.loads(event.data)["object_key"] for event in aborted] == [key]

from __future__ import annotations

from datetime import timedelta

from recorder.scheduler import start_jobs
from storage.backend import StorageBackend


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

"""A gateway's app and its backend are freed once dropped: nothing global keeps them,
and the garbage that exists when an app starts is not frozen with it.

The test suite builds an app per test; each kept would hold its engine, S3 client and
caches (the suite once ended with gigabytes of them).
"""

from __future__ import annotations

import gc
import weakref
from datetime import datetime
from pathlib import Path

from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.conftest import ADMIN, Clock, backend_settings, make_tenant


def _serve_once(s3_server: EmbeddedS3, data_dir: Path, now: datetime) -> list[weakref.ref[object]]:
    backend = StorageBackend(
        backend_settings(s3_server, f"sqlite:///{data_dir / 'callrec.db'}", data_dir)
    )
    backend.start(now=now)
    try:
        with TestClient(create_app(backend, clock=Clock(now))) as client:
            for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
                assert client.get(path).status_code == 200, path
            make_tenant(client)  # committed audit events, seen by the app's watchers
            assert client.get("/v1/clients", headers=ADMIN).status_code == 200
    finally:
        backend.stop()
    return [weakref.ref(backend), weakref.ref(backend.engine), weakref.ref(backend.store)]


def test_a_stopped_app_and_its_backend_are_freed(
    s3_server: EmbeddedS3, tmp_path: Path, now: datetime
) -> None:
    kept = _serve_once(s3_server, tmp_path, now)
    gc.collect()
    assert [ref() for ref in kept] == [None, None, None]


class _Cycle:
    """Garbage only the cyclic collector frees."""

    def __init__(self) -> None:
        self.me = self


def test_garbage_is_not_frozen_with_the_app(
    s3_server: EmbeddedS3, tmp_path: Path, now: datetime
) -> None:
    backend = StorageBackend(
        backend_settings(s3_server, f"sqlite:///{tmp_path / 'callrec.db'}", tmp_path)
    )
    backend.start(now=now)
    gc.disable()  # only the app's start may collect it
    try:
        garbage = _Cycle()
        freed = weakref.ref(garbage)
        del garbage
        with TestClient(create_app(backend, clock=Clock(now))):
            assert freed() is None
    finally:
        gc.enable()
        backend.stop()

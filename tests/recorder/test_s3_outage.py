"""The embedded SeaweedFS dies under a running gateway: readiness says so, it comes back."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil
import pytest
from fastapi.testclient import TestClient

from recorder.app import create_app
from recorder.scheduler import start_jobs
from storage.backend import StorageBackend
from storage.settings import Settings
from tests.recorder.conftest import ADMIN_KEY, call_body, make_tenant, tone_wav
from tests.recorder.test_metrics import metric

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (value := predicate()) is None:
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)
    return value


@pytest.fixture
def serving_backend(tmp_path: Path, now: datetime) -> Iterator[StorageBackend]:
    """A gateway's backend on its own embedded SeaweedFS, supervised."""
    settings = Settings(data_dir=tmp_path / "var", admin_key=ADMIN_KEY, sip_port=0)
    # Restart delays 1, 2, 2 … s: the test waits for the try after it frees the port.
    backend = StorageBackend(settings, serving=True, restart_delays=(1.0, 2.0))
    backend.start(now=now)
    yield backend
    backend.stop()


def _upload(client: TestClient, tenant: Any, call_id: str, wav: Path) -> Any:
    decision = client.post("/v1/calls", json=call_body(call_id), headers=tenant.integrator)
    assert decision.json()["reason"] == "recorded", decision.text
    return client.put(
        decision.json()["upload_url"],
        content=wav.read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )


def _hold_port(port: int) -> socket.socket | None:
    """Listen on the port once the dead child freed it (its connections may linger)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


def test_weed_killed_then_restarted_while_uploads_wait_in_the_spool(
    serving_backend: StorageBackend,
    tmp_path: Path,
    now: datetime,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.INFO)
    backend = serving_backend
    server, supervisor = backend.embedded_s3, backend.s3_supervisor
    assert server is not None and supervisor is not None
    wav = tone_wav(tmp_path / "call.wav", seconds=1.0)
    jobs = start_jobs(backend)
    request.addfinalizer(lambda: jobs.shutdown(wait=True))
    with TestClient(create_app(backend, clock=lambda: now)) as client:
        tenant = make_tenant(client)
        before = _upload(client, tenant, "call-before", wav)
        assert before.status_code == 201, before.text
        endpoint, log = server.endpoint_url, server.log_path
        pid = server.pid
        assert pid is not None

        # One of weed's own ports (not S3's: uploads must be refused, not hang), kept
        # taken so that the restarts fail until the test lets them go.
        sockets = psutil.Process(pid).net_connections(kind="inet")
        listening = {c.laddr.port for c in sockets if c.status == psutil.CONN_LISTEN}
        port = min(listening - {urlsplit(endpoint).port})
        os.kill(pid, signal.SIGKILL)
        blocker = wait_for(lambda: _hold_port(port), 10, f"port {port} freed")
        try:

            def not_ready(reason: str) -> dict[str, Any] | None:
                response = client.get("/readyz")
                body: dict[str, Any] = response.json()
                return body if response.status_code == 503 and reason in body["detail"] else None

            down = wait_for(lambda: not_ready("exited with code -9"), 10, "readyz says why")
            assert down["error"] == "not_ready"
            failed = wait_for(lambda: not_ready("restart 1 failed"), 10, "a failed restart")
            assert "is not free" in failed["detail"]

            during = _upload(client, tenant, "call-during", wav)
            assert during.status_code == 202, during.text
            assert during.json()["state"] == "recording"
            metrics = client.get("/metrics").text
            assert metric(metrics, "callrec_spool_depth") == 1
            assert metric(metrics, "callrec_embedded_s3_up") == 0
            assert metric(metrics, 'callrec_s3_errors_total{code="EndpointConnectionError"}') >= 1
        finally:
            blocker.close()

        def ready() -> bool | None:
            return client.get("/readyz").status_code == 200 or None

        wait_for(ready, 60, "ready again after the restart")
        assert supervisor.restarts == 1
        assert server.endpoint_url == endpoint
        assert server.pid not in (None, pid)
        logged = [(r.levelname, r.getMessage()) for r in caplog.records if "s3" in r.name]
        assert (
            "ERROR",
            f"embedded S3 exited with code -9; restarting in 1 s (log {log})",
        ) in logged
        assert any(level == "WARNING" and "restarted" in text for level, text in logged)

        # The spool retry job runs as soon as S3 is back (its interval is a minute).
        def stored() -> bool | None:
            url = f"/v1/recordings/{during.json()['id']}"
            answer = client.get(url, headers=tenant.client_admin).json()
            return answer["state"] == "stored" or None

        wait_for(stored, 30, "the spooled recording stored")
        metrics = client.get("/metrics").text
        assert metric(metrics, "callrec_embedded_s3_restarts_total") == 1
        assert metric(metrics, "callrec_embedded_s3_up") == 1
        assert metric(metrics, "callrec_upload_retries_total") == 1
        assert metric(metrics, "callrec_spool_depth") == 0
        assert metric(metrics, "callrec_recordings_stored_total") == 2
        # The gateway's log has one line per domain event: ids and codes, no phone number.
        events = [r.getMessage() for r in caplog.records if r.name == "storage.audit_feed"]
        assert "recording.stored seq=" in "\n".join(events)
        assert [e for e in events if during.json()["id"] in e and "recording.stored" in e]
        assert not [r for r in caplog.records if "+2126" in r.getMessage()]
        # What was stored before the kill survived it.
        audio = client.get(
            f"/v1/recordings/{before.json()['id']}/audio", headers=tenant.client_admin
        )
        assert audio.status_code == 200

"""/metrics carries the domain; a client that leaves mid-upload is one line in the log."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from recorder.app import create_app
from retention.purge import Purger
from storage.backend import StorageBackend
from storage.vault import RecordingDraft
from tests.recorder.conftest import Clock, call_body, make_tenant, tone_wav


def metric(body: str, name: str) -> float:
    """The value of one sample (``name`` with its labels, as Prometheus prints it)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_metrics_count_decisions_recordings_purges_and_s3_errors(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    recorded = client.post("/v1/calls", json=call_body("call-1"), headers=tenant.integrator)
    assert recorded.json()["reason"] == "recorded"
    refused = client.post(
        "/v1/calls", json=call_body("call-2", purposes=["optimization"]), headers=tenant.integrator
    )
    assert refused.json()["reason"] == "purpose_not_granted"
    wav = tone_wav(tmp_path / "call.wav", seconds=0.5).read_bytes()
    upload = client.put(
        "/v1/calls/call-1/recording",
        content=wav,
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert upload.status_code == 201, upload.text
    discarded = backend.vault.begin(
        RecordingDraft(
            client_id="acme", call_id="call-3", channel="upload", codec="opus", container="ogg"
        ),
        now=clock.now,
    )
    backend.vault.discard(discarded, reason="capture failed", now=clock.now)
    with pytest.raises(Exception, match="InvalidTag"):
        backend.store.put_tags("nothing", {"k" * 200: "v"})

    body = client.get("/metrics").text
    assert metric(body, 'callrec_decisions_total{reason="recorded"}') == 1
    assert metric(body, 'callrec_decisions_total{reason="purpose_not_granted"}') == 1
    assert metric(body, "callrec_recordings_stored_total") == 1
    assert metric(body, "callrec_recordings_failed_total") == 1
    assert metric(body, 'callrec_s3_errors_total{code="InvalidTag"}') == 1
    assert metric(body, "callrec_spool_depth") == 0
    assert metric(body, "callrec_spool_oldest_age_seconds") == 0
    assert metric(body, "callrec_upload_retries_total") == 0
    assert metric(body, "callrec_embedded_s3_restarts_total") == 0
    assert "callrec_purges_total{" not in body

    # The last purpose (research, a year) expired an hour and a half before the sweep.
    expiry = datetime.fromisoformat(upload.json()["purposes"]["research"])
    later = expiry + timedelta(hours=1, minutes=30)
    swept = Purger.for_backend(backend).sweep(as_of=later, now=later)
    assert swept.purged == 1
    body = client.get("/metrics").text
    assert metric(body, 'callrec_purges_total{reason="retention"}') == 1
    assert metric(body, "callrec_purge_lag_seconds_count") == 1
    assert metric(body, "callrec_purge_lag_seconds_sum") == 5400
    assert metric(body, 'callrec_purge_lag_seconds_bucket{le="7200.0"}') == 1
    assert metric(body, 'callrec_purge_lag_seconds_bucket{le="3600.0"}') == 0


@pytest.fixture
def live_server(backend: StorageBackend) -> Iterator[tuple[int, uvicorn.Server]]:
    """The app behind a real uvicorn on a free port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(backend), log_level="info", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield sock.getsockname()[1], server
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_a_client_that_leaves_mid_upload_is_one_info_line(
    client: TestClient,
    live_server: tuple[int, uvicorn.Server],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, _ = live_server
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body("call-1"), headers=tenant.integrator)
    wav = tone_wav(tmp_path / "call.wav", seconds=2.0).read_bytes()
    caplog.set_level(logging.INFO)
    head = (
        "PUT /v1/calls/call-1/recording HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: {tenant.integrator['Authorization']}\r\n"
        "Content-Type: audio/wav\r\n"
        f"Content-Length: {len(wav)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(head.encode() + wav[: len(wav) // 2])
    deadline = time.monotonic() + 10
    while not [r for r in caplog.records if "disconnected" in r.getMessage()]:
        assert time.monotonic() < deadline, "no line about the disconnect"
        time.sleep(0.01)

    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name != "httpx2"]
    assert lines == [("INFO", "client disconnected during PUT /v1/calls/call-1/recording")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    # The call may still get its recording: nothing was kept of the half body.
    again = client.put(
        "/v1/calls/call-1/recording",
        content=wav,
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert again.status_code == 201, again.text

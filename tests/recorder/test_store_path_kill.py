"""kill -9 of a gateway at each step of an upload's store path, then a restart.

The gateway runs as a real ``callrec serve`` process whose S3 traffic goes through a
gate (``s3_gate``) that holds the request of the step under test; the test waits
until that state is observable (a sealed spool, parts in S3, the object complete,
the catalog row stored) and kills the process there. After a restart the recording
is stored exactly once, and after ``callrec reconcile --clean-older-than 0s`` the
bucket holds no stray version and no unfinished upload.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httpx2 as httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.audit import AuditEvent
from storage.catalog import Recording, RecordingState
from storage.db import create_db_engine
from storage.embedded_s3 import EmbeddedS3
from tests.conftest import drop_bucket, unique_bucket
from tests.recorder.conftest import ADMIN, ADMIN_KEY, call_body, make_tenant, tone_wav
from tests.recorder.s3_gate import Match, S3Gate

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from mypy_boto3_s3 import S3Client

PART = 5 * 1024 * 1024  # S3's smallest part: the fewest seconds of audio for two parts
BOUND = 120.0  # seconds any wait below may take before the test gives up
POLL = threading.Event()  # never set: its wait() is a pause between two polls


def _poll(check: object, what: str) -> None:
    assert callable(check)
    for _ in range(int(BOUND / 0.05)):
        if check():
            return
        POLL.wait(0.05)
    raise AssertionError(f"gave up waiting for {what}")


@dataclass
class Gateway:
    """A ``callrec serve`` process and what it needs to be started again."""

    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "recorder", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _poll(ready, "the gateway to be ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(BOUND)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(BOUND)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recorder", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BOUND,
            check=False,
        )


@pytest.fixture
def bucket(s3_admin: S3Client) -> Iterator[str]:
    name = unique_bucket()
    yield name
    drop_bucket(s3_admin, name)


@pytest.fixture
def gate(s3_server: EmbeddedS3) -> Iterator[S3Gate]:
    gate = S3Gate(s3_server.endpoint_url)
    yield gate
    gate.close()


@pytest.fixture
def gateway(s3_server: EmbeddedS3, gate: S3Gate, bucket: str, tmp_path: Path) -> Iterator[Gateway]:
    cfg = s3_server.config(bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    port = _free_port()
    env |= {
        "CALLREC_DATA_DIR": str(tmp_path / "var"),
        "CALLREC_S3_ENDPOINT_URL": gate.url,
        "CALLREC_S3_ACCESS_KEY_ID": cfg.access_key_id,
        "CALLREC_S3_SECRET_ACCESS_KEY": cfg.secret_access_key,
        "CALLREC_S3_BUCKET": bucket,
        "CALLREC_MASTER_KEY": secrets.token_urlsafe(32)[:43] + "=",
        "CALLREC_ADMIN_KEY": ADMIN_KEY,
        "CALLREC_HTTP_PORT": str(port),
        "CALLREC_SIP_PORT": "0",
        "CALLREC_LOG_LEVEL": "WARNING",
        "CALLREC_S3_PART_SIZE": str(PART),
    }
    gateway = Gateway(env, port, tmp_path / "serve.log")
    gateway.start()
    yield gateway
    gateway.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _noise_wav(path: Path, seconds: int) -> Path:
    """Noise encodes at the full bitrate: enough seconds make a multipart upload."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(os.urandom(seconds * 8000 * 2 * 2))
    return path


def _is_object_put(bucket: str) -> Match:
    def match(method: str, target: str) -> bool:
        path, _, query = target.partition("?")
        return method == "PUT" and path.startswith(f"/{bucket}/acme/") and "partNumber" not in query

    return match


def _is_complete(bucket: str) -> Match:
    def match(method: str, target: str) -> bool:
        path, _, query = target.partition("?")
        return method == "POST" and path.startswith(f"/{bucket}/acme/") and "uploadId=" in query

    return match


STEPS = ["spool-sealed", "part-uploaded", "object-complete", "catalog-written"]


@pytest.mark.parametrize("step", STEPS)
def test_a_gateway_killed_at_each_step_stores_the_recording_once(
    step: str, gateway: Gateway, gate: S3Gate, bucket: str, s3_admin: S3Client, tmp_path: Path
) -> None:
    spool = tmp_path / "var" / "spool"
    engine = create_db_engine(f"sqlite:///{tmp_path / 'var' / 'callrec.db'}")
    with httpx.Client(base_url=gateway.url, timeout=BOUND) as http:
        tenant = make_tenant(cast("TestClient", http))
        answer = http.post("/v1/calls", json=call_body("c-kill"), headers=tenant.integrator)
        assert answer.json()["record"] is True, answer.text
    if step == "part-uploaded":  # about 6 MiB of Ogg/Opus: two parts
        wav = _noise_wav(tmp_path / "long.wav", 800)
        rule = gate.hold(_is_complete(bucket))
    else:
        wav = tone_wav(tmp_path / "short.wav", seconds=5)
        rule = gate.hold(_is_object_put(bucket), after=step == "object-complete")

    def upload() -> None:  # its answer never comes: the gateway dies first
        with suppress(httpx.TransportError):
            httpx.put(
                f"{gateway.url}/v1/calls/c-kill/recording",
                content=wav.read_bytes(),
                headers={**tenant.integrator, "Content-Type": "audio/wav"},
                timeout=BOUND,
            )

    uploading = threading.Thread(target=upload)
    uploading.start()
    try:
        if step == "catalog-written":
            gate.open()
            _poll(lambda: _states(engine) == [RecordingState.STORED], "the catalog to say stored")
        else:
            assert rule.caught.wait(BOUND), "the store path never reached the step"
            _poll(lambda: [p.suffix for p in spool.iterdir()] == [".sealed"], "a sealed spool")
            key = rule.target.partition("?")[0].removeprefix(f"/{bucket}/")
            if step == "part-uploaded":
                assert _uploads(s3_admin, bucket) == [key]
            if step == "object-complete":
                _poll(lambda: _versions(s3_admin, bucket, key), "S3 to store the object")
        gateway.kill()
    finally:
        uploading.join(BOUND)
    gate.open()

    gateway.start()  # recovery runs before the gateway answers ready
    with Session(engine) as session:
        (recording,) = session.exec(select(Recording).where(Recording.call_id == "c-kill")).all()
        stored_events = session.exec(
            select(AuditEvent).where(AuditEvent.kind == "recording.stored")
        ).all()
    engine.dispose()
    assert recording.state == RecordingState.STORED, recording.failure
    assert [e.subject for e in stored_events] == [recording.id]  # stored once
    assert list(spool.iterdir()) == []

    if step == "object-complete":  # the retry stored the spool again: a second version
        assert len(_versions(s3_admin, bucket, recording.object_key)) == 2
    cleaned = gateway.run("reconcile", "--clean-older-than", "0s")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert _versions(s3_admin, bucket, recording.object_key) == [recording.version_id]
    assert _uploads(s3_admin, bucket) == []
    with httpx.Client(base_url=gateway.url, timeout=BOUND) as http:
        audio = http.get(f"/v1/recordings/{recording.id}/audio", headers=tenant.client_admin)
        assert audio.status_code == 200 and audio.content.startswith(b"OggS")
        report = http.get("/v1/audit/verify", headers=ADMIN)
        assert report.json()["ok"] is True, report.text


def _states(engine: Engine) -> list[RecordingState]:
    with Session(engine) as session:
        return [r.state for r in session.exec(select(Recording))]


def _uploads(s3_admin: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _versions(s3_admin: S3Client, bucket: str, key: str) -> list[str]:
    listed = s3_admin.list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == key]

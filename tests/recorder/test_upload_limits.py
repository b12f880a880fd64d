"""Bounded work per upload: the duration limit holds whatever the body's size."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import imageio_ffmpeg
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from recorder.app import create_app
from storage.audit import AuditEvent
from storage.backend import StorageBackend
from storage.catalog import Recording, RecordingState
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.conftest import Clock, backend_settings, call_body, make_tenant

LIMIT_S = 60


def _silence(path: Path, seconds: int, *, declared: bool) -> Path:
    """FLAC silence: hours of it fit in a few hundred KB. Written to a pipe, the
    encoder cannot go back to fill in the length, so the stream declares none."""
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi"]
    source = ["-i", "anullsrc=r=8000:cl=mono", "-t", str(seconds), "-c:a", "flac"]
    if declared:
        subprocess.run([*ffmpeg, *source, str(path)], check=True)
    else:
        with path.open("wb") as out:
            subprocess.run([*ffmpeg, *source, "-f", "flac", "pipe:1"], stdout=out, check=True)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {
        "declared": _silence(folder / "two-hours.flac", 2 * 3600, declared=True),
        "undeclared": _silence(folder / "ten-minutes.flac", 600, declared=False),
        "short": _silence(folder / "half-minute.flac", 30, declared=False),
    }


@pytest.fixture
def limited(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> Iterator[tuple[TestClient, StorageBackend]]:
    settings = backend_settings(s3_server, database_url, tmp_path, upload_max_duration_s=LIMIT_S)
    backend = StorageBackend(settings)
    backend.start(now=now)
    try:
        app = create_app(backend, clock=Clock(now))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, backend
    finally:
        backend.stop()


def _upload(client: TestClient, headers: dict[str, str], body: Path, call_id: str) -> object:
    client.post("/v1/calls", json=call_body(call_id=call_id), headers=headers)
    return client.put(
        f"/v1/calls/{call_id}/recording",
        content=body.read_bytes(),
        headers={**headers, "Content-Type": "audio/flac"},
    )


@pytest.mark.parametrize("kind", ["declared", "undeclared"])
def test_an_upload_longer_than_the_limit_is_refused(
    limited: tuple[TestClient, StorageBackend], bombs: dict[str, Path], kind: str
) -> None:
    client, backend = limited
    tenant = make_tenant(client)
    answer = _upload(client, tenant.integrator, bombs[kind], "call-long")
    assert answer.status_code == 413, answer.text  # type: ignore[attr-defined]
    assert answer.json()["error"] == "upload_too_long"  # type: ignore[attr-defined]
    with Session(backend.engine) as session:
        rows = list(session.exec(select(Recording)))
        discarded = list(
            session.exec(select(AuditEvent).where(AuditEvent.kind == "recording.discarded"))
        )
    # A declared length is refused before anything is catalogued; one found while
    # decoding leaves a failed attempt, its discard audited, and nothing in S3.
    assert all(r.state == RecordingState.FAILED for r in rows)
    assert len(rows) == len(discarded) == (0 if kind == "declared" else 1)
    assert all("upload too long" in e.data for e in discarded)
    assert list(backend.store.list_keys("acme/")) == []
    # Within the limit, the same call is stored.
    stored = _upload(client, tenant.integrator, bombs["short"], "call-long")
    assert stored.status_code == 201, stored.text  # type: ignore[attr-defined]

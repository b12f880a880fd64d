from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from storage.settings import Settings


def backend_settings(
    s3: EmbeddedS3, database_url: str, data_dir: Path, **extra: object
) -> Settings:
    """Settings for a backend on the test SeaweedFS and a test database."""
    s3_config = s3.config(f"app-{secrets.token_hex(4)}")
    return Settings(  # type: ignore[call-arg]
        data_dir=data_dir,
        database_url=database_url,
        s3_endpoint_url=s3_config.endpoint_url,
        s3_access_key_id=s3_config.access_key_id,
        s3_secret_access_key=s3_config.secret_access_key,
        s3_bucket=s3_config.bucket,
        master_key=secrets.token_urlsafe(32)[:43] + "=",
        **extra,
    )


@pytest.fixture
def backend(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> Iterator[StorageBackend]:
    backend = StorageBackend(backend_settings(s3_server, database_url, tmp_path))
    backend.start(now=now)
    yield backend
    backend.stop()


@pytest.fixture
def client(backend: StorageBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend), raise_server_exceptions=False) as client:
        yield client


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_database_and_s3_answer(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "s3": "ok"}


def test_readyz_when_s3_is_gone(backend: StorageBackend, client: TestClient) -> None:
    backend.store.bucket = "no-such-bucket-" + secrets.token_hex(4)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"] == "not_ready"


def test_metrics_count_requests(client: TestClient) -> None:
    client.get("/healthz")
    body = client.get("/metrics").text
    assert 'callrec_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in body
    assert "callrec_http_request_duration_seconds_bucket" in body


def test_unknown_route_is_json(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not Found"}


def test_openapi_is_served(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)

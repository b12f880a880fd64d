from __future__ import annotations

import secrets

from fastapi.testclient import TestClient

from storage.backend import StorageBackend


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

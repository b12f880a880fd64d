"""Bad uploads get a clear 4xx, store nothing and leave the audit chain whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from storage.backend import StorageBackend
from tests.recorder.conftest import call_body, make_tenant, tone_wav
from tests.recorder.test_upload_flow import audit_kinds


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    return tone_wav(tmp_path / "call.wav", seconds=1.0).read_bytes()


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("text/plain", "wav", 415, "unsupported_media_type"),
        ("", "wav", 415, "unsupported_media_type"),
        ("audio/wav", "random", 422, "invalid_audio"),
        ("audio/flac", "wav", 422, "invalid_audio"),
        ("audio/mpeg", "wav", 422, "invalid_audio"),
        ("audio/wav", "empty", 422, "invalid_audio"),
        ("audio/wav", "header-only", 422, "invalid_audio"),
    ],
)
def test_bad_upload(
    client: TestClient,
    backend: StorageBackend,
    wav: bytes,
    content_type: str,
    body: str,
    status: int,
    code: str,
) -> None:
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    content = {"wav": wav, "random": os.urandom(4000), "empty": b"", "header-only": wav[:44]}[body]
    response = client.put(
        "/v1/calls/call-1/recording",
        content=content,
        headers={**tenant.integrator, "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert list(backend.store.list_keys("acme/")) == []
    assert "recording.stored" not in audit_kinds(backend)
    # The call can still be uploaded properly afterwards.
    retry = client.put(
        "/v1/calls/call-1/recording",
        content=wav,
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert retry.status_code == 201, retry.text


def test_oversized_upload(client: TestClient, wav: bytes) -> None:
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    client.app.state.upload_max_bytes = 10_000  # type: ignore[attr-defined]
    response = client.put(
        "/v1/calls/call-1/recording",
        content=wav,
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_oversized_streamed_upload_without_length(client: TestClient, wav: bytes) -> None:
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    client.app.state.upload_max_bytes = 10_000  # type: ignore[attr-defined]

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(wav), 4096):
            yield wav[i : i + 4096]

    response = client.put(
        "/v1/calls/call-1/recording",
        content=chunks(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 413


def test_second_upload_for_a_call_conflicts(client: TestClient, wav: bytes) -> None:
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    headers = {**tenant.integrator, "Content-Type": "audio/wav"}
    assert client.put("/v1/calls/call-1/recording", content=wav, headers=headers).status_code == 201
    again = client.put("/v1/calls/call-1/recording", content=wav, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"] == "recording_exists"


def test_upload_for_an_unknown_call(client: TestClient, wav: bytes) -> None:
    tenant = make_tenant(client)
    response = client.put(
        "/v1/calls/never-asked/recording",
        content=wav,
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_call"

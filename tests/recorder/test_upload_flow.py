"""The integrator's path end to end: client, keys, consent, call hook, upload, read back."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from recorder import audio
from storage.audit import AuditEvent, AuditLog
from storage.backend import StorageBackend
from storage.catalog import Recording
from storage.db import session_scope
from tests.recorder.conftest import ADMIN, call_body, make_tenant, tone_wav


def audit_kinds(backend: StorageBackend) -> list[str]:
    """The kinds of every audit event, after checking that the chain verifies."""
    with Session(backend.engine) as session:
        report = AuditLog(backend.keyring.derive("audit-anchor")).verify(session)
        assert report.ok, report.problem
        events = session.exec(select(AuditEvent).order_by(AuditEvent.seq))  # type: ignore[arg-type]
        return [event.kind for event in events]


def test_upload_is_stored_encrypted_tagged_and_readable(
    client: TestClient, backend: StorageBackend, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    decision = client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    assert decision.status_code == 200, decision.text
    answer = decision.json()
    assert answer["record"] is True
    assert answer["reason"] == "recorded"
    assert answer["purposes"] == ["improvement", "research"]
    assert answer["upload_url"] == "/v1/calls/call-1/recording"

    wav = tone_wav(tmp_path / "call.wav", seconds=2.0, channels=2)
    response = client.put(
        answer["upload_url"],
        content=wav.read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 201, response.text
    recording = response.json()
    assert recording["state"] == "stored"
    assert recording["channels"] == 2
    assert abs(recording["duration_s"] - 2.0) < 0.05
    assert set(recording["purposes"]) == {"research", "improvement"}

    key = f"acme/2026/11/28/{recording['id']}.ogg"
    tags = backend.store.get_tags(key)
    assert tags == {
        "client": "acme",
        "purpose:research": "2027-11-28",
        "purpose:improvement": "2027-05-27",
    }

    listed = client.get("/v1/recordings", headers=tenant.client_admin).json()
    assert [item["id"] for item in listed["items"]] == [recording["id"]]
    body = client.get(f"/v1/recordings/{recording['id']}/audio", headers=tenant.client_admin)
    assert body.status_code == 200
    assert body.headers["content-type"] == "audio/ogg"
    assert abs(audio.duration_of_ogg(body.content) - 2.0) < 0.05
    stored = b"".join(backend.store.get_stream(key))
    assert body.content not in stored and body.content[:200] not in stored

    assert audit_kinds(backend) == [
        "client.created",
        "api_key.issued",
        "api_key.issued",
        "consent.granted",
        "call.decided",
        "recording.stored",
        "recording.accessed",
    ]


def test_upload_refused_without_consent(client: TestClient, tmp_path: Path) -> None:
    response = client.post(
        "/v1/clients", json={"id": "nocon", "name": "No", "country": "MA"}, headers=ADMIN
    )
    assert response.status_code == 201
    key = client.post("/v1/clients/nocon/api-keys", json={"role": "integrator"}, headers=ADMIN)
    integrator = {"Authorization": f"Bearer {key.json()['key']}"}
    answer = client.post("/v1/calls", json=call_body(), headers=integrator).json()
    assert answer["record"] is False
    assert answer["reason"] == "no_consent"
    assert answer["upload_url"] is None
    wav = tone_wav(tmp_path / "x.wav")
    response = client.put(
        "/v1/calls/call-1/recording",
        content=wav.read_bytes(),
        headers={**integrator, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 409
    assert response.json()["error"] == "recording_not_allowed"


def test_a_tampered_object_fails_before_a_byte_of_audio_is_served(
    client: TestClient, backend: StorageBackend, tmp_path: Path
) -> None:
    """Streaming is no excuse: the whole object is authenticated before the answer starts."""
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    wav = tone_wav(tmp_path / "call.wav", seconds=2.0)
    recording = client.put(
        "/v1/calls/call-1/recording",
        content=wav.read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    ).json()
    key = f"acme/2026/11/28/{recording['id']}.ogg"
    stored = b"".join(backend.store.get_stream(key))
    for tampered in (stored[:-1], stored[:-20] + bytes(20)):  # cut tail, then a forged one
        version = backend.store.put_bytes(key, tampered, tags={}).version_id
        with session_scope(backend.engine) as session:
            row = session.get(Recording, recording["id"])
            assert row is not None
            row.version_id = version
            session.add(row)
        answer = client.get(f"/v1/recordings/{recording['id']}/audio", headers=ADMIN)
        assert answer.status_code == 500
        assert answer.json()["error"] == "integrity_error"
        assert b"OggS" not in answer.content

"""Opt-out means gone: no audio of the call is taken afterwards, and what was kept is purged."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from retention.purge import Purger
from storage.audit import AuditEvent
from storage.backend import StorageBackend
from storage.catalog import Recording
from tests.recorder.conftest import ADMIN, Clock, Tenant, auth, call_body, make_tenant, tone_wav


def _stored(client: TestClient, tenant: Tenant, call_id: str, tmp_path: Path) -> Any:
    answer = client.post("/v1/calls", json=call_body(call_id), headers=tenant.integrator)
    assert answer.json()["record"] is True, answer.text
    response = _upload(client, tenant, call_id, tmp_path)
    assert response.status_code == 201, response.text
    return response.json()


def _upload(client: TestClient, tenant: Tenant, call_id: str, tmp_path: Path) -> Any:
    return client.put(
        f"/v1/calls/{call_id}/recording",
        content=tone_wav(tmp_path / f"{call_id}.wav", seconds=0.5).read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )


def _opt_out(client: TestClient, tenant: Tenant, call_id: str) -> None:
    response = client.post(f"/v1/calls/{call_id}/opt-out", headers=tenant.integrator)
    assert response.status_code == 200, response.text
    assert response.json() == {"call_id": call_id, "state": "opted_out"}


def _object_key(backend: StorageBackend, recording_id: str) -> str:
    with Session(backend.engine) as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        return recording.object_key


def _events(backend: StorageBackend, kind: str) -> list[AuditEvent]:
    with Session(backend.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.kind == kind)))


def _compliance(client: TestClient) -> dict[str, str]:
    response = client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN)
    return auth(response.json()["key"])


def test_opt_out_purges_what_was_stored_with_its_certificate(
    client: TestClient, backend: StorageBackend, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    stored = _stored(client, tenant, "c1", tmp_path)
    kept = _stored(client, tenant, "c2", tmp_path)  # another call of the same caller stays
    key = _object_key(backend, stored["id"])
    assert backend.store.list_versions(key) != []

    _opt_out(client, tenant, "c1")

    recording = client.get(f"/v1/recordings/{stored['id']}", headers=tenant.client_admin).json()
    assert (recording["state"], recording["purposes"]) == ("purged", {})
    audio = client.get(f"/v1/recordings/{stored['id']}/audio", headers=tenant.client_admin)
    assert audio.status_code in (404, 409)
    assert backend.store.list_versions(key) == []
    [certificate] = _events(backend, "recording.purged")
    data = json.loads(certificate.data)
    assert (certificate.subject, data["reason"]) == (stored["id"], "caller_opt_out")
    assert (data["certificate"], data["key_destroyed"]) == ("deletion", True)
    # The call takes no audio any more; the other call is untouched.
    again = _upload(client, tenant, "c1", tmp_path)
    assert (again.status_code, again.json()["error"]) == (409, "caller_opted_out")
    other = client.get(f"/v1/recordings/{kept['id']}", headers=tenant.client_admin).json()
    assert other["state"] == "stored"
    # The report counts it as an early purge, caused by the opt-out.
    report = client.get("/v1/reports/retention", headers=_compliance(client)).json()["purges"]
    assert [(e["recording_id"], e["cause"]) for e in report["early"]] == [
        (stored["id"], "caller_opt_out")
    ]


def test_a_held_recording_loses_its_purposes_and_goes_when_released(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    stored = _stored(client, tenant, "c1", tmp_path)
    compliance = _compliance(client)
    hold = client.post(
        "/v1/legal-holds", json={"reason": "court order", "call_ids": ["c1"]}, headers=compliance
    ).json()

    _opt_out(client, tenant, "c1")

    recording = client.get(f"/v1/recordings/{stored['id']}", headers=tenant.client_admin).json()
    assert (recording["state"], recording["purposes"]) == ("stored", {})
    key = _object_key(backend, stored["id"])
    assert backend.store.get_tags(key) == {"client": tenant.id, "legal-hold": "true"}
    [withdrawn] = _events(backend, "recording.purposes_withdrawn")
    assert json.loads(withdrawn.data)["cause"] == "caller_opt_out"
    assert _events(backend, "recording.purged") == []

    released = client.delete(f"/v1/legal-holds/{hold['id']}", headers=compliance)
    assert released.status_code == 200, released.text
    clock.now += timedelta(minutes=1)
    report = Purger.for_backend(backend).sweep(as_of=clock.now, now=clock.now)
    assert (report.purged, report.failed) == (1, [])
    assert backend.store.list_versions(key) == []


def test_opt_out_of_a_call_with_nothing_stored(client: TestClient, backend: StorageBackend) -> None:
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body("c1"), headers=tenant.integrator)
    _opt_out(client, tenant, "c1")
    assert _events(backend, "recording.purged") == []
    second = client.post("/v1/calls/c1/opt-out", headers=tenant.integrator)
    assert (second.status_code, second.json()["error"]) == (409, "call_state")

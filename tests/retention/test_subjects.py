"""Data-subject requests over HTTP: access, erasure (and why not), restriction, objection."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from storage.backend import StorageBackend
from tests.recorder.conftest import ADMIN, auth, call_body, make_tenant, tone_wav

CUSTOMER = "+212612345678"
OTHER = "+212699999999"


def _recording(
    client: TestClient, headers: dict[str, str], tmp_path: Path, call_id: str, caller: str
) -> Any:
    client.post("/v1/calls", json=call_body(call_id=call_id, **{"from": caller}), headers=headers)
    response = client.put(
        f"/v1/calls/{call_id}/recording",
        content=tone_wav(tmp_path / f"{call_id}.wav", seconds=0.5).read_bytes(),
        headers={**headers, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def _request(client: TestClient, headers: dict[str, str], kind: str, phone: str = CUSTOMER) -> Any:
    response = client.post(
        "/v1/subject-requests",
        json={"client_id": "acme", "kind": kind, "phone": phone},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_access_exports_audio_and_metadata(client: TestClient, tmp_path: Path) -> None:
    tenant = make_tenant(client)
    mine = _recording(client, tenant.integrator, tmp_path, "c1", CUSTOMER)
    _recording(client, tenant.integrator, tmp_path, "c2", OTHER)
    answer = _request(client, tenant.client_admin, "access", phone="+212 6 12 34 56 78")
    assert answer["recordings"] == [mine["id"]]
    assert answer["status"] == "completed"
    assert answer["due_at"] > answer["created_at"]
    export = client.get(answer["export_url"], headers=tenant.client_admin)
    assert export.status_code == 200
    bundle = zipfile.ZipFile(io.BytesIO(export.content))
    assert sorted(bundle.namelist()) == sorted(["metadata.json", f"{mine['id']}.ogg"])
    metadata = json.loads(bundle.read("metadata.json"))
    assert [m["id"] for m in metadata] == [mine["id"]]
    assert bundle.read(f"{mine['id']}.ogg")[:4] == b"OggS"
    assert CUSTOMER not in bundle.read("metadata.json").decode()


def test_downloads_and_the_access_export_check_out_against_the_metadata(
    client: TestClient, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    first = _recording(client, tenant.integrator, tmp_path, "c1", CUSTOMER)
    second = _recording(client, tenant.integrator, tmp_path, "c2", CUSTOMER)
    for recording in (first, second):
        audio = client.get(f"/v1/recordings/{recording['id']}/audio", headers=ADMIN).content
        assert recording["audio_size"] == len(audio)
        assert recording["audio_sha256"] == hashlib.sha256(audio).hexdigest()
        assert recording["sha256"] != recording["audio_sha256"]  # that one is the object's
    answer = _request(client, tenant.client_admin, "access")
    export = client.get(answer["export_url"], headers=tenant.client_admin)
    bundle = zipfile.ZipFile(io.BytesIO(export.content))
    metadata = json.loads(bundle.read("metadata.json"))
    assert sorted(m["file"] for m in metadata) == sorted(
        name for name in bundle.namelist() if name != "metadata.json"
    )
    for entry in metadata:
        audio = bundle.read(entry["file"])
        assert entry["audio_size"] == len(audio)
        assert entry["audio_sha256"] == hashlib.sha256(audio).hexdigest()
        shown = client.get(f"/v1/recordings/{entry['id']}", headers=ADMIN).json()
        assert shown["audio_sha256"] == entry["audio_sha256"]


def test_erasure_purges_unless_held_and_says_why(
    client: TestClient, backend: StorageBackend, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    free = _recording(client, tenant.integrator, tmp_path, "c1", CUSTOMER)
    held = _recording(client, tenant.integrator, tmp_path, "c2", CUSTOMER)
    compliance = auth(
        client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN).json()["key"]
    )
    hold = client.post(
        "/v1/legal-holds", json={"reason": "court order", "call_ids": ["c2"]}, headers=compliance
    ).json()
    answer = _request(client, tenant.client_admin, "erasure")
    assert answer["status"] == "partially_completed"
    assert answer["held"] == {held["id"]: [hold["id"]]}
    assert client.get(f"/v1/recordings/{free['id']}", headers=ADMIN).json()["state"] == "purged"
    assert client.get(f"/v1/recordings/{held['id']}", headers=ADMIN).json()["state"] == "stored"
    assert backend.store.list_versions(f"acme/2026/11/28/{free['id']}.ogg") == []
    again = client.get(f"/v1/subject-requests/{answer['id']}", headers=tenant.client_admin)
    assert again.json()["held"] == answer["held"]
    # The erasure came before the recording's purposes expired: early, never on time.
    report = client.get("/v1/reports/retention", headers=compliance).json()["purges"]
    assert [(e["recording_id"], e["cause"]) for e in report["early"]] == [(free["id"], "erasure")]
    assert [(r["cause"], r["early"], r["on_time"]) for r in report["by_cause"]] == [
        ("erasure", 1, 0)
    ]


def test_restriction_keeps_but_does_not_serve(client: TestClient, tmp_path: Path) -> None:
    tenant = make_tenant(client)
    recording = _recording(client, tenant.integrator, tmp_path, "c1", CUSTOMER)
    _request(client, tenant.client_admin, "restriction")
    meta = client.get(f"/v1/recordings/{recording['id']}", headers=tenant.client_admin).json()
    assert meta["state"] == "restricted"
    audio = client.get(f"/v1/recordings/{recording['id']}/audio", headers=tenant.client_admin)
    assert audio.status_code == 409
    assert audio.json()["error"] == "recording_restricted"


def test_objection_stops_future_recording(client: TestClient) -> None:
    tenant = make_tenant(client)
    _request(client, tenant.client_admin, "objection")
    answer = client.post("/v1/calls", json=call_body(call_id="later"), headers=tenant.integrator)
    assert (answer.json()["record"], answer.json()["reason"]) == (False, "subject_objection")


def test_another_tenants_numbers_and_requests_stay_hidden(client: TestClient) -> None:
    make_tenant(client, "acme")
    other = make_tenant(client, "other")
    response = client.post(
        "/v1/subject-requests",
        json={"client_id": "acme", "kind": "erasure", "phone": CUSTOMER},
        headers=other.client_admin,
    )
    assert response.status_code == 404
    bad = client.post(
        "/v1/subject-requests",
        json={"client_id": "other", "kind": "erasure", "phone": "call me"},
        headers=other.client_admin,
    )
    assert bad.status_code == 422
    assert bad.json()["error"] == "invalid_phone"


def test_revocation_with_purge_existing_withdraws_purposes(
    client: TestClient, backend: StorageBackend, tmp_path: Path
) -> None:
    tenant = make_tenant(client)  # grant: research + improvement
    second = client.post(
        "/v1/clients/acme/consents",
        json={
            "purposes": ["optimization"],
            "notice": "contract",
            "granted_by": "DPO",
            "evidence": "addendum",
        },
        headers=tenant.client_admin,
    ).json()
    first = _recording(client, tenant.integrator, tmp_path, "c1", CUSTOMER)
    client.post(
        "/v1/calls",
        json=call_body(call_id="c2", purposes=["optimization"]),
        headers=tenant.integrator,
    )
    other = client.put(
        "/v1/calls/c2/recording",
        content=tone_wav(tmp_path / "c2.wav", seconds=0.5).read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    ).json()
    response = client.post(
        f"/v1/clients/acme/consents/{tenant.grant['id']}/revoke",
        json={"reason": "client asked", "purge_existing": True},
        headers=tenant.client_admin,
    )
    assert response.status_code == 200, response.text
    assert client.get(f"/v1/recordings/{first['id']}", headers=ADMIN).json()["state"] == "purged"
    assert client.get(f"/v1/recordings/{other['id']}", headers=ADMIN).json()["state"] == "stored"
    assert backend.store.list_versions(f"acme/2026/11/28/{first['id']}.ogg") == []
    assert second["status"] == "active"

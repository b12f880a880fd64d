"""Legal holds over HTTP: cases block the purge until every one covering is released."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from retention.purge import Purger
from storage.backend import StorageBackend
from storage.vault import RecordingDraft
from tests.recorder.conftest import ADMIN, Clock, auth, call_body, make_tenant, tone_wav


def _compliance(client: TestClient) -> dict[str, str]:
    response = client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN)
    return auth(response.json()["key"])


def _recording(client: TestClient, headers: dict[str, str], tmp_path: Path, call_id: str) -> Any:
    client.post("/v1/calls", json=call_body(call_id=call_id), headers=headers)
    response = client.put(
        f"/v1/calls/{call_id}/recording",
        content=tone_wav(tmp_path / f"{call_id}.wav", seconds=0.5).read_bytes(),
        headers={**headers, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def _sweep(backend: StorageBackend, clock: Clock, days: int) -> Any:
    when = clock.now + timedelta(days=days)
    return Purger.for_backend(backend).sweep(as_of=when, now=when)


def test_holds_block_the_purge_until_every_case_is_released(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    compliance = _compliance(client)
    held = _recording(client, tenant.integrator, tmp_path, "call-held")
    free = _recording(client, tenant.integrator, tmp_path, "call-free")
    by_recording = client.post(
        "/v1/legal-holds",
        json={"reason": "litigation 2026-17", "recording_ids": [held["id"]]},
        headers=compliance,
    )
    assert by_recording.status_code == 201, by_recording.text
    assert by_recording.json()["recordings_held"] == 1
    by_call = client.post(
        "/v1/legal-holds",
        json={"reason": "regulator inquiry", "call_ids": ["call-held"]},
        headers=compliance,
    ).json()
    key = f"acme/2026/11/28/{held['id']}.ogg"
    assert backend.store.get_tags(key)["legal-hold"] == "true"
    assert client.get(f"/v1/recordings/{held['id']}", headers=tenant.client_admin).json()[
        "legal_hold"
    ]

    report = _sweep(backend, clock, 400)  # every purpose long expired
    assert (report.purged, report.held) == (1, 1)
    assert client.get(f"/v1/recordings/{free['id']}", headers=ADMIN).json()["state"] == "purged"
    kept = client.get(f"/v1/recordings/{held['id']}", headers=ADMIN).json()
    assert (kept["state"], kept["purposes"]) == ("stored", {})  # holds never extend purposes

    release = client.delete(f"/v1/legal-holds/{by_recording.json()['id']}", headers=compliance)
    assert release.status_code == 200
    assert _sweep(backend, clock, 401).purged == 0  # the call's case still holds it
    client.delete(f"/v1/legal-holds/{by_call['id']}", headers=compliance)
    assert _sweep(backend, clock, 402).purged == 1
    assert backend.store.list_versions(key) == []


def test_a_case_on_the_client_holds_recordings_made_later(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    compliance = _compliance(client)
    case = client.post(
        "/v1/legal-holds", json={"reason": "class action", "client_id": "acme"}, headers=compliance
    )
    assert case.status_code == 201, case.text
    later = _recording(client, tenant.integrator, tmp_path, "call-later")
    key = f"acme/2026/11/28/{later['id']}.ogg"
    assert later["legal_hold"] is True
    assert backend.store.get_tags(key)["legal-hold"] == "true"  # tagged from the first byte
    assert _sweep(backend, clock, 400).held == 1

    client.delete(f"/v1/legal-holds/{case.json()['id']}", headers=compliance)
    assert "legal-hold" not in backend.store.get_tags(key)
    assert _sweep(backend, clock, 401).purged == 1


def test_a_case_placed_during_the_upload_tags_the_stored_object(
    client: TestClient, backend: StorageBackend, clock: Clock
) -> None:
    make_tenant(client)
    compliance = _compliance(client)
    draft = RecordingDraft(
        client_id="acme", call_id="call-live", channel="upload", codec="opus", container="ogg"
    )
    writer = backend.vault.begin(draft, now=clock.now)
    writer.write(b"audio so far")
    case = client.post(
        "/v1/legal-holds",
        json={"reason": "inquiry", "recording_ids": [writer.recording_id]},
        headers=compliance,
    )
    try:
        assert case.status_code == 201, case.text
        assert case.json()["recordings_held"] == 1
    finally:
        recording = backend.vault.finish(writer, now=clock.now)
    assert recording.legal_hold is True
    assert backend.store.get_tags(recording.object_key)["legal-hold"] == "true"


def test_hold_on_unknown_ids_is_refused(client: TestClient) -> None:
    make_tenant(client)
    compliance = _compliance(client)
    for body in (
        {"reason": "x", "recording_ids": ["rec_nope"]},
        {"reason": "x", "call_ids": ["never"]},
        {"reason": "x", "client_id": "nobody"},
    ):
        response = client.post("/v1/legal-holds", json=body, headers=compliance)
        assert response.status_code == 404, response.text
    empty = client.post("/v1/legal-holds", json={"reason": "x"}, headers=compliance)
    assert empty.status_code == 422
    assert client.delete("/v1/legal-holds/hold_nope", headers=compliance).status_code == 404


def test_only_compliance_places_holds(client: TestClient) -> None:
    tenant = make_tenant(client)
    body = {"reason": "x", "client_id": "acme"}
    assert client.post("/v1/legal-holds", json=body, headers=tenant.client_admin).status_code == 403
    assert client.post("/v1/legal-holds", json=body, headers=tenant.integrator).status_code == 403
    assert client.post("/v1/legal-holds", json=body, headers=ADMIN).status_code == 201


def test_a_review_date_in_the_past_is_refused_and_nothing_is_written(
    client: TestClient, clock: Clock
) -> None:
    make_tenant(client)
    compliance = _compliance(client)
    for until in (clock.now - timedelta(days=1), clock.now):
        response = client.post(
            "/v1/legal-holds",
            json={"reason": "x", "client_id": "acme", "until": until.isoformat()},
            headers=compliance,
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "until_in_past"
        assert "in the past" in response.json()["detail"]
    assert client.get("/v1/legal-holds", headers=compliance).json() == {"items": [], "next": None}
    future = (clock.now + timedelta(days=30)).isoformat()
    accepted = client.post(
        "/v1/legal-holds",
        json={"reason": "x", "client_id": "acme", "until": future},
        headers=compliance,
    )
    assert accepted.status_code == 201, accepted.text


def test_cases_are_listed_by_client_and_status_and_read_one_by_one(
    client: TestClient, clock: Clock, tmp_path: Path
) -> None:
    acme = make_tenant(client)
    globex = make_tenant(client, "globex")
    compliance = _compliance(client)
    recording = _recording(client, acme.integrator, tmp_path, "call-a")
    _recording(client, globex.integrator, tmp_path, "call-g")

    def place(**body: Any) -> str:
        response = client.post(
            "/v1/legal-holds", json={"reason": "inquiry", **body}, headers=compliance
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    on_recording = place(recording_ids=[recording["id"]])
    clock.now += timedelta(seconds=1)
    on_call = place(call_ids=["call-g"])
    clock.now += timedelta(seconds=1)
    on_client = place(client_id="acme", until=(clock.now + timedelta(days=90)).isoformat())
    clock.now += timedelta(seconds=1)
    assert client.delete(f"/v1/legal-holds/{on_call}", headers=compliance).status_code == 200

    def ids(**params: Any) -> list[str]:
        response = client.get("/v1/legal-holds", params=params, headers=compliance)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids() == [on_recording, on_call, on_client]
    assert ids(client_id="acme") == [on_recording, on_client]  # by recording and by client
    assert ids(client_id="globex") == [on_call]  # by call
    assert ids(status="open") == [on_recording, on_client]
    assert ids(status="released") == [on_call]
    assert ids(client_id="globex", status="open") == []
    bad = client.get("/v1/legal-holds", params={"status": "closed"}, headers=compliance)
    assert bad.status_code == 422

    first = client.get("/v1/legal-holds", params={"limit": 2}, headers=compliance).json()
    assert [i["id"] for i in first["items"]] == [on_recording, on_call]
    rest = client.get(
        "/v1/legal-holds", params={"limit": 2, "cursor": first["next"]}, headers=compliance
    ).json()
    assert ([i["id"] for i in rest["items"]], rest["next"]) == ([on_client], None)

    one = client.get(f"/v1/legal-holds/{on_client}", headers=compliance)
    assert one.status_code == 200, one.text
    case = one.json()
    assert (case["status"], case["client_id"], case["recording_ids"], case["call_ids"]) == (
        "open",
        "acme",
        [],
        [],
    )
    assert case["recordings_held"] == 1 and case["until"] is not None
    released = client.get(f"/v1/legal-holds/{on_call}", headers=compliance).json()
    assert (released["status"], released["call_ids"]) == ("released", ["call-g"])
    assert released["released_at"] is not None and released["released_by"]
    by_recording = client.get(f"/v1/legal-holds/{on_recording}", headers=compliance).json()
    assert by_recording["recording_ids"] == [recording["id"]]

    missing = client.get("/v1/legal-holds/hold_nope", headers=compliance)
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_hold"
    for role in (acme.client_admin, acme.integrator):
        assert client.get("/v1/legal-holds", headers=role).status_code == 403
        assert client.get(f"/v1/legal-holds/{on_client}", headers=role).status_code == 403

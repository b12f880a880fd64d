"""The audit trail over HTTP: compliance reads the events and checks the chain."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from storage.backend import StorageBackend
from tests.recorder.conftest import ADMIN, Clock, auth, call_body, make_tenant, tone_wav


def _compliance(client: TestClient) -> dict[str, str]:
    response = client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN)
    return auth(response.json()["key"])


def _events(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next"] is None
    return list(body["items"])


def _record(client: TestClient, headers: dict[str, str], tmp_path: Path, call_id: str) -> str:
    decided = client.post("/v1/calls", json=call_body(call_id=call_id), headers=headers)
    assert decided.json()["record"] is True, decided.text
    response = client.put(
        f"/v1/calls/{call_id}/recording",
        content=tone_wav(tmp_path / f"{call_id}.wav", seconds=0.5).read_bytes(),
        headers={**headers, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_compliance_reads_events_by_client_recording_call_kind_actor_and_time(
    client: TestClient, clock: Clock, tmp_path: Path
) -> None:
    acme = make_tenant(client)
    globex = make_tenant(client, "globex")
    compliance = _compliance(client)
    start = clock.now
    clock.now += timedelta(minutes=1)
    recording = _record(client, acme.integrator, tmp_path, "call-1")
    _record(client, globex.integrator, tmp_path, "call-1")  # same call id, other tenant
    clock.now += timedelta(minutes=1)
    read = client.get(f"/v1/recordings/{recording}/audio", headers=compliance)
    assert read.status_code == 200
    hold = client.post(
        "/v1/legal-holds", json={"reason": "inquiry", "call_ids": ["call-1"]}, headers=compliance
    ).json()

    everything = _events(client, compliance)
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert [e["prev_hash"] for e in everything[1:]] == [e["hash"] for e in everything[:-1]]

    by_client = _events(client, compliance, client_id="globex")
    assert by_client and {e["client_id"] for e in by_client} == {"globex"}

    about_recording = _events(client, compliance, recording_id=recording)
    assert [e["kind"] for e in about_recording] == ["recording.stored", "recording.accessed"]
    assert about_recording[0]["data"]["call_id"] == "call-1"

    of_acme_call = _events(client, compliance, call_id="call-1", client_id="acme")
    assert [e["kind"] for e in of_acme_call] == [
        "call.decided",
        "recording.stored",
        "recording.accessed",
    ]
    of_call = _events(client, compliance, call_id="call-1")
    assert len(of_call) == 6  # both tenants' decisions and recordings, and the hold
    assert of_call[-1]["subject"] == hold["id"]

    stored = _events(client, compliance, kind="recording.stored")
    assert len(stored) == 2
    both = _events(client, compliance, kind=["recording.stored", "legal_hold.placed"])
    assert [e["kind"] for e in both] == ["recording.stored"] * 2 + ["legal_hold.placed"]

    reader = about_recording[1]["actor"]
    assert reader.startswith("key:")
    assert [e["kind"] for e in _events(client, compliance, actor=reader)] == [
        "recording.accessed",
        "legal_hold.placed",
    ]

    first_minute = _events(
        client,
        compliance,
        **{"from": start.isoformat(), "to": (start + timedelta(minutes=1)).isoformat()},
    )
    assert first_minute == [e for e in everything if e["seq"] <= first_minute[-1]["seq"]]
    assert {e["kind"] for e in first_minute} >= {"client.created", "consent.granted"}
    later = _events(client, compliance, **{"from": (start + timedelta(minutes=2)).isoformat()})
    assert [e["kind"] for e in later] == ["recording.accessed", "legal_hold.placed"]


def test_events_come_in_pages(client: TestClient) -> None:
    make_tenant(client)
    compliance = _compliance(client)
    everything = _events(client, compliance)
    assert len(everything) >= 5
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/audit", params=params, headers=compliance).json()
        pages.append(body["items"])
        cursor = body["next"]
        if cursor is None:
            break
    assert [e for page in pages for e in page] == everything
    assert all(len(page) == 2 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 2
    # A cursor past any sequence number (past PostgreSQL's INTEGER too) is an empty page.
    beyond = client.get("/v1/audit", params={"cursor": "5023903636292"}, headers=compliance)
    assert (beyond.status_code, beyond.json()) == (200, {"items": [], "next": None})


def test_bad_filters_are_refused(client: TestClient) -> None:
    compliance = _compliance(client)
    for params in (
        {"from": "2026-11-28T12:00:00"},  # no time zone
        {"from": "2026-11-28T12:00:00Z", "to": "2026-11-28T11:00:00Z"},
        {"cursor": "seven"},
        {"limit": 0},
    ):
        response = client.get("/v1/audit", params=params, headers=compliance)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "invalid_request"


def test_the_chain_check_finds_an_edited_event(client: TestClient, backend: StorageBackend) -> None:
    make_tenant(client)
    compliance = _compliance(client)
    intact = client.get("/v1/audit/verify", headers=compliance)
    assert intact.status_code == 200
    events = len(_events(client, compliance))
    assert intact.json() == {"ok": True, "events": events}

    with backend.engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_events SET actor = 'intruder' WHERE seq = 3"))
    broken = client.get("/v1/audit/verify", headers=compliance).json()
    assert (broken["ok"], broken["first_bad"]) == (False, 3)
    assert "altered" in broken["problem"]


def test_only_compliance_reads_the_audit_trail(client: TestClient) -> None:
    tenant = make_tenant(client)
    for route in ("/v1/audit", "/v1/audit/verify"):
        for headers in (tenant.client_admin, tenant.integrator):
            response = client.get(route, headers=headers)
            assert response.status_code == 403, response.text
        assert client.get(route).status_code == 401
        assert client.get(route, headers=ADMIN).status_code == 200

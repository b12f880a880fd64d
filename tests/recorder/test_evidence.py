"""Evidence for a recording through its whole life, each fact checked against the audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from retention.purge import Purger
from storage.backend import StorageBackend
from tests.recorder.conftest import ADMIN, Clock, auth, call_body, make_tenant, tone_wav


def _ok(response: Any) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def _evidence(client: TestClient, recording_id: str, headers: dict[str, str]) -> Any:
    return _ok(client.get(f"/v1/recordings/{recording_id}/evidence", headers=headers))


def _cited(value: Any) -> list[dict[str, Any]]:
    """Every fact in an answer that names an audit event, at any depth."""
    found = []
    if isinstance(value, dict):
        if "event_id" in value:
            found.append(value)
        for item in value.values():
            found += _cited(item)
    elif isinstance(value, list):
        for item in value:
            found += _cited(item)
    return found


def _check_against_the_log(client: TestClient, evidence: Any, headers: dict[str, str]) -> None:
    """Each cited event exists with that hash, time and actor, and is about this recording's
    client (or no client: a hold)."""
    log = _ok(client.get("/v1/audit?limit=1000", headers=headers))["items"]
    by_seq = {e["seq"]: e for e in log}
    facts = _cited(evidence)
    assert facts
    for fact in facts:
        event = by_seq[fact["event_id"]]
        assert event["hash"] == fact["event_hash"], fact
        assert event["actor"] == fact["actor"], fact
        assert datetime.fromisoformat(event["at"]) == datetime.fromisoformat(fact["at"]), fact
        assert event["client_id"] in (None, evidence["client_id"]), fact
    assert evidence["chain"]["ok"] is True, evidence["chain"]
    assert evidence["chain"]["checked_up_to"] == max(f["event_id"] for f in facts)
    assert evidence["client_id"] in {e["client_id"] for e in log}


def _store(client: TestClient, tmp_path: Path, integrator: dict[str, str], call_id: str) -> str:
    stored = _ok(
        client.put(
            f"/v1/calls/{call_id}/recording",
            content=tone_wav(tmp_path / f"{call_id}.wav", seconds=0.5).read_bytes(),
            headers={**integrator, "Content-Type": "audio/wav"},
        )
    )
    return str(stored["id"])


def test_evidence_through_a_recordings_whole_life(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    compliance = auth(
        _ok(client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN))["key"]
    )
    _ok(
        client.put(
            "/v1/clients/acme/retention", json={"improvement": 30}, headers=tenant.client_admin
        )
    )
    decision = _ok(client.post("/v1/calls", json=call_body("life"), headers=tenant.integrator))
    recording_id = _store(client, tmp_path, tenant.integrator, "life")
    for headers in (tenant.client_admin, compliance):
        assert (
            client.get(f"/v1/recordings/{recording_id}/audio", headers=headers).status_code == 200
        )

    evidence = _evidence(client, recording_id, compliance)
    assert evidence["decision"]["decision_id"] == decision["decision_id"]
    assert evidence["decision"]["reason"] == "recorded"
    assert (evidence["decision"]["rule"], evidence["decision"]["rule_jurisdiction"]) == (
        "one_party",
        "US-NY",
    )
    grant = evidence["grant"]
    assert (grant["grant_id"], grant["version"]) == (tenant.grant["id"], tenant.grant["version"])
    assert grant["granted_by"] == "Data protection officer"
    assert grant["evidence"] == "contract #42 signed 2026-11-01"
    assert grant["evidence_matches_event"] is True
    assert (
        evidence["stored"]["sha256"]
        == _ok(client.get(f"/v1/recordings/{recording_id}", headers=compliance))["sha256"]
    )
    assert [r["role"] for r in evidence["reads"]] == ["client_admin", "compliance"]
    assert {r["route"] for r in evidence["reads"]} == {"GET /v1/recordings/{recording_id}/audio"}
    purposes = {p["name"]: p for p in evidence["purposes"]}
    assert set(purposes) == {"improvement", "research"}
    assert all(p["legal_basis"] and p["live"] for p in purposes.values())
    improvement_ends = datetime.fromisoformat(purposes["improvement"]["expires_at"])
    research_ends = datetime.fromisoformat(purposes["research"]["expires_at"])
    assert improvement_ends < research_ends
    assert evidence["kept_because"].startswith("Kept for improvement until ")
    assert f"purged after {research_ends:%Y-%m-%d}" in evidence["kept_because"]
    assert evidence["certificate"] is None
    _check_against_the_log(client, evidence, compliance)

    # A purge sweep expires improvement; research keeps it.
    clock.now = improvement_ends + timedelta(hours=1)
    Purger.for_backend(backend).sweep(as_of=clock.now, now=clock.now)
    evidence = _evidence(client, recording_id, tenant.client_admin)
    purposes = {p["name"]: p for p in evidence["purposes"]}
    assert purposes["improvement"]["live"] is False
    assert purposes["improvement"]["ended"]["how"] == "expired"
    assert purposes["research"]["live"] is True
    assert evidence["kept_because"] == (
        f"Kept for research until {research_ends:%Y-%m-%d}; purged after {research_ends:%Y-%m-%d}."
    )

    # A case holds it past research's expiry; then it is released and the sweep purges it.
    body = {"reason": "Case 2026-17: billing dispute", "recording_ids": [recording_id]}
    hold = _ok(client.post("/v1/legal-holds", json=body, headers=compliance))
    clock.now = research_ends + timedelta(hours=1)
    Purger.for_backend(backend).sweep(as_of=clock.now, now=clock.now)
    evidence = _evidence(client, recording_id, compliance)
    assert evidence["state"] == "stored"
    assert evidence["kept_because"] == (
        f"Kept because legal hold case {hold['id']} (Case 2026-17: billing dispute) holds it; "
        "no purpose is left."
    )
    assert evidence["holds"][0]["released"] is None
    _check_against_the_log(client, evidence, compliance)

    _ok(client.delete(f"/v1/legal-holds/{hold['id']}", headers=compliance))
    Purger.for_backend(backend).sweep(as_of=clock.now, now=clock.now)
    evidence = _evidence(client, recording_id, compliance)
    assert evidence["state"] == "purged"
    assert [h["hold_id"] for h in evidence["holds"]] == [hold["id"]]
    assert evidence["holds"][0]["released"]["event_id"] > evidence["holds"][0]["event_id"]
    assert evidence["holds"][0]["covers"] == ["recording"]
    certificate = evidence["certificate"]
    assert certificate["certificate"]["certificate"] == "deletion"
    assert certificate["certificate"]["key_destroyed"] is True
    assert evidence["kept_because"].startswith(f"Purged on {clock.now:%Y-%m-%d %H:%M} UTC")
    assert f"audit event {certificate['event_id']}" in evidence["kept_because"]
    purposes = {p["name"]: p for p in evidence["purposes"]}
    assert purposes["research"]["ended"]["how"] == "expired"
    assert purposes["improvement"]["ended"]["how"] == "expired"
    assert len(evidence["reads"]) == 2
    _check_against_the_log(client, evidence, compliance)


def test_caller_consent_and_restriction_are_in_the_evidence(
    client: TestClient, tmp_path: Path
) -> None:
    tenant = make_tenant(client, notice="announcement")
    _ok(
        client.post("/v1/calls", json=call_body("ma", jurisdiction="MA"), headers=tenant.integrator)
    )
    answer = {"accepted": True, "method": "dtmf", "notice_version": "v1"}
    _ok(client.post("/v1/calls/ma/caller-consent", json=answer, headers=tenant.integrator))
    recording_id = _store(client, tmp_path, tenant.integrator, "ma")
    request = {"client_id": "acme", "kind": "restriction", "phone": "+212612345678"}
    restriction = _ok(
        client.post("/v1/subject-requests", json=request, headers=tenant.client_admin)
    )
    evidence = _evidence(client, recording_id, ADMIN)
    assert evidence["decision"]["rule"] == "all_party"
    assert evidence["decision"]["reason"] == "awaiting_caller_consent"
    caller = evidence["caller_consent"]
    assert (caller["accepted"], caller["method"], caller["notice_version"]) == (True, "dtmf", "v1")
    assert evidence["grant"]["notice"] == "announcement"
    assert (evidence["grant"]["notice_version"], evidence["grant"]["notice_sha256"]) == (
        "v1",
        "a" * 64,
    )
    assert [r["request_id"] for r in evidence["restrictions"]] == [restriction["id"]]
    assert evidence["state"] == "restricted"
    assert "restricted" in evidence["kept_because"]
    _check_against_the_log(client, evidence, ADMIN)


def test_a_tampered_event_makes_the_chain_fail(
    client: TestClient, backend: StorageBackend, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    _ok(client.post("/v1/calls", json=call_body("t"), headers=tenant.integrator))
    recording_id = _store(client, tmp_path, tenant.integrator, "t")
    evidence = _evidence(client, recording_id, ADMIN)
    assert evidence["chain"]["ok"] is True
    stored = evidence["stored"]["event_id"]
    with backend.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE audit_events SET actor = 'someone-else' WHERE seq = :seq"),
            {"seq": stored},
        )
    evidence = _evidence(client, recording_id, ADMIN)
    assert evidence["chain"]["ok"] is False
    assert evidence["chain"]["first_bad"] == stored
    assert evidence["chain"]["checked_up_to"] >= stored


def test_another_clients_recording_is_not_found(client: TestClient, tmp_path: Path) -> None:
    acme = make_tenant(client, "acme")
    globex = make_tenant(client, "globex")
    _ok(client.post("/v1/calls", json=call_body("x"), headers=acme.integrator))
    recording_id = _store(client, tmp_path, acme.integrator, "x")
    assert _evidence(client, recording_id, acme.client_admin)["client_id"] == "acme"
    for headers, status in ((globex.client_admin, 404), (globex.integrator, 403), ({}, 401)):
        response = client.get(f"/v1/recordings/{recording_id}/evidence", headers=headers)
        assert response.status_code == status, response.text
    missing = client.get("/v1/recordings/rec_none/evidence", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json().keys() == {"error", "detail"}


def test_lookup_by_number_gives_every_call_and_recording_of_it(
    client: TestClient, tmp_path: Path, caplog: Any
) -> None:
    acme = make_tenant(client, "acme")
    globex = make_tenant(client, "globex")
    _ok(client.post("/v1/calls", json=call_body("n-1"), headers=acme.integrator))
    first = _store(client, tmp_path, acme.integrator, "n-1")
    # Called back from a number written another way: the same number.
    body = call_body(
        "n-2", direction="outbound", **{"from": "+212522000000", "to": "00212 612-345-678"}
    )
    _ok(client.post("/v1/calls", json=body, headers=acme.integrator))
    refused = call_body("n-3", purposes=["optimization"])  # decided, not recorded
    _ok(client.post("/v1/calls", json=refused, headers=acme.integrator))
    _ok(
        client.post(
            "/v1/calls",
            json=call_body("other", **{"from": "+33612345678"}),
            headers=acme.integrator,
        )
    )
    _ok(client.post("/v1/calls", json=call_body("g-1"), headers=globex.integrator))

    lookup = {"client_id": "acme", "phone": "+212 6 12 34 56 78"}
    answer = _ok(client.post("/v1/evidence/lookup", json=lookup, headers=acme.client_admin))
    assert [c["call_id"] for c in answer["calls"]] == ["n-1", "n-2", "n-3"]
    assert [c["decision"]["reason"] for c in answer["calls"]] == [
        "recorded",
        "recorded",
        "purpose_not_granted",
    ]
    assert answer["calls"][0]["recordings"] == [first]
    assert [r["recording_id"] for r in answer["recordings"]] == [first]
    assert answer["recordings"][0] == _evidence(client, first, acme.client_admin)
    assert answer["chain"]["ok"] is True
    _check_against_the_log(client, answer, ADMIN)
    assert "globex" not in json.dumps(answer)

    # Another tenant's client is 404 for a client-bound key; a bad number is 422.
    for headers in (globex.client_admin,):
        response = client.post("/v1/evidence/lookup", json=lookup, headers=headers)
        assert response.status_code == 404, response.text
    bad = client.post(
        "/v1/evidence/lookup", json={"client_id": "acme", "phone": "12"}, headers=ADMIN
    )
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_phone")
    unknown = client.post(
        "/v1/evidence/lookup", json={"client_id": "nobody", "phone": "+212612345678"}, headers=ADMIN
    )
    assert unknown.status_code == 404
    nothing = _ok(
        client.post(
            "/v1/evidence/lookup",
            json={"client_id": "acme", "phone": "+15551234567"},
            headers=ADMIN,
        )
    )
    assert (nothing["calls"], nothing["recordings"], nothing["chain"]["ok"]) == ([], [], True)
    assert "612345678" not in caplog.text and "6 12 34" not in caplog.text

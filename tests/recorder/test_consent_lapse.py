"""A revocation, or the end of a grant, reaches calls decided under it and not yet captured."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from storage.audit import AuditEvent
from storage.backend import StorageBackend
from tests.recorder.conftest import Clock, Tenant, call_body, make_tenant, tone_wav
from tests.recorder.test_upload_flow import audit_kinds

ACCEPTED = {"accepted": True, "method": "dtmf", "notice_version": "v1"}


def _ask(client: TestClient, tenant: Tenant, call_id: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/calls", json=call_body(call_id, **extra), headers=tenant.integrator)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _revoke(client: TestClient, tenant: Tenant) -> None:
    response = client.post(
        f"/v1/clients/{tenant.id}/consents/{tenant.grant['id']}/revoke",
        json={"reason": "contract ended"},
        headers=tenant.client_admin,
    )
    assert response.status_code == 200, response.text


def _upload(client: TestClient, tenant: Tenant, call_id: str, wav: Path) -> Any:
    return client.put(
        f"/v1/calls/{call_id}/recording",
        content=wav.read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )


def _end_grant(client: TestClient, tenant: Tenant, clock: Clock, how: str) -> str:
    """Revoke the grant, or let it expire; the reason calls decided under it get."""
    if how == "revoked":
        _revoke(client, tenant)
        return "consent_revoked"
    clock.now = clock.now + timedelta(hours=2)  # past the grant's valid_until
    return "consent_expired"


def _tenant(client: TestClient, clock: Clock, notice: str = "announcement") -> Tenant:
    until = (clock.now + timedelta(hours=1)).isoformat()
    return make_tenant(client, notice=notice, valid_until=until)


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_call_awaiting_the_caller_is_not_recorded_once_the_grant_ends(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path, how: str
) -> None:
    tenant = _tenant(client, clock)
    first = _ask(client, tenant, "c-ma", jurisdiction="MA")  # all-party: the caller is asked
    assert (first["record"], first["reason"]) == (True, "awaiting_caller_consent")
    reason = _end_grant(client, tenant, clock, how)

    response = client.post(
        "/v1/calls/c-ma/caller-consent", json=ACCEPTED, headers=tenant.integrator
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["record"], answer["reason"]) == (False, reason)
    assert (answer["awaiting_caller_consent"], answer["upload_url"]) == (False, None)
    assert (answer["decision_id"], answer["grant_id"]) == (first["decision_id"], tenant.grant["id"])

    upload = _upload(client, tenant, "c-ma", tone_wav(tmp_path / "a.wav"))
    assert upload.status_code == 409
    assert upload.json()["error"] == reason
    # Asked again, the hook answers the same; nothing was stored.
    assert (_ask(client, tenant, "c-ma", jurisdiction="MA")["reason"]) == reason
    assert client.get("/v1/recordings", headers=tenant.client_admin).json()["items"] == []
    kinds = audit_kinds(backend)
    assert kinds.count("call.consent_lapsed") == 1
    assert "recording.stored" not in kinds
    with Session(backend.engine) as session:
        event = session.exec(
            select(AuditEvent).where(AuditEvent.kind == "call.consent_lapsed")
        ).one()
    assert (event.subject, json.loads(event.data)["reason"]) == (first["decision_id"], reason)


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_decided_call_cannot_upload_once_the_grant_ends(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path, how: str
) -> None:
    tenant = _tenant(client, clock, notice="contract")
    assert _ask(client, tenant, "c-ny")["reason"] == "recorded"  # one-party: recorded at once
    reason = _end_grant(client, tenant, clock, how)
    upload = _upload(client, tenant, "c-ny", tone_wav(tmp_path / "a.wav"))
    assert upload.status_code == 409
    assert upload.json()["error"] == reason
    assert client.get("/v1/recordings", headers=tenant.client_admin).json()["items"] == []
    assert "call.consent_lapsed" in audit_kinds(backend)


def test_a_captured_call_keeps_the_decision_it_was_recorded_under(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    tenant = _tenant(client, clock, notice="contract")
    _ask(client, tenant, "c-ny")
    assert _upload(client, tenant, "c-ny", tone_wav(tmp_path / "a.wav")).status_code == 201
    _revoke(client, tenant)
    # The decision stays the record of why the audio was kept; one recording per call.
    assert _ask(client, tenant, "c-ny")["reason"] == "recorded"
    again = _upload(client, tenant, "c-ny", tone_wav(tmp_path / "a.wav"))
    assert (again.status_code, again.json()["error"]) == (409, "recording_exists")
    assert "call.consent_lapsed" not in audit_kinds(backend)


def test_a_live_grant_changes_nothing(client: TestClient, clock: Clock, tmp_path: Path) -> None:
    tenant = _tenant(client, clock)
    _ask(client, tenant, "c-ma", jurisdiction="MA")
    clock.now = clock.now + timedelta(minutes=59)  # still inside the grant's window
    response = client.post(
        "/v1/calls/c-ma/caller-consent", json=ACCEPTED, headers=tenant.integrator
    )
    assert (response.json()["record"], response.json()["reason"]) == (True, "recorded")
    assert _upload(client, tenant, "c-ma", tone_wav(tmp_path / "a.wav")).status_code == 201

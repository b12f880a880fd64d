"""The call hook's dry run: the hook's answer, with nothing persisted and nothing audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from storage.backend import StorageBackend
from tests.recorder.conftest import Clock, call_body, make_tenant

# The answer's fields that the call hook gives too.
SHARED = (
    "call_id",
    "record",
    "reason",
    "purposes",
    "expires",
    "announcement_required",
    "awaiting_caller_consent",
    "rule",
    "rule_jurisdiction",
    "grant_id",
    "grant_version",
)


def _tables(backend: StorageBackend) -> tuple[list[Any], list[Any]]:
    """Every decision row and every audit event, as stored."""
    with backend.engine.connect() as connection:
        decisions = connection.execute(sa.text("SELECT * FROM call_decisions ORDER BY id")).all()
        events = connection.execute(sa.text("SELECT * FROM audit_events ORDER BY seq")).all()
    return list(decisions), list(events)


def _post(client: TestClient, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_dry_run_answers_as_the_hook_then_does_without_a_trace(
    client: TestClient, backend: StorageBackend
) -> None:
    tenant = make_tenant(client, notice="announcement")
    cases = [
        call_body("dry-ny"),  # one-party: recorded
        call_body("dry-ma", jurisdiction="MA"),  # all-party: the caller is asked
        {k: v for k, v in call_body("dry-unknown").items() if k != "jurisdiction"},
        call_body("dry-purpose", purposes=["optimization"]),  # not granted
        call_body("dry-one", purposes=["research"]),
    ]
    reasons = set()
    for body in cases:
        before = _tables(backend)
        for headers in (tenant.integrator, tenant.client_admin):
            dry = _post(client, "/v1/calls/dry-run", headers, body)
            assert dry["decided_already"] is None
        assert _tables(backend) == before, f"{body['call_id']}: the dry run left a trace"
        real = _post(client, "/v1/calls", tenant.integrator, body)
        assert {k: dry[k] for k in SHARED} == {k: real[k] for k in SHARED}, body["call_id"]
        reasons.add(real["reason"])
    assert reasons == {"recorded", "awaiting_caller_consent", "purpose_not_granted"}


def test_dry_run_shows_expiry_dates_and_the_rule(client: TestClient, clock: Clock) -> None:
    tenant = make_tenant(client)
    dry = _post(client, "/v1/calls/dry-run", tenant.integrator, call_body("c-exp"))
    assert (dry["record"], dry["reason"], dry["rule"]) == (True, "recorded", "one_party")
    assert dry["rule_jurisdiction"] == "US-NY"
    assert dry["purposes"] == ["improvement", "research"]
    assert dry["grant_id"] == tenant.grant["id"]
    for expiry in dry["expires"].values():
        assert expiry > clock.now.isoformat()


def test_dry_run_of_a_decided_call_names_its_decision(
    client: TestClient, backend: StorageBackend, clock: Clock
) -> None:
    tenant = make_tenant(client, valid_until=(clock.now + timedelta(days=1)).isoformat())
    real = _post(client, "/v1/calls", tenant.integrator, call_body("c-twice"))
    dry = _post(client, "/v1/calls/dry-run", tenant.integrator, call_body("c-twice"))
    assert dry["decided_already"] == real["decision_id"]
    assert {k: dry[k] for k in SHARED} == {k: real[k] for k in SHARED}
    # The grant ends before any audio: the hook would now refuse, and so does the dry run,
    # without writing the lapse down.
    clock.now += timedelta(days=2)
    before = _tables(backend)
    dry = _post(client, "/v1/calls/dry-run", tenant.integrator, call_body("c-twice"))
    assert (dry["record"], dry["reason"]) == (False, "consent_expired")
    assert _tables(backend) == before
    again = _post(client, "/v1/calls", tenant.integrator, call_body("c-twice"))
    assert {k: dry[k] for k in SHARED} == {k: again[k] for k in SHARED}


def test_dry_run_refuses_bad_input_and_other_roles(client: TestClient) -> None:
    tenant = make_tenant(client)
    bad = client.post(
        "/v1/calls/dry-run", json=call_body(**{"from": "not a number"}), headers=tenant.integrator
    )
    assert bad.status_code == 422
    assert set(bad.json()) == {"error", "detail"}
    unknown_field = client.post(
        "/v1/calls/dry-run", json={**call_body(), "extra": 1}, headers=tenant.client_admin
    )
    assert unknown_field.status_code == 422

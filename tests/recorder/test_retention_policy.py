"""Per-client retention overrides: within each purpose's maximum, applied to new decisions."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.recorder.conftest import call_body, make_tenant


def test_override_applies_to_new_decisions(client: TestClient) -> None:
    tenant = make_tenant(client)
    response = client.put(
        "/v1/clients/acme/retention", json={"research": 30}, headers=tenant.client_admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["research"] == 30
    answer = client.post("/v1/calls", json=call_body(), headers=tenant.integrator).json()
    assert answer["expires"]["research"].startswith("2026-12-28")


def test_override_beyond_the_maximum_is_refused(client: TestClient) -> None:
    tenant = make_tenant(client)
    for body, code in (
        ({"research": 10_000}, "retention_out_of_bounds"),
        ({"research": 0}, "retention_out_of_bounds"),
        ({"gossip": 10}, "unknown_purpose"),
    ):
        response = client.put("/v1/clients/acme/retention", json=body, headers=tenant.client_admin)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == code
    bad_type = client.put(
        "/v1/clients/acme/retention", json={"research": "long"}, headers=tenant.client_admin
    )
    assert bad_type.status_code == 422

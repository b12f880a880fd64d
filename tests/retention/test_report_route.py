"""The retention report over HTTP and from the CLI's renderers: formats and scoping."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.recorder.conftest import ADMIN, make_tenant


def test_report_formats(client: TestClient) -> None:
    make_tenant(client)
    as_json = client.get("/v1/reports/retention?verify_audit=true", headers=ADMIN)
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert body["audit"]["ok"] is True
    as_csv = client.get("/v1/reports/retention?format=csv", headers=ADMIN)
    assert as_csv.headers["content-type"].startswith("text/csv")
    as_html = client.get("/v1/reports/retention?format=html", headers=ADMIN)
    assert as_html.headers["content-type"].startswith("text/html")
    assert "<svg" in as_html.text
    assert client.get("/v1/reports/retention?format=pdf", headers=ADMIN).status_code == 422


def test_a_client_admin_sees_only_its_own_client(client: TestClient) -> None:
    acme = make_tenant(client, "acme")
    make_tenant(client, "other")
    own = client.get("/v1/reports/retention", headers=acme.client_admin)
    assert own.status_code == 200
    assert own.json()["client_id"] == "acme"
    spied = client.get("/v1/reports/retention?client_id=other", headers=acme.client_admin)
    assert spied.status_code == 404
    assert client.get("/v1/reports/retention", headers=acme.integrator).status_code == 403


def test_the_audit_chain_is_walked_unless_told_not_to(client: TestClient) -> None:
    make_tenant(client)
    walked = client.get("/v1/reports/retention", headers=ADMIN).json()
    assert walked["audit"]["checked"] is True and walked["audit"]["ok"] is True
    assert walked["checks"]["audit_chain"] is True
    skipped = client.get("/v1/reports/retention?verify_audit=false", headers=ADMIN).json()
    assert skipped["audit"]["checked"] is False and skipped["checks"]["audit_chain"] is None


def test_an_unknown_client_is_not_an_empty_report(client: TestClient) -> None:
    make_tenant(client)
    response = client.get("/v1/reports/retention?client_id=nobody", headers=ADMIN)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"

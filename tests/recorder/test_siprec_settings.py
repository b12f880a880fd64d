"""``PUT``/``GET /v1/clients/{client}/siprec``: a client's SIPREC settings over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from storage.audit import AuditEvent
from storage.backend import StorageBackend
from tests.recorder.conftest import ADMIN, make_tenant

PATH = "/v1/clients/acme/siprec"


def _siprec_events(backend: StorageBackend) -> list[AuditEvent]:
    with Session(backend.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.kind == "client.siprec_set")))


def test_settings_are_set_whole_and_read_back(client: TestClient, backend: StorageBackend) -> None:
    make_tenant(client)
    default = client.get(PATH, headers=ADMIN)
    assert (default.status_code, default.json()) == (
        200,
        {"client_id": "acme", "networks": [], "jurisdiction": None},
    )
    body = {"networks": ["10.20.30.40/16", "::ffff:192.0.2.0/120"], "jurisdiction": "us-ca"}
    put = client.put(PATH, json=body, headers=ADMIN)
    expected = {
        "client_id": "acme",
        "networks": ["10.20.0.0/16", "::ffff:c000:200/120"],
        "jurisdiction": "US-CA",
    }
    assert (put.status_code, put.json()) == (200, expected)
    assert client.get(PATH, headers=ADMIN).json() == expected
    # Replaced whole: a body without a jurisdiction clears it.
    cleared = client.put(PATH, json={"networks": ["192.0.2.1"]}, headers=ADMIN).json()
    assert cleared == {"client_id": "acme", "networks": ["192.0.2.1/32"], "jurisdiction": None}
    events = _siprec_events(backend)
    assert [json.loads(e.data)["jurisdiction"] for e in events] == ["US-CA", None]
    assert {e.client_id for e in events} == {"acme"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"networks": ["10.0.0.0/33"]}, "invalid_network"),
        ({"networks": ["fe80::1%eth0/64"]}, "invalid_network"),
        ({"networks": [], "jurisdiction": "Morocco"}, "invalid_jurisdiction"),
        ({"networks": "10.0.0.0/8"}, "invalid_request"),
        ({"jurisdiction": "MA"}, "invalid_request"),
        ({"networks": [], "extra": 1}, "invalid_request"),
        ({"networks": [f"10.0.{i}.0/24" for i in range(101)]}, "invalid_request"),
    ],
)
def test_bad_settings_get_422_and_change_nothing(
    client: TestClient, backend: StorageBackend, body: dict[str, Any], code: str
) -> None:
    make_tenant(client)
    before = client.put(PATH, json={"networks": ["192.0.2.0/24"]}, headers=ADMIN).json()
    answer = client.put(PATH, json=body, headers=ADMIN)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == code and answer.json()["detail"]
    assert client.get(PATH, headers=ADMIN).json() == before
    assert len(_siprec_events(backend)) == 1


def test_unknown_and_offboarded_clients(client: TestClient) -> None:
    for method in ("GET", "PUT"):
        answer = client.request(
            method, "/v1/clients/nobody/siprec", json={"networks": []}, headers=ADMIN
        )
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found"), method
    make_tenant(client)
    client.put(PATH, json={"networks": ["192.0.2.0/24"]}, headers=ADMIN)
    assert client.post("/v1/clients/acme/offboard", headers=ADMIN).status_code == 200
    refused = client.put(PATH, json={"networks": []}, headers=ADMIN)
    assert (refused.status_code, refused.json()["error"]) == (409, "client_inactive")
    # What was set is still there to read, for the record.
    assert client.get(PATH, headers=ADMIN).json()["networks"] == ["192.0.2.0/24"]


def test_only_an_admin_sets_or_reads_them(client: TestClient) -> None:
    tenant = make_tenant(client)
    for headers in (tenant.client_admin, tenant.integrator):
        assert client.get(PATH, headers=headers).status_code == 403
        put = client.put(PATH, json={"networks": ["0.0.0.0/0"]}, headers=headers)
        assert put.status_code == 403
    assert client.get(PATH, headers=ADMIN).json()["networks"] == []

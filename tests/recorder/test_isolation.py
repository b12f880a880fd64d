"""Role × tenant × route: who may do what, and another tenant's ids look like nobody's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.recorder.conftest import ADMIN, auth, call_body, make_tenant, tone_wav

GRANT = {
    "purposes": ["research"],
    "notice": "contract",
    "granted_by": "DPO",
    "evidence": "contract #7",
}

# principal: admin, compliance, acme client_admin / integrator, other's, no key, bad key
WHO = ("admin", "compliance", "acme_ca", "acme_int", "other_ca", "other_int", "none", "bad")


def _expect(*codes: int) -> dict[str, int]:
    return dict(zip(WHO, codes, strict=True))


def test_role_tenant_route_matrix(client: TestClient, tmp_path: Path) -> None:
    acme = make_tenant(client, "acme")
    other = make_tenant(client, "other")
    compliance = client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN).json()
    headers: dict[str, dict[str, str]] = {
        "admin": ADMIN,
        "compliance": auth(compliance["key"]),
        "acme_ca": acme.client_admin,
        "acme_int": acme.integrator,
        "other_ca": other.client_admin,
        "other_int": other.integrator,
        "none": {},
        "bad": auth("crk_nope_nope"),
    }
    assert client.post("/v1/calls", json=call_body(), headers=acme.integrator).json()["record"]
    upload = client.put(
        "/v1/calls/call-1/recording",
        content=tone_wav(tmp_path / "a.wav").read_bytes(),
        headers={**acme.integrator, "Content-Type": "audio/wav"},
    )
    assert upload.status_code == 201, upload.text
    rec = upload.json()["id"]

    cases: list[tuple[str, str, Any, dict[str, int]]] = [
        ("POST", "/v1/clients", "new-client", _expect(201, 403, 403, 403, 403, 403, 401, 401)),
        (
            "POST",
            "/v1/clients/acme/api-keys",
            {"role": "integrator"},
            _expect(201, 403, 403, 403, 403, 403, 401, 401),
        ),
        (
            "POST",
            "/v1/api-keys",
            {"role": "compliance"},
            _expect(201, 403, 403, 403, 403, 403, 401, 401),
        ),
        ("GET", "/v1/clients/acme", None, _expect(200, 200, 200, 403, 404, 403, 401, 401)),
        (
            "POST",
            "/v1/clients/acme/consents",
            GRANT,
            _expect(201, 403, 201, 403, 404, 403, 401, 401),
        ),
        ("GET", "/v1/clients/acme/consents", None, _expect(200, 200, 200, 403, 404, 403, 401, 401)),
        (
            "PUT",
            "/v1/clients/acme/retention",
            {"research": 30},
            _expect(200, 403, 200, 403, 404, 403, 401, 401),
        ),
        ("POST", "/v1/calls", "new-call", _expect(403, 403, 403, 200, 403, 200, 401, 401)),
        ("POST", "/v1/calls/call-1/pause", None, _expect(403, 403, 403, 200, 403, 404, 401, 401)),
        ("GET", "/v1/recordings", None, _expect(200, 200, 200, 403, 200, 403, 401, 401)),
        ("GET", f"/v1/recordings/{rec}", None, _expect(200, 200, 200, 403, 404, 403, 401, 401)),
        (
            "GET",
            f"/v1/recordings/{rec}/audio",
            None,
            _expect(200, 200, 200, 403, 404, 403, 401, 401),
        ),
        (
            "PUT",
            "/v1/calls/call-1/recording",
            "wav",
            _expect(403, 403, 403, 409, 403, 404, 401, 401),
        ),
    ]
    wrong: list[str] = []
    serial = 0
    for method, path, body, expected in cases:
        for who, status in expected.items():
            serial += 1
            kwargs: dict[str, Any] = {"headers": dict(headers[who])}
            if body == "new-client":
                kwargs["json"] = {"id": f"c{serial}", "name": "C", "country": "MA"}
            elif body == "new-call":
                kwargs["json"] = call_body(call_id=f"call-x{serial}")
            elif body == "wav":
                kwargs["content"] = tone_wav(tmp_path / f"{serial}.wav").read_bytes()
                kwargs["headers"]["Content-Type"] = "audio/wav"
            elif body is not None:
                kwargs["json"] = body
            response = client.request(method, path, **kwargs)
            if response.status_code != status:
                wrong.append(f"{who} {method} {path}: {response.status_code} != {status}")
            elif status >= 400:
                assert set(response.json()) == {"error", "detail"}, response.text
    assert not wrong, "\n".join(wrong)

    # A client_admin lists only its own client's recordings.
    listed = client.get("/v1/recordings", headers=other.client_admin).json()
    assert listed["items"] == []
    spied = client.get("/v1/recordings?client_id=acme", headers=other.client_admin)
    assert spied.status_code == 404

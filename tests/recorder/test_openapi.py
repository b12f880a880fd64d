"""The OpenAPI document tells the truth, and ``/docs`` needs nothing from the internet."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.recorder.conftest import ADMIN, make_tenant

ERROR_REF = "#/components/schemas/Error"


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def test_every_error_is_documented_with_the_error_shape(schema: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "detail"]
    for method, path, operation in _operations(schema):
        codes = {int(code) for code in operation["responses"]}
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == ERROR_REF, f"{method} {path} {code}"
        if path.startswith("/v1/"):
            assert {401, 403, 503} <= codes, f"{method} {path}: {sorted(codes)}"
        if "{" in path:
            assert 404 in codes, f"{method} {path}"
        if "requestBody" in operation:
            assert {404, 422} <= codes, f"{method} {path}"


def test_routes_that_take_a_key_name_the_bearer_scheme(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>`.",
    }
    for method, path, operation in _operations(schema):
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert "authorization" not in names, f"{method} {path}"
        if path.startswith("/v1/"):
            assert operation["security"] == [{"bearer": []}], f"{method} {path}"
        else:
            assert "security" not in operation, f"{method} {path}"


def test_the_upload_documents_its_binary_body(schema: dict[str, Any]) -> None:
    upload = schema["paths"]["/v1/calls/{call_id}/recording"]["put"]
    content = upload["requestBody"]["content"]
    assert {"audio/wav", "audio/mpeg", "audio/ogg", "audio/flac"} <= set(content)
    for media in content.values():
        assert media["schema"] == {"type": "string", "format": "binary"}
    assert {"413", "415", "409"} <= set(upload["responses"])


def test_docs_are_served_from_callrec_itself(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert not re.search(r"(https?:)?//[a-z]", html), "the page loads something from outside"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 0
    assert "'/openapi.json'" in html or '"/openapi.json"' in html


def _is_error(body: Any) -> bool:
    if not (isinstance(body, dict) and set(body) == {"error", "detail"}):
        return False
    detail = body["detail"]
    if isinstance(detail, str):
        return True
    return isinstance(detail, list) and all(
        isinstance(p, dict) and set(p) == {"loc", "msg"} for p in detail
    )


def test_validation_errors_have_the_documented_shape(client: TestClient) -> None:
    acme = make_tenant(client, "acme")
    answers = [
        client.post(
            "/v1/subject-requests",
            json={"client_id": "acme", "kind": "erasure", "phone": "not a number"},
            headers=acme.client_admin,
        ),
        client.post("/v1/clients", json={"id": "Bad Slug!"}, headers=ADMIN),
        client.post("/v1/calls", json={"call_id": ""}, headers=acme.integrator),
        client.post(
            "/v1/clients",
            content=b"{not json",
            headers={**ADMIN, "Content-Type": "application/json"},
        ),
    ]
    for response in answers:
        assert response.status_code in (400, 422), response.text
        assert _is_error(response.json()), response.text


BAD_BODIES: list[bytes] = [b"{not json", b'{"id": "x"}', b"\xff\xfe", b"[]"]


@pytest.mark.parametrize("body", BAD_BODIES, ids=["malformed", "invalid", "not-utf8", "array"])
def test_the_key_and_role_are_checked_before_the_body(client: TestClient, body: bytes) -> None:
    acme = make_tenant(client, "acme")
    json_type = {"Content-Type": "application/json"}
    cases = [
        ("POST", "/v1/clients", acme.integrator, 403),
        ("POST", "/v1/api-keys", acme.client_admin, 403),
        ("POST", "/v1/clients/acme/consents", acme.integrator, 403),
        ("POST", "/v1/legal-holds", acme.integrator, 403),
        ("POST", "/v1/calls", acme.client_admin, 403),
        ("POST", "/v1/calls", ADMIN, 403),
        ("POST", "/v1/calls/call-1/caller-consent", ADMIN, 403),
        ("POST", "/v1/clients", {}, 401),
        ("POST", "/v1/calls", {}, 401),
        ("POST", "/v1/calls", {"Authorization": "Bearer crk_no_such_key"}, 401),
    ]
    wrong = []
    for method, path, headers, expected in cases:
        response = client.request(method, path, content=body, headers={**headers, **json_type})
        if response.status_code != expected or not _is_error(response.json()):
            wrong.append(f"{method} {path}: {response.status_code} {response.text[:80]}")
    assert not wrong, "\n".join(wrong)


def test_every_field_is_described(schema: dict[str, Any]) -> None:
    undescribed = [
        f"{name}.{field}"
        for name, component in sorted(schema["components"]["schemas"].items())
        for field, spec in component.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert not undescribed, undescribed

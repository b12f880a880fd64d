"""Role × tenant × route: every route, with every role's key, on its own and another's ids.

The table below is the contract of docs/http-api.md (Roles, Routes). The test lists the
routes the app serves and fails on any that the table does not name, so a new route
gets its line here on purpose. Every cell is one request: exactly the allowed cells
succeed; the others get 401 (no key), 403 (the role may not) or 404 (another client's
id); and no answer to a client-bound key carries anything of the other client.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from fastapi.testclient import TestClient

from recorder.openapi import api_routes
from tests.recorder.conftest import ADMIN, Tenant, auth, call_body, make_tenant, tone_wav

# "none" sends no key, "revoked" a key that was issued and then revoked.
ROLES = ("admin", "compliance", "client_admin", "integrator", "none", "revoked")
BOUND = frozenset({"client_admin", "integrator"})
STAFF = frozenset({"admin", "compliance"})
ANYONE = frozenset(ROLES)
ANY_KEY = frozenset(ROLES) - {"none", "revoked"}


@dataclass
class World:
    """Two tenants with keys, a grant, a stored recording, a hold and an access request."""

    client: TestClient
    tmp_path: Path
    tenants: dict[str, Tenant]
    compliance: dict[str, str]
    revoked: dict[str, str]
    recordings: dict[str, str] = field(default_factory=dict)
    calls: dict[str, str] = field(default_factory=dict)
    holds: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    serial: itertools.count[int] = field(default_factory=itertools.count)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.serial)}"

    def ok(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json()

    def new_call(self, tenant: str, **extra: Any) -> str:
        call_id = self.fresh(f"call-{tenant}")
        decision = self.ok(
            "POST",
            "/v1/calls",
            self.tenants[tenant].integrator,
            json=call_body(call_id, **extra),
        )
        assert decision["record"] or decision["awaiting_caller_consent"], decision
        return call_id

    def wav(self) -> bytes:
        return tone_wav(self.tmp_path / f"{self.fresh('tone')}.wav", seconds=0.5).read_bytes()


# A request for one cell: (path, keyword arguments) for a tenant's ids.
Build = Callable[[World, str], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Rule:
    """Who may call a route, what success looks like, and how to build its request."""

    roles: frozenset[str]
    success: int
    build: Build
    # Whether the target names a client, so a client-bound key on another's gets 404.
    scoped: bool = True


def _plain(path: str, **kwargs: Any) -> Build:
    return lambda _world, _tenant: (path, kwargs)


def _fresh_client(world: World, _tenant: str) -> tuple[str, dict[str, Any]]:
    client_id = world.fresh("gone")
    world.ok("POST", "/v1/clients", ADMIN, json={"id": client_id, "name": "Gone", "country": "MA"})
    return f"/v1/clients/{client_id}/offboard", {}


def _fresh_key(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    key = world.ok("POST", f"/v1/clients/{tenant}/api-keys", ADMIN, json={"role": "integrator"})
    return f"/v1/api-keys/{key['id']}", {}


GRANT = {"purposes": ["research"], "notice": "contract", "granted_by": "DPO", "evidence": "#7"}


def _fresh_grant(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    grant = world.ok("POST", f"/v1/clients/{tenant}/consents", ADMIN, json=GRANT)
    body = {"reason": "ended", "purge_existing": False}
    return f"/v1/clients/{tenant}/consents/{grant['id']}/revoke", {"json": body}


# Never sent anywhere: nothing listens on port 9 (discard) of a documentation address.
WEBHOOK = {"url": "http://192.0.2.1:9/hooks", "events": ["recording.stored"]}


def _fresh_webhook(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    endpoint = world.ok("POST", f"/v1/clients/{tenant}/webhooks", ADMIN, json=WEBHOOK)
    return f"/v1/clients/{tenant}/webhooks/{endpoint['id']}", {}


def _awaiting_call(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    call_id = world.new_call(tenant, jurisdiction="MA")  # all-party: the caller is asked
    body = {"accepted": True, "method": "dtmf", "notice_version": "v1"}
    return f"/v1/calls/{call_id}/caller-consent", {"json": body}


def _open_call(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    return f"/v1/calls/{world.new_call(tenant)}/pause", {}


def _upload(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    call_id = world.new_call(tenant)
    kwargs = {"content": world.wav(), "headers": {"Content-Type": "audio/wav"}}
    return f"/v1/calls/{call_id}/recording", kwargs


def _offer() -> str:
    """A real WebRTC offer with one audio track, as a publisher makes it."""

    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def _whip_decision(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    body = call_body(world.fresh(f"webrtc-{tenant}"), channel="whip")
    decision = world.ok("POST", "/v1/calls", world.tenants[tenant].integrator, json=body)
    kwargs = {"content": _offer(), "headers": {"Content-Type": "application/sdp"}}
    return str(decision["whip_url"]), kwargs


def _whip_session(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    url, kwargs = _whip_decision(world, tenant)
    headers = {**kwargs.pop("headers"), **world.tenants[tenant].integrator}
    response = world.client.post(url, headers=headers, **kwargs)
    assert response.status_code == 201, response.text
    return response.headers["location"], {}


def _fresh_hold(world: World, tenant: str) -> tuple[str, dict[str, Any]]:
    body = {"reason": "case", "recording_ids": [world.recordings[tenant]]}
    hold = world.ok("POST", "/v1/legal-holds", world.compliance, json=body)
    return f"/v1/legal-holds/{hold['id']}", {}


def _new_call_hook(world: World, _tenant: str) -> tuple[str, dict[str, Any]]:
    return "/v1/calls", {"json": call_body(world.fresh("hook"))}


def _new_client(world: World, _tenant: str) -> tuple[str, dict[str, Any]]:
    return "/v1/clients", {"json": {"id": world.fresh("new"), "name": "N", "country": "MA"}}


def _ids(attribute: str, template: str) -> Build:
    return lambda world, tenant: (template.format(getattr(world, attribute)[tenant]), {})


def _for_client(template: str, **kwargs: Any) -> Build:
    return lambda _world, tenant: (template.format(tenant), kwargs)


TABLE: dict[tuple[str, str], Rule] = {
    ("POST", "/v1/clients"): Rule(frozenset({"admin"}), 201, _new_client, scoped=False),
    ("GET", "/v1/clients"): Rule(STAFF, 200, _plain("/v1/clients"), scoped=False),
    ("GET", "/v1/clients/{client}"): Rule(
        STAFF | {"client_admin"}, 200, _for_client("/v1/clients/{}")
    ),
    ("POST", "/v1/clients/{client}/offboard"): Rule(frozenset({"admin"}), 200, _fresh_client),
    ("POST", "/v1/clients/{client}/api-keys"): Rule(
        frozenset({"admin"}),
        201,
        _for_client("/v1/clients/{}/api-keys", json={"role": "integrator"}),
    ),
    ("POST", "/v1/api-keys"): Rule(
        frozenset({"admin"}), 201, _plain("/v1/api-keys", json={"role": "compliance"}), scoped=False
    ),
    ("DELETE", "/v1/api-keys/{key_id}"): Rule(frozenset({"admin"}), 200, _fresh_key),
    ("POST", "/v1/clients/{client}/consents"): Rule(
        frozenset({"admin", "client_admin"}),
        201,
        _for_client("/v1/clients/{}/consents", json=GRANT),
    ),
    ("POST", "/v1/clients/{client}/consents/{grant}/revoke"): Rule(
        frozenset({"admin", "client_admin"}), 200, _fresh_grant
    ),
    ("GET", "/v1/clients/{client}/consents"): Rule(
        STAFF | {"client_admin"}, 200, _for_client("/v1/clients/{}/consents")
    ),
    ("PUT", "/v1/clients/{client}/retention"): Rule(
        frozenset({"admin", "client_admin"}),
        200,
        _for_client("/v1/clients/{}/retention", json={"research": 30}),
    ),
    ("PUT", "/v1/clients/{client}/siprec"): Rule(
        frozenset({"admin"}),
        200,
        _for_client("/v1/clients/{}/siprec", json={"networks": ["192.0.2.0/24"]}),
    ),
    ("GET", "/v1/clients/{client}/siprec"): Rule(
        frozenset({"admin"}), 200, _for_client("/v1/clients/{}/siprec")
    ),
    ("POST", "/v1/clients/{client}/webhooks"): Rule(
        frozenset({"admin", "client_admin"}),
        201,
        _for_client("/v1/clients/{}/webhooks", json=WEBHOOK),
    ),
    ("GET", "/v1/clients/{client}/webhooks"): Rule(
        frozenset({"admin", "client_admin"}), 200, _for_client("/v1/clients/{}/webhooks")
    ),
    ("DELETE", "/v1/clients/{client}/webhooks/{webhook_id}"): Rule(
        frozenset({"admin", "client_admin"}), 200, _fresh_webhook
    ),
    ("GET", "/v1/purposes"): Rule(ANY_KEY, 200, _plain("/v1/purposes"), scoped=False),
    # Call routes: the client is the key's own; no admin (docs/http-api.md, Roles).
    ("POST", "/v1/calls"): Rule(frozenset({"integrator"}), 200, _new_call_hook, scoped=False),
    ("POST", "/v1/calls/dry-run"): Rule(
        BOUND,
        200,
        lambda world, _t: ("/v1/calls/dry-run", {"json": call_body(world.fresh("dry"))}),
        scoped=False,
    ),
    ("POST", "/v1/calls/{call_id}/caller-consent"): Rule(
        frozenset({"integrator"}), 200, _awaiting_call
    ),
    ("POST", "/v1/calls/{call_id}/{action}"): Rule(frozenset({"integrator"}), 200, _open_call),
    ("PUT", "/v1/calls/{call_id}/recording"): Rule(frozenset({"integrator"}), 201, _upload),
    ("POST", "/v1/whip/{decision_id}"): Rule(frozenset({"integrator"}), 201, _whip_decision),
    ("DELETE", "/v1/whip/sessions/{session_id}"): Rule(
        frozenset({"integrator"}), 200, _whip_session
    ),
    # Never offered, to a key that may publish: 405 whoever's session it names.
    ("PATCH", "/v1/whip/sessions/{session_id}"): Rule(
        frozenset({"integrator"}), 405, _plain("/v1/whip/sessions/whip_any"), scoped=False
    ),
    ("GET", "/v1/recordings"): Rule(
        STAFF | {"client_admin"}, 200, _for_client("/v1/recordings?client_id={}")
    ),
    ("GET", "/v1/recordings/{recording_id}"): Rule(
        STAFF | {"client_admin"}, 200, _ids("recordings", "/v1/recordings/{}")
    ),
    ("GET", "/v1/recordings/{recording_id}/audio"): Rule(
        STAFF | {"client_admin"}, 200, _ids("recordings", "/v1/recordings/{}/audio")
    ),
    ("GET", "/v1/recordings/{recording_id}/evidence"): Rule(
        STAFF | {"client_admin"}, 200, _ids("recordings", "/v1/recordings/{}/evidence")
    ),
    ("POST", "/v1/evidence/lookup"): Rule(
        STAFF | {"client_admin"},
        200,
        lambda _world, tenant: (
            "/v1/evidence/lookup",
            {"json": {"client_id": tenant, "phone": "+212612345678"}},
        ),
    ),
    ("POST", "/v1/evidence/packs"): Rule(
        STAFF,
        200,
        lambda _world, tenant: (
            "/v1/evidence/packs",
            {"json": {"client_id": tenant, "from": "2026-11-01", "to": "2026-12-01"}},
        ),
    ),
    ("GET", "/v1/evidence/signing-key"): Rule(
        STAFF, 200, _plain("/v1/evidence/signing-key"), scoped=False
    ),
    ("POST", "/v1/legal-holds"): Rule(
        STAFF,
        201,
        lambda world, tenant: (
            "/v1/legal-holds",
            {"json": {"reason": "case", "recording_ids": [world.recordings[tenant]]}},
        ),
    ),
    ("GET", "/v1/legal-holds"): Rule(STAFF, 200, _for_client("/v1/legal-holds?client_id={}")),
    ("GET", "/v1/legal-holds/{hold_id}"): Rule(STAFF, 200, _ids("holds", "/v1/legal-holds/{}")),
    ("DELETE", "/v1/legal-holds/{hold_id}"): Rule(STAFF, 200, _fresh_hold),
    ("POST", "/v1/subject-requests"): Rule(
        STAFF | {"client_admin"},
        201,
        lambda _world, tenant: (
            "/v1/subject-requests",
            {"json": {"client_id": tenant, "kind": "access", "phone": "+212612345678"}},
        ),
    ),
    ("GET", "/v1/subject-requests/{request_id}"): Rule(
        STAFF | {"client_admin"}, 200, _ids("requests", "/v1/subject-requests/{}")
    ),
    ("GET", "/v1/subject-requests/{request_id}/export"): Rule(
        STAFF | {"client_admin"}, 200, _ids("requests", "/v1/subject-requests/{}/export")
    ),
    ("GET", "/v1/reports/retention"): Rule(
        STAFF | {"client_admin"}, 200, _for_client("/v1/reports/retention?client_id={}")
    ),
    ("GET", "/v1/audit"): Rule(STAFF, 200, _for_client("/v1/audit?client_id={}")),
    ("GET", "/v1/audit/verify"): Rule(STAFF, 200, _plain("/v1/audit/verify"), scoped=False),
    ("GET", "/healthz"): Rule(ANYONE, 200, _plain("/healthz"), scoped=False),
    ("GET", "/readyz"): Rule(ANYONE, 200, _plain("/readyz"), scoped=False),
    ("GET", "/metrics"): Rule(ANYONE, 200, _plain("/metrics"), scoped=False),
    ("GET", "/docs"): Rule(ANYONE, 200, _plain("/docs"), scoped=False),
}


def expected(rule: Rule, role: str, own: bool) -> int:
    if role not in rule.roles:
        return 401 if role in ("none", "revoked") else 403
    if role in BOUND and rule.scoped and not own:
        return 404
    return rule.success


def _world(client: TestClient, tmp_path: Path) -> World:
    tenants = {
        name: make_tenant(client, name, notice="announcement", purposes=["research"])
        for name in ("acme", "globex")
    }
    compliance = auth(
        client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN).json()["key"]
    )
    issued = client.post(
        "/v1/clients/acme/api-keys", json={"role": "client_admin"}, headers=ADMIN
    ).json()
    assert client.delete(f"/v1/api-keys/{issued['id']}", headers=ADMIN).status_code == 200
    world = World(client, tmp_path, tenants, compliance, auth(issued["key"]))
    for name, tenant in tenants.items():
        call_id = world.new_call(name)
        stored = world.ok(
            "PUT",
            f"/v1/calls/{call_id}/recording",
            {**tenant.integrator, "Content-Type": "audio/wav"},
            content=world.wav(),
        )
        world.calls[name], world.recordings[name] = call_id, stored["id"]
        body = {"reason": "case", "recording_ids": [stored["id"]]}
        world.holds[name] = world.ok("POST", "/v1/legal-holds", compliance, json=body)["id"]
        body = {"client_id": name, "kind": "access", "phone": "+212612345678"}
        request = world.ok("POST", "/v1/subject-requests", tenant.client_admin, json=body)
        world.requests[name] = request["id"]
    return world


def _headers(world: World, role: str) -> dict[str, str]:
    acme = world.tenants["acme"]
    return {
        "admin": ADMIN,
        "compliance": world.compliance,
        "client_admin": acme.client_admin,
        "integrator": acme.integrator,
        "none": {},
        "revoked": world.revoked,
    }[role]


def test_every_served_route_is_in_the_table(client: TestClient) -> None:
    served = {
        (method, route.path_format)
        for route in api_routes(client.app.routes)  # type: ignore[attr-defined]
        for method in route.methods or ()
        if method != "HEAD"
    }
    served.discard(("GET", "/openapi.json"))  # not an API route, but served: see below
    assert served - set(TABLE) == set(), "routes with no line in TABLE"
    assert set(TABLE) - served == set(), "lines in TABLE for routes that are gone"
    assert client.get("/openapi.json").status_code == 200


def test_role_tenant_route_matrix(client: TestClient, tmp_path: Path) -> None:
    world = _world(client, tmp_path)
    other = world.tenants["globex"]
    secrets_of_other = {
        "globex",
        world.recordings["globex"],
        world.calls["globex"],
        world.requests["globex"],
        world.holds["globex"],
    }
    wrong: list[str] = []
    cells = 0
    for (method, _template), rule in TABLE.items():
        for role, own in itertools.product(ROLES, (True, False)):
            path, kwargs = rule.build(world, "acme" if own else "globex")
            headers = {**kwargs.pop("headers", {}), **_headers(world, role)}
            response = client.request(method, path, headers=headers, **kwargs)
            cells += 1
            want = expected(rule, role, own)
            where = f"{role} on {'own' if own else 'other'}: {method} {path}"
            if response.status_code != want:
                wrong.append(f"{where} → {response.status_code}, not {want}: {response.text[:120]}")
                continue
            if want >= 400:
                assert set(response.json()) == {"error", "detail"}, where
            elif role in BOUND and response.headers["content-type"].startswith("application/json"):
                leaked = [s for s in secrets_of_other if s in response.text]
                if leaked:
                    wrong.append(f"{where} shows the other client's {leaked}")
    assert not wrong, "\n".join(wrong)
    assert cells == len(TABLE) * len(ROLES) * 2

    # No event about the other client was caused by a key of this one.
    acme_actors = {
        _actor(h) for h in (world.tenants["acme"].client_admin, world.tenants["acme"].integrator)
    }
    events = client.get("/v1/audit?client_id=globex&limit=1000", headers=world.compliance).json()
    assert events["items"], "the other client has events of its own"
    assert not [e for e in events["items"] if e["actor"] in acme_actors]
    # Unfiltered lists of a client-bound key hold its own client's items only.
    for path in ("/v1/recordings", "/v1/reports/retention"):
        listed = client.get(path, headers=world.tenants["acme"].client_admin)
        assert listed.status_code == 200
        assert not [s for s in secrets_of_other if s in listed.text], path
    recording = client.get(
        f"/v1/recordings/{world.recordings['globex']}", headers=other.client_admin
    )
    assert recording.json()["state"] == "stored"


def _actor(headers: dict[str, str]) -> str:
    """The audit actor of a key: ``crk_<key id>_<secret>`` acts as ``key:<key id>``."""
    key = headers["Authorization"].removeprefix("Bearer ")
    return "key:" + key.removeprefix("crk_").split("_", 1)[0]

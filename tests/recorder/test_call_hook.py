"""The call hook over HTTP: reason codes, caller consent, call states, fail closed."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from consent.objections import add_objection
from consent.phones import hash_phone
from storage.backend import StorageBackend
from storage.db import create_db_engine, session_scope
from tests.recorder.conftest import ADMIN, Clock, call_body, make_tenant, tone_wav
from tests.recorder.test_upload_flow import audit_kinds


def _ask(client: TestClient, headers: dict[str, str], **extra: object) -> dict[str, object]:
    response = client.post("/v1/calls", json=call_body(**extra), headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_one_party_call_is_recorded(client: TestClient) -> None:
    tenant = make_tenant(client)
    answer = _ask(client, tenant.integrator)
    assert (answer["record"], answer["reason"], answer["rule"]) == (True, "recorded", "one_party")
    assert answer["rule_jurisdiction"] == "US-NY"
    assert answer["grant_id"] == tenant.grant["id"]


def test_asking_twice_returns_the_first_decision(client: TestClient) -> None:
    tenant = make_tenant(client)
    assert _ask(client, tenant.integrator) == _ask(client, tenant.integrator)


def test_all_party_call_waits_for_the_caller(client: TestClient, tmp_path: Path) -> None:
    tenant = make_tenant(client, notice="announcement")
    answer = _ask(client, tenant.integrator, jurisdiction="MA")
    assert answer["record"] is True
    assert answer["reason"] == "awaiting_caller_consent"
    assert answer["awaiting_caller_consent"] is True
    assert answer["announcement_required"] is True
    upload = client.put(
        "/v1/calls/call-1/recording",
        content=tone_wav(tmp_path / "a.wav").read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert upload.status_code == 409
    assert upload.json()["error"] == "awaiting_caller_consent"
    consent = {"accepted": True, "method": "dtmf", "notice_version": "v1"}
    response = client.post(
        "/v1/calls/call-1/caller-consent", json=consent, headers=tenant.integrator
    )
    assert response.status_code == 200, response.text
    assert (response.json()["reason"], response.json()["record"]) == ("recorded", True)
    again = client.post("/v1/calls/call-1/caller-consent", json=consent, headers=tenant.integrator)
    assert again.status_code == 409


def test_caller_declines(client: TestClient) -> None:
    tenant = make_tenant(client, notice="announcement")
    _ask(client, tenant.integrator, jurisdiction=None)  # unknown jurisdiction: all-party
    consent = {"accepted": False, "method": "speech", "notice_version": "v1"}
    response = client.post(
        "/v1/calls/call-1/caller-consent", json=consent, headers=tenant.integrator
    )
    assert (response.json()["record"], response.json()["reason"]) == (False, "caller_declined")


def test_contract_notice_cannot_serve_an_all_party_call(client: TestClient) -> None:
    tenant = make_tenant(client, notice="contract")
    answer = _ask(client, tenant.integrator, jurisdiction="US-CA")
    assert (answer["record"], answer["reason"]) == (False, "announcement_required")


def test_revoked_consent_stops_recording_at_once(client: TestClient) -> None:
    tenant = make_tenant(client)
    response = client.post(
        f"/v1/clients/acme/consents/{tenant.grant['id']}/revoke",
        json={"reason": "contract ended", "purge_existing": False},
        headers=tenant.client_admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "revoked"
    answer = _ask(client, tenant.integrator)
    assert (answer["record"], answer["reason"]) == (False, "consent_revoked")


def test_expired_consent(client: TestClient, clock: Clock) -> None:
    valid_until = (clock.now + timedelta(days=1)).isoformat()
    tenant = make_tenant(client, valid_until=valid_until)
    clock.now += timedelta(days=2)
    answer = _ask(client, tenant.integrator)
    assert (answer["record"], answer["reason"]) == (False, "consent_expired")


def test_purpose_not_granted(client: TestClient) -> None:
    tenant = make_tenant(client)
    answer = _ask(client, tenant.integrator, purposes=["optimization"])
    assert (answer["record"], answer["reason"]) == (False, "purpose_not_granted")


def test_out_of_scope(client: TestClient) -> None:
    tenant = make_tenant(client, scope={"directions": ["outbound"], "channels": ["upload"]})
    answer = _ask(client, tenant.integrator, direction="inbound")
    assert (answer["record"], answer["reason"]) == (False, "out_of_scope")


def test_subject_objection(client: TestClient, backend: StorageBackend, now: datetime) -> None:
    tenant = make_tenant(client)
    with session_scope(backend.engine) as session:
        add_objection(
            session,
            client_id="acme",
            phone_hash=hash_phone(backend.keyring.derive("phone-hash"), "+212 6 12 34 56 78"),
            source="test",
            actor="test",
            audit=backend.audit,
            now=now,
        )
    answer = _ask(client, tenant.integrator)
    assert (answer["record"], answer["reason"]) == (False, "subject_objection")


def test_offboarded_client(client: TestClient) -> None:
    tenant = make_tenant(client)
    assert client.post("/v1/clients/acme/offboard", headers=ADMIN).status_code == 200
    answer = _ask(client, tenant.integrator)
    assert (answer["record"], answer["reason"]) == (False, "client_inactive")


def test_every_decision_is_audited(client: TestClient, backend: StorageBackend) -> None:
    tenant = make_tenant(client)
    _ask(client, tenant.integrator, call_id="c1")
    _ask(client, tenant.integrator, call_id="c2", purposes=["optimization"])
    assert audit_kinds(backend).count("call.decided") == 2


def test_call_states(client: TestClient, tmp_path: Path) -> None:
    tenant = make_tenant(client)
    _ask(client, tenant.integrator)
    for action, state in (("pause", "paused"), ("resume", "open"), ("opt-out", "opted_out")):
        response = client.post(f"/v1/calls/call-1/{action}", headers=tenant.integrator)
        assert response.status_code == 200, response.text
        assert response.json()["state"] == state
    assert client.post("/v1/calls/call-1/resume", headers=tenant.integrator).status_code == 409
    upload = client.put(
        "/v1/calls/call-1/recording",
        content=tone_wav(tmp_path / "a.wav").read_bytes(),
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert upload.status_code == 409
    assert upload.json()["error"] == "caller_opted_out"
    assert client.post("/v1/calls/nope/end", headers=tenant.integrator).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"call_id": "x"}, 422),
        (call_body(direction="sideways"), 422),
        (call_body(**{"from": "not a number"}), 422),
        (call_body(call_id="a b"), 422),
        (call_body(jurisdiction="Morocco!"), 422),
        (call_body(extra="field"), 422),
    ],
)
def test_bad_call_hook_bodies(client: TestClient, body: dict[str, object], status: int) -> None:
    tenant = make_tenant(client)
    response = client.post("/v1/calls", json=body, headers=tenant.integrator)
    assert response.status_code == status, response.text
    assert response.json()["error"] in {"invalid_request"}


def test_malformed_json(client: TestClient) -> None:
    tenant = make_tenant(client)
    response = client.post(
        "/v1/calls",
        content=b'{"call_id": ',
        headers={**tenant.integrator, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_concurrent_call_setups_each_get_their_own_answer(
    client: TestClient, backend: StorageBackend
) -> None:
    # Setups arriving together are committed together; a refused key among them must
    # neither fail nor slip into the others.
    acme, globex = make_tenant(client), make_tenant(client, "globex")
    wrong = {"Authorization": "Bearer cr_nokey_nosecret"}
    asks = [(f"call-{i}", (acme.integrator, globex.integrator, wrong)[i % 3]) for i in range(48)]

    def ask(call_id: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        response = client.post("/v1/calls", json=call_body(call_id), headers=headers)
        return response.status_code, response.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda pair: ask(*pair), asks))

    for (call_id, headers), (status, answer) in zip(asks, answers, strict=True):
        if headers is wrong:
            assert (status, answer["error"]) == (401, "unauthorized")
        else:
            assert (status, answer["call_id"], answer["record"]) == (200, call_id, True)
    kinds = audit_kinds(backend)
    assert kinds.count("call.decided") == 32
    with backend.engine.connect() as connection:
        decided = connection.execute(
            sa.text("SELECT client_id, count(*) FROM call_decisions GROUP BY client_id")
        )
        assert dict(decided.all()) == {"acme": 16, "globex": 16}


def test_fails_closed_when_the_database_goes_away(
    client: TestClient, backend: StorageBackend, database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(client)
    assert _ask(client, tenant.integrator, call_id="before")["record"] is True
    _make_unreachable(backend, database_url, tmp_path)
    answer = _ask(client, tenant.integrator, call_id="during")
    assert (answer["record"], answer["reason"]) == (False, "consent_unavailable")
    assert client.get("/readyz").status_code == 503
    listed = client.get("/v1/recordings", headers=tenant.client_admin)
    assert listed.status_code == 503
    assert listed.json()["error"] == "database_unavailable"


def _make_unreachable(backend: StorageBackend, database_url: str, tmp_path: Path) -> None:
    """Take the running database away, the way an outage would."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        backend.engine.dispose()
        path = Path(str(url.database))
        os.replace(path, tmp_path / "moved.db")
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.mkdir()  # a directory where the file was: every open now fails
        return
    admin = create_db_engine(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(sa.text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false'))
        connection.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
            {"db": url.database},
        )
    admin.dispose()

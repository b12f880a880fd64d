"""Signed webhooks, received by a real HTTP server and verified as an integrator would.

Every event type comes from the real operation that causes it; each arrives once, signed
(checked with the ``standardwebhooks`` library), carries ids and no personal data, and
goes to its own client only. A receiver that is down, then failing, then slow loses
nothing; one that never recovers leaves dead deliveries the report shows.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session
from standardwebhooks import Webhook

from recorder.app import create_app
from storage import outbox, webhook_fanout, webhooks
from storage.backend import StorageBackend
from storage.db import connection_scope, session_scope
from storage.vault import RecordingDraft
from storage.webhook_events import EVENT_TYPES
from tests.recorder.conftest import ADMIN, Clock, backend_settings, call_body, make_tenant, tone_wav
from tests.recorder.webhook_receiver import Receiver

PHONE_KEPT, PHONE_ERASED = "+212611111111", "+212622222222"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def app_client(
    s3_server: Any, database_url: str, tmp_path: Path, clock: Clock
) -> Iterator[tuple[TestClient, StorageBackend]]:
    """A gateway whose webhooks give up fast: receivers here answer at once or never."""
    settings = backend_settings(
        s3_server, database_url, tmp_path, webhook_timeout_s=0.3, webhook_max_age_s=3600
    )
    backend = StorageBackend(settings)
    backend.start(now=clock())
    app = create_app(backend, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, backend
    backend.stop()


def _subscribe(client: TestClient, tenant: Any, url: str, events: Any = EVENT_TYPES) -> str:
    response = client.post(
        f"/v1/clients/{tenant.id}/webhooks",
        json={"url": url, "events": list(events)},
        headers=tenant.client_admin,
    )
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def _upload(client: TestClient, tenant: Any, call_id: str, phone: str, wav: bytes) -> str:
    body = call_body(call_id, **{"from": phone})
    assert client.post("/v1/calls", json=body, headers=tenant.integrator).json()["record"]
    stored = client.put(
        f"/v1/calls/{call_id}/recording",
        content=wav,
        headers={**tenant.integrator, "Content-Type": "audio/wav"},
    )
    assert stored.status_code == 201, stored.text
    recording_id: str = stored.json()["id"]
    return recording_id


def _verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every payload received, each checked against its signature."""
    verifier = Webhook(secret)
    return [verifier.verify(r.body, r.headers) for r in receiver.received]


def _eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for a state the gateway reaches on its own (its dispatcher runs in its loop)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def _rows(backend: StorageBackend) -> list[sa.Row[Any]]:
    with backend.engine.connect() as connection:
        table = outbox.WebhookDelivery.__table__  # type: ignore[attr-defined]
        return list(connection.execute(sa.select(table)))


def test_every_event_type_arrives_once_signed_to_its_own_client_only(
    app_client: tuple[TestClient, StorageBackend], receiver: Receiver, tmp_path: Path
) -> None:
    client, backend = app_client
    acme, globex = make_tenant(client, "acme"), make_tenant(client, "globex")
    other = Receiver("/globex").start()
    try:
        secret = _subscribe(client, acme, receiver.url)
        other_secret = _subscribe(client, globex, other.url)
        wav = tone_wav(tmp_path / "tone.wav", seconds=0.5).read_bytes()

        kept = _upload(client, acme, "call-kept", PHONE_KEPT, wav)
        erased = _upload(client, acme, "call-erased", PHONE_ERASED, wav)
        theirs = _upload(client, globex, "call-theirs", PHONE_KEPT, wav)
        hold = client.post(
            "/v1/legal-holds", json={"reason": "case", "recording_ids": [kept]}, headers=ADMIN
        ).json()["id"]
        assert client.delete(f"/v1/legal-holds/{hold}", headers=ADMIN).status_code == 200
        requests = {}
        for kind, phone in (("restriction", PHONE_KEPT), ("erasure", PHONE_ERASED)):
            answer = client.post(
                "/v1/subject-requests",
                json={"client_id": "acme", "kind": kind, "phone": phone},
                headers=acme.client_admin,
            )
            assert answer.status_code == 201, answer.text
            requests[kind] = answer.json()["id"]
        revoked = client.post(
            f"/v1/clients/acme/consents/{acme.grant['id']}/revoke",
            json={"reason": "contract ended", "purge_existing": False},
            headers=acme.client_admin,
        )
        assert revoked.status_code == 200, revoked.text
        # A capture thrown away (what an opt-out or a broken upload does): failed.
        writer = backend.vault.begin(
            RecordingDraft("acme", "call-failed", "upload", "opus", "ogg"), now=client_clock(client)
        )
        failed = writer.recording_id
        backend.vault.discard(writer, reason="caller opted out", now=client_clock(client))

        receiver.wait(lambda r: len(r.received) >= 10)
        other.wait(lambda r: len(r.received) >= 1)
        events = _verified(receiver, secret)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_type.setdefault(event["type"], []).append(event["data"])
        assert sorted(by_type) == sorted(EVENT_TYPES)
        assert sorted(d["recording_id"] for d in by_type["recording.stored"]) == sorted(
            [kept, erased]
        )
        assert by_type["recording.restricted"] == [
            {"recording_id": kept, "subject_request_id": requests["restriction"]}
        ]
        [purged] = by_type["recording.purged"]
        assert purged["recording_id"] == erased
        certificate = purged["certificate"]
        assert certificate["key_destroyed"] is True and certificate["versions_removed"] >= 1
        assert certificate["check"].startswith("object absent")
        event_hash = certificate["audit_event"]["hash"]
        chain = client.get(f"/v1/audit?recording_id={erased}", headers=ADMIN).json()["items"]
        assert event_hash in [e["hash"] for e in chain if e["kind"] == "recording.purged"]
        assert sorted(d["subject_request_id"] for d in by_type["subject_request.completed"]) == (
            sorted(requests.values())
        )
        assert by_type["consent.revoked"][0]["grant_id"] == acme.grant["id"]
        assert [d["legal_hold_id"] for d in by_type["legal_hold.placed"]] == [hold]
        assert by_type["legal_hold.released"] == [{"legal_hold_id": hold, "recordings": 1}]
        assert by_type["recording.failed"] == [
            {"recording_id": failed, "call_id": "call-failed", "reason": "caller opted out"}
        ]
        # Once each: no id twice, and nothing more comes.
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert len(ids) == len(set(ids)) == 10
        _eventually(lambda: {row.status for row in _rows(backend)} == {"delivered"})
        # Ids only: no number, no hash of one, no reason typed by a person.
        for received in receiver.received:
            text = received.body.decode()
            for personal in ("+2126", "212611111111", "212622222222", "contract ended", "case"):
                assert personal not in text
        # The other client heard of its own recording only.
        theirs_events = _verified(other, other_secret)
        assert [(e["type"], e["data"]["recording_id"]) for e in theirs_events] == [
            ("recording.stored", theirs)
        ]
        assert not {kept, erased, failed, hold} & set(str(theirs_events))
    finally:
        other.stop()


def client_clock(client: TestClient) -> Any:
    return client.app.state.api_context.clock()  # type: ignore[attr-defined]


def test_a_receiver_down_then_failing_then_slow_loses_nothing(
    app_client: tuple[TestClient, StorageBackend], receiver: Receiver, clock: Clock
) -> None:
    client, backend = app_client
    acme = make_tenant(client, "acme")
    secret = _subscribe(client, acme, receiver.url, ["consent.revoked"])
    receiver.stop()  # down: connections are refused
    grants = [acme.grant["id"]]
    for n in range(4):
        body = {"purposes": ["research"], "notice": "contract", "granted_by": "DPO", "evidence": n}
        body["evidence"] = f"#{n}"
        grants.append(
            client.post("/v1/clients/acme/consents", json=body, headers=acme.client_admin).json()[
                "id"
            ]
        )
    for grant in grants:
        revoked = client.post(
            f"/v1/clients/acme/consents/{grant}/revoke",
            json={"reason": "ended", "purge_existing": False},
            headers=acme.client_admin,
        )
        assert revoked.status_code == 200, revoked.text

    def attempted(times: int) -> Callable[[], bool]:
        # Fanned out from the audit log by the dispatcher: the rows appear, then are tried.
        return lambda: (
            len(rows := _rows(backend)) == len(grants) and all(r.attempts >= times for r in rows)
        )

    _eventually(attempted(1))
    assert {r.status for r in _rows(backend)} == {"pending"}
    for mode, times in (("error", 2), ("slow", 3)):
        receiver.mode = mode
        if mode == "error":
            receiver.start()  # back up, on the same port, but failing
        clock.now += timedelta(minutes=5)  # past the next backoff step
        _eventually(attempted(times))
        assert {r.status for r in _rows(backend)} == {"pending"}
    assert receiver.received == []
    receiver.mode = "ok"
    clock.now += timedelta(minutes=5)  # due again, well before the maximum age (an hour)
    receiver.wait(lambda r: len(r.received) >= len(grants))
    _eventually(lambda: {r.status for r in _rows(backend)} == {"delivered"})
    events = _verified(receiver, secret)
    assert sorted(e["data"]["grant_id"] for e in events) == sorted(grants)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == len(grants)


def test_a_receiver_that_never_recovers_leaves_dead_deliveries_in_the_report(
    app_client: tuple[TestClient, StorageBackend], receiver: Receiver, clock: Clock
) -> None:
    client, backend = app_client
    acme = make_tenant(client, "acme")
    _subscribe(client, acme, receiver.url, ["consent.revoked"])
    receiver.mode = "error"
    client.post(
        f"/v1/clients/acme/consents/{acme.grant['id']}/revoke",
        json={"reason": "ended", "purge_existing": False},
        headers=acme.client_admin,
    )
    _eventually(lambda: receiver.attempts >= 1 and any(r.attempts >= 1 for r in _rows(backend)))
    report = client.get("/v1/reports/retention?client_id=acme", headers=ADMIN).json()
    assert report["webhooks"]["pending"] == 1 and report["webhooks"]["dead"] == 0
    clock.now += timedelta(hours=2)  # past CALLREC_WEBHOOK_MAX_AGE_S (an hour here)
    _eventually(lambda: _rows(backend)[0].status == "dead")
    [row] = _rows(backend)
    assert row.last_error == "HTTP 500"
    report = client.get("/v1/reports/retention?client_id=acme", headers=ADMIN).json()
    assert report["webhooks"]["pending"] == 0 and report["webhooks"]["dead"] == 1
    assert report["checks"]["webhooks_delivered"] is False
    html = client.get("/v1/reports/retention?format=html", headers=ADMIN).text
    assert "Webhooks" in html


def test_the_event_is_the_outbox_and_the_fan_out_writes_its_rows(
    backend: StorageBackend, now: Any
) -> None:
    from consent.clients import Client

    with session_scope(backend.engine) as session:
        session.add(Client(id="acme", name="Acme", country="MA", created_at=now))
        webhooks.create_endpoint(
            session,
            client_id="acme",
            url="http://192.0.2.1:9/hooks",
            events=["consent.revoked"],
            gateway=webhooks.Gateway("127.0.0.1", 8080),
            keyring=backend.keyring,
            audit=backend.audit,
            actor="test",
            now=now,
        )

    def revoke(session: Session) -> None:
        backend.audit.append(
            session, kind="consent.revoked", actor="test", now=now, client_id="acme", subject="g1"
        )

    def fail_after_the_event() -> None:
        with session_scope(backend.engine) as session:
            revoke(session)
            raise RuntimeError("the operation fails after its event")

    def fan_out() -> int:
        with connection_scope(backend.engine) as connection:
            written, more = webhook_fanout.fan_out(connection, now=now + timedelta(minutes=1))
        assert not more
        return written

    with pytest.raises(RuntimeError):
        fail_after_the_event()
    assert fan_out() == 0  # an event rolled back leaves nothing to send
    with session_scope(backend.engine) as session:
        revoke(session)
        # An event no endpoint subscribed to, and one of another client: no row.
        backend.audit.append(
            session, kind="legal_hold.placed", actor="t", now=now, client_id="acme", subject="h"
        )
        backend.audit.append(
            session, kind="consent.revoked", actor="t", now=now, client_id="globex", subject="g"
        )
    # The event's transaction wrote no row; until the fan-out, the report counts it pending.
    assert _rows(backend) == []
    with Session(backend.engine) as session:
        assert webhook_fanout.backlog(session, client_id="acme") == outbox.Backlog(1, now, 0, None)
        assert webhook_fanout.backlog(session, client_id="globex").pending == 0
    assert fan_out() == 1
    assert fan_out() == 0  # the cursor moved past it
    [row] = _rows(backend)
    assert json.loads(row.body) == {
        "type": "consent.revoked",
        "timestamp": "2026-11-28T12:00:00.000000Z",  # the event's time, not the fan-out's
        "data": {"grant_id": "g1", "ledger_version": None, "purge_existing": None},
    }
    assert row.created_at == now and row.status == "pending"
    with Session(backend.engine) as session:
        assert webhook_fanout.backlog(session, client_id="acme") == outbox.Backlog(1, now, 0, None)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hooks",
        "hooks.example.com/callrec",
        "http:///nohost",
        "http://127.0.0.1:8080/v1/calls",  # this gateway
        "http://localhost:8080/hooks",
        "http://[::1]:8080/hooks",
        "http://0.0.0.0:8080/hooks",
        "http://user:pw@example.com/hooks",
    ],
)
def test_a_url_that_is_not_http_or_points_at_the_gateway_is_refused(
    client: TestClient, url: str
) -> None:
    acme = make_tenant(client, "acme")
    response = client.post(
        "/v1/clients/acme/webhooks",
        json={"url": url, "events": ["recording.stored"]},
        headers=acme.client_admin,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_webhook"
    assert client.get("/v1/clients/acme/webhooks", headers=acme.client_admin).json() == {
        "items": []
    }


@pytest.mark.parametrize("events", [["recording.stored", "call.decided"], []])
def test_unknown_or_no_event_types_are_refused(client: TestClient, events: list[str]) -> None:
    acme = make_tenant(client, "acme")
    response = client.post(
        "/v1/clients/acme/webhooks",
        json={"url": "https://hooks.example.com/x", "events": events},
        headers=acme.client_admin,
    )
    assert response.status_code == 422, response.text


def test_the_secret_is_shown_once_and_kept_wrapped(
    client: TestClient, backend: StorageBackend
) -> None:
    acme, globex = make_tenant(client, "acme"), make_tenant(client, "globex")
    created = client.post(
        "/v1/clients/acme/webhooks",
        json={"url": "https://hooks.example.com/x", "events": ["recording.stored"] * 2},
        headers=acme.client_admin,
    ).json()
    assert created["events"] == ["recording.stored"]
    secret = created.pop("secret")
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    listed = client.get("/v1/clients/acme/webhooks", headers=acme.client_admin)
    assert listed.json() == {"items": [created]}
    assert secret[6:] not in listed.text
    with Session(backend.engine) as session:
        row = session.get(webhooks.WebhookEndpoint, created["id"])
        assert row is not None and row.secret is not None
        assert base64.b64decode(secret[6:]) not in row.secret
        assert webhooks.secret_of(session, backend.keyring, endpoint_id=row.id) == (
            base64.b64decode(secret[6:])
        )
    path = f"/v1/clients/acme/webhooks/{created['id']}"
    # Another client's admin sees neither the endpoint nor that it exists.
    assert client.get("/v1/clients/acme/webhooks", headers=globex.client_admin).status_code == 404
    assert client.delete(path, headers=globex.client_admin).status_code == 404
    assert client.delete(path, headers=acme.client_admin).json() == created
    assert client.delete(path, headers=acme.client_admin).status_code == 404
    assert client.get("/v1/clients/acme/webhooks", headers=acme.client_admin).json()["items"] == []
    with Session(backend.engine) as session:
        row = session.get(webhooks.WebhookEndpoint, created["id"])
        assert row is not None and row.secret is None  # destroyed with the endpoint

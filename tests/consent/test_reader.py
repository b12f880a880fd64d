"""What a call decision reads, and when the per-process caches must let go of it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from consent import apikeys, ledger
from consent.api_calls import decide_call
from consent.api_context import ApiContext
from consent.apikeys import Role
from consent.calls import CallRequest
from consent.clients import offboard_client
from consent.errors import Unauthenticated
from consent.objections import add_objection
from consent.reader import CallSnapshot, ConsentReader
from consent.registry import RetentionOverride
from storage.audit import AuditLog
from storage.db import connection_scope, session_scope
from storage.keyring import Keyring
from tests.consent.ledger_helpers import (
    AUDIT,
    AUDIT_KEY,
    CALLEE,
    CALLER,
    PARTIES,
    add_client,
    add_grant,
    revoke_grant,
)


def _read(engine: Engine, reader: ConsentReader, client_id: str = "acme") -> CallSnapshot:
    with connection_scope(engine) as connection:
        return reader.read(connection, client_id=client_id, call_id="c1", participants=PARTIES)


@pytest.fixture
def ledger_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The clients whose ledger was read from the database, in order."""
    reads: list[str] = []
    original: Callable[..., list[ledger.ConsentEvent]] = ledger.ledger

    def counting(session: Any, client_id: str) -> list[ledger.ConsentEvent]:
        reads.append(client_id)
        return original(session, client_id)

    monkeypatch.setattr(ledger, "ledger", counting)
    return reads


def test_unknown_client(engine: Engine) -> None:
    assert _read(engine, ConsentReader()) == CallSnapshot(None, None)


def test_snapshot_of_status_retention_and_objections(engine: Engine, now: datetime) -> None:
    add_client(engine, now)
    with session_scope(engine) as session:
        session.add(
            RetentionOverride(client_id="acme", purpose="research", days=10, updated_at=now)
        )
        add_objection(
            session,
            client_id="acme",
            phone_hash=PARTIES[1],
            source="test",
            actor="t",
            audit=AUDIT,
            now=now,
        )
    consent = _read(engine, ConsentReader()).consent
    assert consent is not None and consent.active and consent.grants == ()
    assert consent.retention_days == {"research": 10, "improvement": 180, "optimization": 90}
    assert consent.objections == {PARTIES[1]}


def test_changes_to_the_client_are_seen_at_once(engine: Engine, now: datetime) -> None:
    """Status, retention and objections are read on every call, never cached."""
    reader = ConsentReader()
    add_client(engine, now)
    assert _read(engine, reader).consent is not None
    with session_scope(engine) as session:
        session.add(RetentionOverride(client_id="acme", purpose="research", days=7, updated_at=now))
        add_objection(
            session,
            client_id="acme",
            phone_hash=PARTIES[0],
            source="test",
            actor="t",
            audit=AUDIT,
            now=now,
        )
        offboard_client(
            session, client_id="acme", actor="t", keyring=Keyring(b"m" * 32), audit=AUDIT, now=now
        )
    consent = _read(engine, reader).consent
    assert consent is not None and not consent.active
    assert consent.retention_days["research"] == 7
    assert consent.objections == {PARTIES[0]}


def test_a_new_grant_is_seen_at_once(engine: Engine, now: datetime) -> None:
    reader = ConsentReader()
    add_client(engine, now)
    first = add_grant(engine, now)
    consent = _read(engine, reader).consent
    assert consent is not None and [g.id for g in consent.grants] == [first]
    second = add_grant(engine, now, purposes=["improvement"])
    consent = _read(engine, reader).consent
    assert consent is not None and {g.id for g in consent.grants} == {first, second}


def test_a_revocation_by_another_replica_is_seen_at_once(engine: Engine, now: datetime) -> None:
    here, there = ConsentReader(), ConsentReader()
    add_client(engine, now)
    grant_id = add_grant(engine, now)
    for reader in (here, there):
        consent = _read(engine, reader).consent
        assert consent is not None and consent.grants[0].revoked_at is None
    revoke_grant(engine, now + timedelta(seconds=1), grant_id)  # as any replica would
    for reader in (here, there):
        consent = _read(engine, reader).consent
        assert consent is not None
        assert consent.grants[0].revoked_at == now + timedelta(seconds=1)


def test_the_ledger_is_read_again_only_when_its_head_moves(
    engine: Engine, now: datetime, ledger_reads: list[str]
) -> None:
    reader = ConsentReader()
    add_client(engine, now)
    _read(engine, reader)
    assert ledger_reads == []  # no event yet: nothing to read
    grant_id = add_grant(engine, now)
    for _ in range(3):
        _read(engine, reader)
    assert ledger_reads == ["acme"]
    revoke_grant(engine, now, grant_id)
    _read(engine, reader)
    _read(engine, reader)
    assert ledger_reads == ["acme", "acme"]


def test_a_rewritten_ledger_at_the_same_version_is_read_again(
    engine: Engine, now: datetime
) -> None:
    """A database restored from a backup and written to again can reuse a version."""
    reader = ConsentReader()
    add_client(engine, now)
    add_grant(engine, now, purposes=["research"])
    consent = _read(engine, reader).consent
    assert consent is not None and consent.grants[0].purposes == {"research"}
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM consent_events"))
    add_grant(engine, now, purposes=["improvement"])  # version 1 again, another event
    consent = _read(engine, reader).consent
    assert consent is not None and consent.grants[0].purposes == {"improvement"}


def test_the_cache_is_bounded(engine: Engine, now: datetime, ledger_reads: list[str]) -> None:
    reader = ConsentReader(max_clients=2)
    for client_id in ("a", "b", "c"):
        add_client(engine, now, client_id)
        add_grant(engine, now, client_id)
    for client_id in ("a", "b", "c", "c", "a"):
        _read(engine, reader, client_id)
    assert ledger_reads == ["a", "b", "c", "a"]  # "a" went to make room for "c"


# --- through the call hook, as two replicas sharing one database -------------------


def _replica(engine: Engine, keyring: Keyring, now: datetime) -> ApiContext:
    audit = AuditLog(AUDIT_KEY)
    return ApiContext(engine=engine, audit=audit, keyring=keyring, clock=lambda: now)


def _call(call_id: str) -> CallRequest:
    return CallRequest.model_validate(
        {
            "call_id": call_id,
            "direction": "inbound",
            "from": CALLER,
            "to": CALLEE,
            "channel": "upload",
            "jurisdiction": "US-NY",
        }
    )


def test_replicas_stop_recording_at_once_after_a_revocation(engine: Engine, now: datetime) -> None:
    keyring = Keyring(secrets.token_bytes(32))
    one, two = _replica(engine, keyring, now), _replica(engine, keyring, now)
    add_client(engine, now)
    grant_id = add_grant(engine, now)
    with session_scope(engine) as session:
        key = apikeys.issue_key(
            session,
            role=Role.INTEGRATOR,
            client_id="acme",
            pepper=one.key_pepper,
            actor="t",
            audit=one.audit,
            now=now,
        ).key
    assert decide_call(one, _call("c1"), key).record
    assert decide_call(two, _call("c2"), key).record
    revoke_grant(engine, now, grant_id)
    for number, replica in enumerate((one, two), start=3):
        answer = decide_call(replica, _call(f"c{number}"), key)
        assert (answer.record, answer.reason) == (False, "consent_revoked")


def test_a_revoked_api_key_stops_working_at_once(engine: Engine, now: datetime) -> None:
    """API keys are checked against the database on every call: no cache, no delay."""
    context = _replica(engine, Keyring(secrets.token_bytes(32)), now)
    add_client(engine, now)
    add_grant(engine, now)
    with session_scope(engine) as session:
        issued = apikeys.issue_key(
            session,
            role=Role.INTEGRATOR,
            client_id="acme",
            pepper=context.key_pepper,
            actor="t",
            audit=context.audit,
            now=now,
        )
    assert decide_call(context, _call("c1"), issued.key).record
    with session_scope(engine) as session:
        apikeys.revoke_key(session, key_id=issued.id, actor="t", audit=context.audit, now=now)
    with pytest.raises(Unauthenticated, match="revoked"):
        decide_call(context, _call("c2"), issued.key)


def test_asking_again_returns_the_first_decision(engine: Engine, now: datetime) -> None:
    context = _replica(engine, Keyring(secrets.token_bytes(32)), now)
    add_client(engine, now)
    grant_id = add_grant(engine, now)
    with session_scope(engine) as session:
        key = apikeys.issue_key(
            session,
            role=Role.INTEGRATOR,
            client_id="acme",
            pepper=context.key_pepper,
            actor="t",
            audit=context.audit,
            now=now,
        ).key
    first = decide_call(context, _call("c1"), key)
    assert decide_call(context, _call("c1"), key) == first
    # A revocation reaches a call decided before it and not yet captured.
    revoke_grant(engine, now, grant_id)
    again = decide_call(context, _call("c1"), key)
    assert (again.decision_id, again.record, again.reason) == (
        first.decision_id,
        False,
        "consent_revoked",
    )
    assert (again.grant_id, again.upload_url) == (first.grant_id, None)
    with connection_scope(engine) as connection:
        snapshot = context.consent_reader.read(
            connection, client_id="acme", call_id="c1", participants=PARTIES
        )
    assert snapshot == CallSnapshot(first.decision_id, None)

"""Gateways' dispatchers on one database: each delivery sent once, none lost while down."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from standardwebhooks import Webhook

from recorder.webhook_dispatch import WebhookDispatcher
from storage import webhook_fanout, webhooks
from storage.audit import AuditEntry, AuditLog
from storage.db import connection_scope, session_scope
from storage.keyring import Keyring
from tests.recorder.webhook_receiver import Receiver

EVENTS = 300


def test_two_dispatchers_send_each_delivery_once(engine: Engine) -> None:
    def clock() -> datetime:  # real time: a failed attempt is retried after its backoff
        return datetime.now(UTC)

    now = clock()
    keyring = Keyring(secrets.token_bytes(32))
    audit = AuditLog(keyring.derive("audit-anchor"))
    receiver = Receiver().start()
    try:
        with session_scope(engine) as session:
            created = webhooks.create_endpoint(
                session,
                client_id="acme",
                url=receiver.url,
                events=["consent.revoked"],
                gateway=webhooks.Gateway("127.0.0.1", 8080),
                keyring=keyring,
                audit=audit,
                actor="test",
                now=now,
            )
        with connection_scope(engine) as connection:
            entries = [
                AuditEntry("consent.revoked", "t", client_id="acme", subject=f"g{i}")
                for i in range(EVENTS)
            ]
            audit.append_many(connection, entries, now=now)

        async def both() -> None:
            # Small batches, so that the two take turns at the rows many times.
            gateways = [
                WebhookDispatcher(
                    engine=engine,
                    keyring=keyring,
                    clock=clock,
                    concurrency=8,
                    poll_s=0.01,
                    backoff=(0.05,),
                )
                for _ in range(2)
            ]
            for gateway in gateways:
                await gateway.start()
            try:
                await asyncio.to_thread(receiver.wait, lambda r: len(r.received) >= EVENTS)
            finally:
                for gateway in gateways:
                    await gateway.stop()
            assert all(g.delivered for g in gateways), "both gateways took a share"

        asyncio.run(both())
    finally:
        receiver.stop()
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == EVENTS
    verifier = Webhook(created.secret)
    subjects = {verifier.verify(r.body, r.headers)["data"]["grant_id"] for r in receiver.received}
    assert subjects == {f"g{i}" for i in range(EVENTS)}


def _endpoint(engine: Engine, keyring: Keyring, audit: AuditLog, url: str) -> str:
    with session_scope(engine) as session:
        created = webhooks.create_endpoint(
            session,
            client_id="acme",
            url=url,
            events=["consent.revoked"],
            gateway=webhooks.Gateway("127.0.0.1", 8080),
            keyring=keyring,
            audit=audit,
            actor="test",
            now=datetime.now(UTC),
        )
    return created.secret


def _revoke(engine: Engine, audit: AuditLog, grant: str) -> None:
    with connection_scope(engine) as connection:
        entry = AuditEntry("consent.revoked", "t", client_id="acme", subject=grant)
        audit.append_many(connection, [entry], now=datetime.now(UTC))


def _run_until(engine: Engine, keyring: Keyring, done: Callable[[], None]) -> None:
    """A dispatcher started now (a gateway starting) runs until ``done`` returns."""

    async def run() -> None:
        dispatcher = WebhookDispatcher(engine=engine, keyring=keyring, poll_s=0.01)
        await dispatcher.start()
        try:
            await asyncio.to_thread(done)
        finally:
            await dispatcher.stop()

    asyncio.run(run())


def _grants(receiver: Receiver, secret: str) -> list[str]:
    verifier = Webhook(secret)
    return sorted(verifier.verify(r.body, r.headers)["data"]["grant_id"] for r in receiver.received)


def test_events_of_a_time_no_dispatcher_ran_reach_the_endpoints_that_existed(
    engine: Engine,
) -> None:
    keyring = Keyring(secrets.token_bytes(32))
    audit = AuditLog(keyring.derive("audit-anchor"))
    early, late = Receiver("/early").start(), Receiver("/late").start()
    try:
        early_secret = _endpoint(engine, keyring, audit, early.url)
        _revoke(engine, audit, "g1")  # no gateway runs a dispatcher meanwhile
        late_secret = _endpoint(engine, keyring, audit, late.url)
        _revoke(engine, audit, "g2")

        def both_heard() -> None:
            early.wait(lambda r: len(r.received) >= 2)
            late.wait(lambda r: len(r.received) >= 1)

        _run_until(engine, keyring, both_heard)
    finally:
        early.stop()
        late.stop()
    assert _grants(early, early_secret) == ["g1", "g2"]
    assert _grants(late, late_secret) == ["g2"]  # created after g1: never told of it


def test_a_gateway_dying_between_fan_out_and_delivery_loses_nothing(engine: Engine) -> None:
    keyring = Keyring(secrets.token_bytes(32))
    audit = AuditLog(keyring.derive("audit-anchor"))
    receiver = Receiver().start()
    try:
        secret = _endpoint(engine, keyring, audit, receiver.url)
        for grant in ("g1", "g2", "g3"):
            _revoke(engine, audit, grant)
        # A gateway fans out (rows and cursor committed), then dies before sending.
        with connection_scope(engine) as connection:
            assert webhook_fanout.fan_out(connection, now=datetime.now(UTC)) == (3, False)
        _run_until(engine, keyring, lambda: receiver.wait(lambda r: len(r.received) >= 3))
    finally:
        receiver.stop()
    assert _grants(receiver, secret) == ["g1", "g2", "g3"]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 3

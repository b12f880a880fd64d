"""Two gateways' dispatchers on one database share the outbox: each delivery is sent once."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from standardwebhooks import Webhook

from recorder.webhook_dispatch import WebhookDispatcher
from storage import webhooks
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

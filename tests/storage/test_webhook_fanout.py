"""The fan-out from the audit log to the outbox: nothing lost, nothing twice, nobody early."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import outbox, webhooks
from storage.audit import AuditEntry, AuditLog
from storage.db import connection_scope, session_scope
from storage.keyring import Keyring
from storage.webhook_fanout import WebhookFanoutCursor, backlog, fan_out

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
_OUTBOX: sa.Table = outbox.WebhookDelivery.__table__  # type: ignore[attr-defined]


class World:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.keyring = Keyring(secrets.token_bytes(32))
        self.audit = AuditLog(self.keyring.derive("audit-anchor"))

    def endpoint(self, client_id: str = "acme") -> str:
        with session_scope(self.engine) as session:
            created = webhooks.create_endpoint(
                session,
                client_id=client_id,
                url="http://192.0.2.1:9/hooks",
                events=["consent.revoked"],
                gateway=webhooks.Gateway("127.0.0.1", 8080),
                keyring=self.keyring,
                audit=self.audit,
                actor="test",
                now=NOW,
            )
        return created.endpoint.id

    def revoke(self, *grants: str, client_id: str = "acme") -> None:
        entries = [AuditEntry("consent.revoked", "t", client_id, g) for g in grants]
        with connection_scope(self.engine) as connection:
            self.audit.append_many(connection, entries, now=NOW)

    def fan_out(self) -> int:
        with connection_scope(self.engine) as connection:
            written, more = fan_out(connection, now=NOW)
        assert not more
        return written

    def rows(self) -> list[sa.Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(_OUTBOX).order_by(_OUTBOX.c.audit_seq)))

    def cursor(self) -> int:
        with self.engine.connect() as connection:
            cursor = WebhookFanoutCursor.__table__  # type: ignore[attr-defined]
            return int(connection.execute(sa.select(cursor.c.seq)).scalar_one())


def test_a_fan_out_that_dies_before_its_commit_leaves_every_event_to_the_next(
    engine: Engine,
) -> None:
    world = World(engine)
    endpoint = world.endpoint()
    world.revoke("g1", "g2")
    before = world.cursor()

    def dies_before_the_commit() -> None:
        with connection_scope(engine) as connection:
            assert fan_out(connection, now=NOW) == (2, False)
            raise RuntimeError("the gateway dies before the commit")

    with pytest.raises(RuntimeError):
        dies_before_the_commit()
    assert world.rows() == [] and world.cursor() == before
    with Session(engine) as session:
        assert backlog(session).pending == 2  # still owed, and the report says so
    assert world.fan_out() == 2
    rows = world.rows()
    assert [(r.endpoint_id, r.status) for r in rows] == [(endpoint, "pending")] * 2
    with Session(engine) as session:
        assert backlog(session).pending == 2  # counted once, now as rows


def test_a_repeated_fan_out_writes_nothing_twice(engine: Engine) -> None:
    world = World(engine)
    world.endpoint()
    world.endpoint()
    before = world.cursor()
    world.revoke("g1", "g2", "g3")
    assert world.fan_out() == 6
    first = {r.id for r in world.rows()}
    # The same events read again, as after a cursor that did not move with its rows.
    with connection_scope(engine) as connection:
        connection.execute(sa.update(WebhookFanoutCursor).values(seq=before))
    world.fan_out()
    assert {r.id for r in world.rows()} == first and len(world.rows()) == 6


def test_two_fan_outs_at_once_take_turns(engine: Engine) -> None:
    world = World(engine)
    world.endpoint()
    world.revoke("g1", "g2")
    outcome: list[tuple[int, bool]] = []
    with connection_scope(engine) as connection:
        assert fan_out(connection, now=NOW) == (2, False)
        # Another gateway's fan-out starts before this one commits.
        other = threading.Thread(target=lambda: outcome.append(_fan_out_alone(engine)))
        other.start()
        if engine.dialect.name == "postgresql":
            _wait_for_a_lock_wait(engine)
    other.join(timeout=30)
    assert not other.is_alive()
    assert outcome == [(0, False)]  # it started where the first one stopped
    assert len(world.rows()) == 2


def _fan_out_alone(engine: Engine) -> tuple[int, bool]:
    with connection_scope(engine) as connection:
        return fan_out(connection, now=NOW)


def _wait_for_a_lock_wait(engine: Engine) -> None:
    """Until a session of this database waits for a lock (the other fan-out, on the cursor)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as connection:
        for _ in range(100_000):
            if connection.execute(query).scalar_one():
                return
            connection.rollback()
    raise AssertionError("the other fan-out never waited")


def test_an_endpoint_created_after_an_event_does_not_get_it(engine: Engine) -> None:
    world = World(engine)
    early = world.endpoint()
    world.revoke("before")
    late = world.endpoint()  # nothing fanned out in between
    world.revoke("after")
    world.fan_out()
    got = sorted((r.endpoint_id, r.audit_seq) for r in world.rows())
    seqs = sorted({seq for _, seq in got})
    assert got == sorted([(early, seqs[0]), (early, seqs[1]), (late, seqs[1])])


def test_a_deleted_endpoint_gets_no_rows_and_its_written_ones_are_cancelled(
    engine: Engine,
) -> None:
    world = World(engine)
    endpoint = world.endpoint()
    world.revoke("fanned")
    world.fan_out()
    world.revoke("not yet")
    with session_scope(engine) as session:
        webhooks.delete_endpoint(
            session,
            client_id="acme",
            endpoint_id=endpoint,
            audit=world.audit,
            actor="test",
            now=NOW,
        )
    assert world.fan_out() == 0
    assert [r.status for r in world.rows()] == ["cancelled"]
    with Session(engine) as session:
        assert backlog(session).pending == 0


def test_a_long_backlog_is_fanned_out_batch_by_batch(engine: Engine) -> None:
    world = World(engine)
    world.endpoint()
    world.revoke(*(f"g{i}" for i in range(5)))
    outcomes = []
    for _ in range(3):
        with connection_scope(engine) as connection:
            outcomes.append(fan_out(connection, now=NOW, limit=2))
    assert outcomes == [(2, True), (2, True), (1, False)]
    assert len(world.rows()) == 5

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.audit import AuditEvent, AuditLog, chain_hash
from storage.db import connection_scope, session_scope

KEY = b"k" * 32


def _fill(engine: Engine, now: datetime, count: int = 5) -> AuditLog:
    audit = AuditLog(KEY)
    for i in range(count):
        with session_scope(engine) as session:
            audit.append(
                session,
                kind="test.event",
                actor="tester",
                now=now + timedelta(seconds=i),
                client_id="acme",
                subject=f"thing-{i}",
                data={"i": i, "text": "é"},
            )
    return audit


def _verify(engine: Engine, audit: AuditLog | None = None):  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return (audit or AuditLog(KEY)).verify(session)


def _sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def test_empty_chain_verifies(engine: Engine) -> None:
    report = _verify(engine)
    assert report.ok and report.events == 0


def test_intact_chain_verifies(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    report = _verify(engine)
    assert report.ok, report.problem
    assert report.events == 5


def test_events_chain_to_each_other(engine: Engine, now: datetime) -> None:
    _fill(engine, now, 3)
    with Session(engine) as session:
        events = list(session.exec(select(AuditEvent).order_by(AuditEvent.seq)))  # type: ignore[arg-type]
    assert events[0].prev_hash == "0" * 64
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert events[0].at == now  # aware UTC datetimes survive the round trip


def test_edited_event_is_found(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    _sql(engine, "UPDATE audit_events SET data = :d WHERE seq = 3", d='{"i":99,"text":"é"}')
    report = _verify(engine)
    assert not report.ok
    assert report.first_bad == 3
    assert "altered" in (report.problem or "")


def test_edited_and_rehashed_event_breaks_the_next_link(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    with Session(engine) as session:
        event = session.get(AuditEvent, 3)
        assert event is not None
        event.actor = "intruder"
        event.hash = chain_hash(event.prev_hash, event)
        session.add(event)
        session.commit()
    report = _verify(engine)
    assert not report.ok
    assert report.first_bad == 4


def test_deleted_event_is_found(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    _sql(engine, "DELETE FROM audit_events WHERE seq = 2")
    report = _verify(engine)
    assert not report.ok
    assert report.first_bad == 2
    assert "missing" in (report.problem or "")


def test_deleted_and_renumbered_event_is_found(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    _sql(engine, "DELETE FROM audit_events WHERE seq = 2")
    for seq in (3, 4, 5):
        _sql(engine, "UPDATE audit_events SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    report = _verify(engine)
    assert not report.ok
    assert report.first_bad == 2


def test_inserted_event_is_found(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    for seq in (5, 4, 3):
        _sql(engine, "UPDATE audit_events SET seq = :new WHERE seq = :old", new=seq + 1, old=seq)
    with Session(engine) as session:
        previous = session.get(AuditEvent, 2)
        assert previous is not None
        forged = AuditEvent(
            seq=3,
            at=now,
            kind="test.event",
            actor="intruder",
            data="{}",
            prev_hash=previous.hash,
            hash="",
        )
        forged.hash = chain_hash(forged.prev_hash, forged)
        session.add(forged)
        session.commit()
    report = _verify(engine)
    assert not report.ok
    assert report.first_bad == 4  # the event after the forged one no longer follows


def test_removed_tail_is_found_by_the_anchor(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    _sql(engine, "DELETE FROM audit_events WHERE seq >= 4")
    report = _verify(engine)
    assert not report.ok
    assert report.events == 3
    assert report.first_bad == 4


def test_anchor_cannot_be_forged_without_the_key(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    _sql(engine, "DELETE FROM audit_events WHERE seq >= 4")
    with Session(engine) as session:
        head = session.get(AuditEvent, 3)
        assert head is not None
        _sql(engine, "UPDATE audit_anchor SET seq = 3, hash = :h", h=head.hash)
    report = _verify(engine)
    assert not report.ok
    assert "forged" in (report.problem or "")


def test_removed_anchor_is_found(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    _sql(engine, "DELETE FROM audit_anchor")
    assert not _verify(engine).ok


def test_wrong_anchor_key_fails(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    assert not _verify(engine, AuditLog(b"x" * 32)).ok


def test_append_rolls_back_with_its_transaction(engine: Engine, now: datetime) -> None:
    audit = _fill(engine, now, 2)

    def failing_request() -> None:
        with session_scope(engine) as session:
            audit.append(session, kind="test.event", actor="t", now=now)
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError):
        failing_request()
    report = _verify(engine)
    assert report.ok and report.events == 2


def test_appends_on_a_bare_connection_join_the_same_chain(engine: Engine, now: datetime) -> None:
    audit = _fill(engine, now, 2)
    with connection_scope(engine) as connection:
        appended = audit.append(connection, kind="test.event", actor="t", now=now, data={"i": 2})
    assert appended.seq == 3
    _fill(engine, now + timedelta(seconds=3), 1)
    report = _verify(engine)
    assert report.ok and report.events == 4, report.problem


def test_concurrent_appenders_keep_the_chain_linear(engine: Engine, now: datetime) -> None:
    """Writers in threads take turns (SQLite) or the advisory lock (PostgreSQL)."""
    audit = AuditLog(KEY)

    def appender(worker: int) -> None:
        for i in range(10):
            with session_scope(engine) as session:
                audit.append(session, kind="test.event", actor=f"w{worker}", now=now, data={"i": i})

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(appender, range(6)))
    report = _verify(engine)
    assert report.ok and report.events == 60, report.problem

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.audit import AuditEntry, AuditEvent, AuditLog, chain_hash
from storage.db import connection_scope, session_scope
from storage.errors import AuditChainBroken, DatabaseUnavailable
from storage.group_commit import GroupCommit

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


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM audit_events")).scalar_one())


def _anchor(engine: Engine) -> tuple[int, str, str]:
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT seq, hash, mac FROM audit_anchor")).one()
    return int(row.seq), str(row.hash), str(row.mac)


def rehash_from(engine: Engine, first: int) -> None:
    """Recompute every hash from event ``first`` on, as a forger without the key would."""
    with Session(engine) as session:
        events = list(
            session.exec(
                select(AuditEvent).where(AuditEvent.seq >= first - 1).order_by(AuditEvent.seq)  # type: ignore[arg-type]
            )
        )
        for previous, event in pairwise(events):
            event.prev_hash = previous.hash
            event.hash = chain_hash(event.prev_hash, event)
            session.add(event)
        session.commit()


def _cut_the_newest_three(engine: Engine) -> None:
    _sql(engine, "DELETE FROM audit_events WHERE seq > (SELECT max(seq) - 3 FROM audit_events)")


def _edit_and_rehash(engine: Engine) -> None:
    _sql(engine, "UPDATE audit_events SET actor = 'intruder' WHERE seq = 4")
    rehash_from(engine, 4)


def _extend(engine: Engine) -> None:
    with Session(engine) as session:
        head = session.exec(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()  # type: ignore[attr-defined]
        assert head is not None
        forged = AuditEvent(
            seq=head.seq + 1,
            at=head.at,
            kind="test.event",
            actor="intruder",
            data="{}",
            prev_hash=head.hash,
            hash="",
        )
        forged.hash = chain_hash(forged.prev_hash, forged)
        session.add(forged)
        session.commit()


def _remove_the_anchor(engine: Engine) -> None:
    _sql(engine, "DELETE FROM audit_anchor")


def _edit_the_newest(engine: Engine) -> None:
    _sql(engine, "UPDATE audit_events SET actor = 'intruder' WHERE seq = 8")


TAMPERING = [_cut_the_newest_three, _edit_and_rehash, _extend, _remove_the_anchor, _edit_the_newest]


@pytest.mark.parametrize("tamper", TAMPERING)
def test_an_append_on_a_tampered_chain_is_refused_and_never_re_anchors(
    engine: Engine, now: datetime, tamper: object, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(engine, now, 8)
    assert callable(tamper)
    tamper(engine)
    audit = AuditLog(KEY)  # the gateway starts again on the tampered chain
    events, anchor = _count(engine), (None if tamper is _remove_the_anchor else _anchor(engine))
    caplog.set_level(logging.CRITICAL, logger="storage.audit")

    for attempt in range(2):
        with (
            pytest.raises(AuditChainBroken, match="audit chain broken") as refused,
            session_scope(engine) as session,
        ):
            audit.append(session, kind="test.event", actor="t", now=now, data={"i": attempt})
        assert isinstance(refused.value, DatabaseUnavailable)  # callers fail closed on it

    assert _count(engine) == events  # nothing appended
    if anchor is not None:
        assert _anchor(engine) == anchor  # and the anchor did not move
    assert not _verify(engine).ok
    assert audit.broken is not None
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1, "one CRITICAL line per problem, not one per refusal"
    assert "audit chain broken at event" in critical[0].getMessage()


def test_the_head_check_names_where_the_chain_breaks(engine: Engine, now: datetime) -> None:
    audit = _fill(engine, now, 8)
    _cut_the_newest_three(engine)
    with Session(engine) as session:
        report = audit.check_head(session)
    assert not report.ok
    assert report.first_bad == 6
    assert report.problem == "the anchor names event 8 but the newest event is 5"

    fresh = AuditLog(KEY)  # a gateway that starts on the tampered chain
    with engine.connect() as connection:
        assert not fresh.check_head(connection).ok
    assert fresh.broken == report.problem


def test_a_chain_put_back_as_it_was_takes_appends_again(engine: Engine, now: datetime) -> None:
    audit = _fill(engine, now, 4)
    with engine.connect() as connection:
        saved = connection.execute(sa.text("SELECT seq, hash, mac FROM audit_anchor")).one()
    _sql(engine, "UPDATE audit_anchor SET seq = 1")
    with pytest.raises(AuditChainBroken), session_scope(engine) as session:
        audit.append(session, kind="test.event", actor="t", now=now)
    _sql(engine, "UPDATE audit_anchor SET seq = :seq", seq=saved.seq)
    with session_scope(engine) as session:
        audit.append(session, kind="test.event", actor="t", now=now)
    assert audit.broken is None
    report = _verify(engine)
    assert report.ok and report.events == 5, report.problem


def test_group_commits_on_a_tampered_chain_write_nothing(engine: Engine, now: datetime) -> None:
    audit = _fill(engine, now, 6)
    _cut_the_newest_three(engine)
    commit = GroupCommit(engine, audit, lambda: now)

    def work(connection: sa.Connection, events: list[AuditEntry]) -> str:
        connection.execute(sa.text("UPDATE audit_anchor SET hash = hash"))  # a write to undo
        events.append(AuditEntry("test.event", "t"))
        return "done"

    try:
        with pytest.raises(AuditChainBroken):
            commit.run_alone(work)
        with pytest.raises(AuditChainBroken):
            asyncio.run(commit.run(work))  # through the writer thread, as call setups go
    finally:
        commit.close()
    assert _count(engine) == 3
    assert not _verify(engine).ok


def test_head_checks_beside_concurrent_appenders_raise_no_false_alarm(
    engine: Engine, now: datetime
) -> None:
    """The head and the anchor are read in one snapshot, even under READ COMMITTED."""
    audit = _fill(engine, now, 1)
    checker = AuditLog(KEY)
    done = threading.Event()

    def appender(worker: int) -> None:
        for i in range(15):
            with session_scope(engine) as session:
                audit.append(session, kind="test.event", actor=f"w{worker}", now=now, data={"i": i})

    def check() -> list[str]:
        problems = []
        while not done.is_set():
            with engine.connect() as connection:
                report = checker.check_head(connection)
            if not report.ok:
                problems.append(report.problem or "")
        return problems

    with ThreadPoolExecutor(max_workers=5) as pool:
        checking = pool.submit(check)
        list(pool.map(appender, range(4)))
        done.set()
        assert checking.result() == []
    assert _verify(engine).ok


def test_verify_through_stops_at_its_bound_and_walks_on_from_where_it_stopped(
    engine: Engine, now: datetime
) -> None:
    _fill(engine, now, count=6)
    audit = AuditLog(KEY)
    with Session(engine) as session:
        assert audit.verify_through(session, 3) == audit.verify_through(session, 3)
        report = audit.verify_through(session, 3)
        assert (report.ok, report.events) == (True, 3)
    # An edit past the bound is not its business; once the bound reaches it, it is found.
    _sql(engine, "UPDATE audit_events SET actor = 'x' WHERE seq = 5")
    with Session(engine) as session:
        assert audit.verify_through(session, 4).ok
        report = audit.verify_through(session, 6)
        assert (report.ok, report.first_bad) == (False, 5)


def test_verify_through_finds_an_edit_before_the_bound_on_a_fresh_log(
    engine: Engine, now: datetime
) -> None:
    _fill(engine, now)
    _sql(engine, "UPDATE audit_events SET data = '{\"i\": 9}' WHERE seq = 2")
    with Session(engine) as session:
        report = AuditLog(KEY).verify_through(session, 4)
    assert (report.ok, report.first_bad) == (False, 2)


def test_verify_through_finds_a_rehashed_stretch_over_where_it_stopped(
    engine: Engine, now: datetime
) -> None:
    _fill(engine, now, count=6)
    audit = AuditLog(KEY)
    with Session(engine) as session:
        assert audit.verify_through(session, 4).ok
    # Event 3 edited and the chain re-hashed through 4: the remembered event 4 changed.
    with Session(engine) as session:
        events = {e.seq: e for e in session.exec(select(AuditEvent))}
        prev = events[2].hash
        for seq in (3, 4):
            event = events[seq]
            if seq == 3:
                event.actor = "forger"
            event.prev_hash = prev
            event.hash = prev = chain_hash(prev, event)
            session.add(event)
        session.commit()
    with Session(engine) as session:
        report = audit.verify_through(session, 6)
    assert (report.ok, report.first_bad) == (False, 5)


def test_check_events_rehashes_cited_events_and_their_links(engine: Engine, now: datetime) -> None:
    _fill(engine, now)
    audit = AuditLog(KEY)
    with Session(engine) as session:
        assert audit.check_events(session, [1, 3, 5]).ok
    _sql(engine, "UPDATE audit_events SET subject = 'other' WHERE seq = 3")
    with Session(engine) as session:
        report = audit.check_events(session, [1, 3, 5])
        assert (report.ok, report.first_bad) == (False, 3)
        assert audit.check_events(session, [1, 5]).ok
        assert audit.check_events(session, [9]).first_bad == 9

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage.audit import AuditEntry, AuditEvent, AuditLog
from storage.group_commit import MAX_GROUP, GroupCommit, Work

KEY = b"g" * 32
_PROBES = sa.table("group_commit_probe", sa.column("name"))


@pytest.fixture
def probe_engine(engine: Engine) -> Iterator[Engine]:
    """The migrated database plus a table that the works below write to."""
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE group_commit_probe (name TEXT PRIMARY KEY)"))
    yield engine
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE group_commit_probe"))


class Commits:
    """Counts the transactions that commit on an engine."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "commit", self._seen)

    def _seen(self, _connection: sa.Connection) -> None:
        self.count += 1


def insert(name: str, *, fail: bool = False) -> Work[str]:
    """A work that writes one row and one audit entry, then maybe fails."""

    def work(connection: sa.Connection, events: list[AuditEntry]) -> str:
        connection.execute(sa.insert(_PROBES).values(name=name))
        events.append(AuditEntry("probe.written", "tester", subject=name))
        if fail:
            raise ValueError(f"{name} fails after writing")
        return name

    return work


def held_until(release: threading.Event, then: Work[str]) -> Work[str]:
    """A work that keeps the writer busy, so that the works after it queue up."""

    def work(connection: sa.Connection, events: list[AuditEntry]) -> str:
        assert release.wait(10)
        return then(connection, events)

    return work


def names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.select(_PROBES.c.name)).scalars())


def audited(engine: Engine) -> list[str | None]:
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.seq))  # type: ignore[arg-type]
        return [event.subject for event in events]


def verifies(engine: Engine, audit: AuditLog) -> bool:
    with Session(engine) as session:
        return audit.verify(session).ok


async def queued_behind_one(
    commit: GroupCommit, works: list[Work[str]]
) -> list[str | BaseException]:
    """Run ``works`` as one group: the first work holds the writer until all are queued."""
    release = threading.Event()
    first = asyncio.ensure_future(commit.run(held_until(release, insert("first"))))
    await asyncio.sleep(0.05)  # the writer has taken "first" and waits for release
    rest = [asyncio.ensure_future(commit.run(work)) for work in works]
    await asyncio.sleep(0)
    release.set()
    await first
    return await asyncio.gather(*rest, return_exceptions=True)


def group_commit(engine: Engine, now: Callable[[], datetime]) -> tuple[GroupCommit, AuditLog]:
    audit = AuditLog(KEY)
    return GroupCommit(engine, audit, now), audit


def test_works_waiting_together_commit_in_one_transaction(
    probe_engine: Engine, now: datetime
) -> None:
    commit, audit = group_commit(probe_engine, lambda: now)
    commits = Commits(probe_engine)
    try:
        results = asyncio.run(queued_behind_one(commit, [insert(f"w{i}") for i in range(20)]))
    finally:
        commit.close()

    assert results == [f"w{i}" for i in range(20)]
    assert commits.count == 2  # "first" alone, then the twenty together
    assert names(probe_engine) == {"first"} | {f"w{i}" for i in range(20)}
    assert audited(probe_engine) == ["first"] + [f"w{i}" for i in range(20)]
    assert verifies(probe_engine, audit)


def test_a_group_is_bounded(probe_engine: Engine, now: datetime) -> None:
    commit, _ = group_commit(probe_engine, lambda: now)
    commits = Commits(probe_engine)
    count = MAX_GROUP + 5
    try:
        results = asyncio.run(queued_behind_one(commit, [insert(f"w{i}") for i in range(count)]))
    finally:
        commit.close()

    assert results == [f"w{i}" for i in range(count)]
    assert commits.count == 3  # "first", a full group, the five left over


def test_a_failing_work_fails_alone_and_leaves_nothing(probe_engine: Engine, now: datetime) -> None:
    commit, audit = group_commit(probe_engine, lambda: now)
    works = [insert("a"), insert("bad", fail=True), insert("b")]
    try:
        results = asyncio.run(queued_behind_one(commit, works))
    finally:
        commit.close()

    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], ValueError)
    assert names(probe_engine) == {"first", "a", "b"}
    assert audited(probe_engine) == ["first", "a", "b"]
    assert verifies(probe_engine, audit)


def test_a_database_error_fails_only_its_work(probe_engine: Engine, now: datetime) -> None:
    commit, audit = group_commit(probe_engine, lambda: now)
    # The second "dup" breaks the primary key inside the group's transaction.
    works = [insert("dup"), insert("c"), insert("dup")]
    try:
        results = asyncio.run(queued_behind_one(commit, works))
    finally:
        commit.close()

    assert results[:2] == ["dup", "c"]
    assert isinstance(results[2], sa.exc.IntegrityError)
    assert names(probe_engine) == {"first", "dup", "c"}
    assert verifies(probe_engine, audit)


def test_run_alone_commits_on_the_callers_thread(probe_engine: Engine, now: datetime) -> None:
    commit, audit = group_commit(probe_engine, lambda: now)
    assert commit.run_alone(insert("solo")) == "solo"
    with pytest.raises(ValueError, match="fails after writing"):
        commit.run_alone(insert("broken", fail=True))
    commit.close()

    assert names(probe_engine) == {"solo"}
    assert audited(probe_engine) == ["solo"]
    assert verifies(probe_engine, audit)


def test_close_finishes_what_was_submitted_then_refuses(
    probe_engine: Engine, now: datetime
) -> None:
    commit, _ = group_commit(probe_engine, lambda: now)

    async def submit_then_close() -> list[str]:
        release = threading.Event()
        pending = [asyncio.ensure_future(commit.run(held_until(release, insert("x"))))]
        pending += [asyncio.ensure_future(commit.run(insert(f"y{i}"))) for i in range(3)]
        await asyncio.sleep(0.05)
        closing = asyncio.get_running_loop().run_in_executor(None, commit.close)
        release.set()
        await closing
        return await asyncio.gather(*pending)

    assert asyncio.run(submit_then_close()) == ["x", "y0", "y1", "y2"]
    assert names(probe_engine) == {"x", "y0", "y1", "y2"}
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(commit.run(insert("late")))
    commit.close()  # idempotent


def test_a_caller_that_went_away_does_not_stop_the_others(
    probe_engine: Engine, now: datetime
) -> None:
    commit, _ = group_commit(probe_engine, lambda: now)

    async def cancel_one() -> list[str | BaseException]:
        release = threading.Event()
        first = asyncio.ensure_future(commit.run(held_until(release, insert("first"))))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(commit.run(insert("gone")))
        kept = asyncio.ensure_future(commit.run(insert("kept")))
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        return await asyncio.gather(first, kept, gone, return_exceptions=True)

    try:
        first, kept, gone = asyncio.run(cancel_one())
    finally:
        commit.close()

    assert (first, kept) == ("first", "kept")
    assert isinstance(gone, asyncio.CancelledError)
    # Its write was submitted before the caller left, and commits like any other.
    assert names(probe_engine) == {"first", "gone", "kept"}

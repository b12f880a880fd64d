"""The audit feed: committed events reach an engine's watchers, and the feed forgets the engine."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from storage import audit_feed
from storage.audit import AuditLog
from storage.audit_feed import FedEvent
from storage.db import create_db_engine, migrate

KEY = b"k" * 32


def _append(engine: Engine, now: datetime, *, commit: bool = True) -> None:
    with engine.connect() as connection:
        AuditLog(KEY).append(connection, kind="test.event", actor="tester", now=now)
        if commit:
            connection.commit()
        else:
            connection.rollback()


def test_watchers_see_committed_events_until_they_unwatch(engine: Engine, now: datetime) -> None:
    first: list[str] = []
    second: list[str] = []

    def see_first(events: Sequence[FedEvent]) -> None:
        first.extend(e.kind for e in events)

    def see_second(events: Sequence[FedEvent]) -> None:
        second.extend(e.kind for e in events)

    audit_feed.watch(engine, see_first)
    audit_feed.watch(engine, see_second)
    _append(engine, now)
    _append(engine, now, commit=False)
    audit_feed.unwatch(engine, see_first)
    _append(engine, now)

    assert first == ["test.event"]
    assert second == ["test.event", "test.event"]
    audit_feed.unwatch(engine, see_second)
    with engine.connect() as connection:
        assert not audit_feed.watched(connection)


def test_a_watched_engine_is_freed_once_its_owners_are(tmp_path: Path, now: datetime) -> None:
    class Owner:
        """Holds the engine it watches, as a backend, an app or its metrics do."""

        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.seen = 0
            audit_feed.watch(engine, self.observe)

        def observe(self, events: Sequence[FedEvent]) -> None:
            self.seen += len(events)

    engine = create_db_engine(f"sqlite:///{tmp_path / 'feed.db'}")
    migrate(engine)
    owner = Owner(engine)
    _append(engine, now)
    assert owner.seen == 1
    engine.dispose()
    freed = weakref.ref(engine)
    del engine, owner

    gc.collect()
    assert freed() is None

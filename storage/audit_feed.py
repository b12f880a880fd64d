"""Committed audit events, handed to whoever watches an engine: metrics and the event log.

Every domain event goes through the audit log, so this is the one place that sees them
all. The log stages the events it appends on the transaction's connection; when that
transaction commits, each watcher of the engine gets them, and a rollback drops them.
So a group commit that rolls back and runs again is seen once, and nothing that did
not commit is seen at all. (The hook runs as the COMMIT is sent: a COMMIT that then
fails would still be seen, which the stores callrec uses do not do for these writes.)
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

_PENDING = "callrec.audit_feed.pending"
# Data fields a log line may carry: ids and codes, never anything personal.
_LOGGED_FIELDS = ("call_id", "record", "reason", "state", "grant_id", "rule", "role")


class FedEvent(NamedTuple):
    """An audit event as committed."""

    seq: int
    at: datetime
    kind: str
    actor: str
    client_id: str | None
    subject: str | None
    data: Mapping[str, Any]


Watcher = Callable[[Sequence[FedEvent]], None]


class _Feed:
    """An engine's watchers, listening on its commits and rollbacks.

    The engine's own listeners hold it, so it lives exactly as long as the engine. The
    watchers usually hold the engine too (through a backend or an app): kept in a
    module-level map instead, they would keep every engine ever watched, with its pool,
    its caches and all its owners, alive for the life of the process.
    """

    def __init__(self) -> None:
        self.watchers: list[Watcher] = []

    def on_commit(self, connection: sa.Connection) -> None:
        events: list[FedEvent] | None = connection.info.pop(_PENDING, None)
        if not events:
            return
        for watcher in list(self.watchers):  # one may be removed from another thread
            try:
                watcher(events)
            except Exception:  # a watcher's bug must not undo a committed transaction
                log.exception("audit event watcher failed")

    @staticmethod
    def on_rollback(connection: sa.Connection) -> None:
        connection.info.pop(_PENDING, None)


# Weak both ways: an entry goes when its engine goes (the engine holds its feed).
_feeds: weakref.WeakKeyDictionary[Engine, weakref.ref[_Feed]] = weakref.WeakKeyDictionary()


def _feed_of(engine: Engine) -> _Feed | None:
    ref = _feeds.get(engine)
    return ref() if ref is not None else None


def watch(engine: Engine, watcher: Watcher) -> None:
    """Call ``watcher`` with the audit events of each transaction on ``engine`` that commits.

    It runs in the committing thread, so it must be quick and must not raise. It is
    called until ``unwatch`` or until the engine itself is gone.
    """
    feed = _feed_of(engine)
    if feed is None:
        feed = _Feed()
        sa.event.listen(engine, "commit", feed.on_commit)
        sa.event.listen(engine, "rollback", feed.on_rollback)
        _feeds[engine] = weakref.ref(feed)
    feed.watchers.append(watcher)


def unwatch(engine: Engine, watcher: Watcher) -> None:
    """Stop calling ``watcher`` (a no-op if it is not watching ``engine``)."""
    feed = _feed_of(engine)
    if feed is not None:
        with contextlib.suppress(ValueError):
            feed.watchers.remove(watcher)


def watched(connection: sa.Connection) -> bool:
    feed = _feed_of(connection.engine)
    return feed is not None and bool(feed.watchers)


def stage(connection: sa.Connection, events: Iterable[FedEvent]) -> None:
    """Keep ``events`` with the connection's transaction until it ends."""
    connection.info.setdefault(_PENDING, []).extend(events)


def log_events(events: Sequence[FedEvent]) -> None:
    """One structured INFO line per event: its ids and codes (``extra["event"]`` too)."""
    if not log.isEnabledFor(logging.INFO):
        return
    for event in events:
        fields: dict[str, Any] = {
            "seq": event.seq,
            "client": event.client_id,
            "subject": event.subject,
            "actor": event.actor,
        }
        fields.update((k, event.data[k]) for k in _LOGGED_FIELDS if k in event.data)
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        log.info("%s %s", event.kind, text, extra={"event": {"kind": event.kind, **fields}})

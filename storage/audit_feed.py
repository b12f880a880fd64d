"""Committed audit events, handed to whoever watches an engine: metrics and the event log.

Every domain event goes through the audit log, so this is the one place that sees them
all. The log stages the events it appends on the transaction's connection; when that
transaction commits, each watcher of the engine gets them, and a rollback drops them.
So a group commit that rolls back and runs again is seen once, and nothing that did
not commit is seen at all. (The hook runs as the COMMIT is sent: a COMMIT that then
fails would still be seen, which the stores callrec uses do not do for these writes.)
"""

from __future__ import annotations

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
_watchers: weakref.WeakKeyDictionary[Engine, list[Watcher]] = weakref.WeakKeyDictionary()


def watch(engine: Engine, watcher: Watcher) -> None:
    """Call ``watcher`` with the audit events of each transaction on ``engine`` that commits.

    It runs in the committing thread, so it must be quick and must not raise.
    """
    if engine not in _watchers:
        _watchers[engine] = []
        sa.event.listen(engine, "commit", _on_commit)
        sa.event.listen(engine, "rollback", _on_rollback)
    _watchers[engine].append(watcher)


def watched(connection: sa.Connection) -> bool:
    return connection.engine in _watchers


def stage(connection: sa.Connection, events: Iterable[FedEvent]) -> None:
    """Keep ``events`` with the connection's transaction until it ends."""
    connection.info.setdefault(_PENDING, []).extend(events)


def _on_commit(connection: sa.Connection) -> None:
    events: list[FedEvent] | None = connection.info.pop(_PENDING, None)
    if not events:
        return
    for watcher in _watchers.get(connection.engine, ()):
        try:
            watcher(events)
        except Exception:  # a watcher's bug must not undo a committed transaction
            log.exception("audit event watcher failed")


def _on_rollback(connection: sa.Connection) -> None:
    connection.info.pop(_PENDING, None)


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

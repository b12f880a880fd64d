"""What a call decision reads, in as few queries as correctness allows.

Per call, one statement reads whether the call was decided already and everything
about the client that may change at any moment: its status, its retention overrides,
whether either party is on its do-not-record list, and the head (newest event) of its
consent ledger. The ledger itself is read again only when that head has moved since
this process last read it.
Reference data (the purposes' default retention, the jurisdiction rule book) changes
only through migrations and is read once per process (``registry.Reference``).

Why caching the ledger is safe with many replicas on one database: the ledger is
append-only, and each event takes the client's next ``ledger_version`` under a unique
constraint, so version n+1 can only be written by a transaction that saw version n
committed. The newest event's (version, id) therefore names exactly one set of
events. A grant or revocation committed by any replica changes it, and the next
decision anywhere, reading the head in its own transaction, reloads the ledger: a
revocation stops recording at once. The id guards against a database restored to an
earlier state and written to again, where a version number could come back with
different events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from consent import ledger, registry
from consent.clients import Client, ClientStatus
from consent.decisions import DECISIONS
from consent.domain import ClientConsent, Grant
from consent.ledger import ConsentEvent
from consent.objections import Objection
from consent.registry import Reference, RetentionOverride

__all__ = ["CallSnapshot", "ConsentReader", "LedgerHead"]

# One process serves a bounded number of clients' ledgers from memory; beyond that the
# oldest entry goes (a miss only costs one ledger read).
MAX_CACHED_CLIENTS = 10_000

_CLIENTS: sa.Table = Client.__table__  # type: ignore[attr-defined]
_EVENTS: sa.Table = ConsentEvent.__table__  # type: ignore[attr-defined]
_OVERRIDES: sa.Table = RetentionOverride.__table__  # type: ignore[attr-defined]
_OBJECTIONS: sa.Table = Objection.__table__  # type: ignore[attr-defined]


def _newest(column: sa.Column[object]) -> sa.ScalarSelect[object]:
    # Served by the unique index on (client_id, ledger_version).
    return (
        sa.select(column)
        .where(_EVENTS.c.client_id == sa.bindparam("client_id"))
        .order_by(_EVENTS.c.ledger_version.desc())
        .limit(1)
        .scalar_subquery()
    )


def _objected(party: str) -> sa.Exists:
    # A primary-key look-up, however long the client's do-not-record list is.
    return sa.exists().where(
        _OBJECTIONS.c.client_id == sa.bindparam("client_id"),
        _OBJECTIONS.c.phone_hash == sa.bindparam(party),
    )


# The call's earlier decision, if any (unique index on client_id, call_id).
_DECIDED = (
    sa.select(DECISIONS.c.id)
    .where(
        DECISIONS.c.client_id == sa.bindparam("client_id"),
        DECISIONS.c.call_id == sa.bindparam("call_id"),
    )
    .scalar_subquery()
)

# One row per retention override (one row with NULLs without any), none for an
# unknown client. The sub-selects use only bound values, so they run once per query.
_SNAPSHOT = (
    sa.select(
        _DECIDED.label("decided"),
        _CLIENTS.c.status,
        _newest(_EVENTS.c.ledger_version).label("head_version"),
        _newest(_EVENTS.c.id).label("head_id"),
        _objected("caller").label("caller_objected"),
        _objected("callee").label("callee_objected"),
        _OVERRIDES.c.purpose,
        _OVERRIDES.c.days,
    )
    .select_from(_CLIENTS.outerjoin(_OVERRIDES, _OVERRIDES.c.client_id == _CLIENTS.c.id))
    .where(_CLIENTS.c.id == sa.bindparam("client_id"))
)


@dataclass(frozen=True, slots=True)
class CallSnapshot:
    """What ``ConsentReader.read`` found for one call.

    ``decided`` is the id of the call's decision if it was decided already; then
    ``consent`` is not read and stays None. Otherwise ``consent`` is None only for a
    client that does not exist.
    """

    decided: str | None
    consent: ClientConsent | None


_DECIDED_ONLY = sa.select(_DECIDED)


class LedgerHead(NamedTuple):
    """The newest event of a client's ledger: it names the whole ledger."""

    version: int
    event_id: str


class ConsentReader:
    """Reads ``ClientConsent`` snapshots; one per process (it holds the caches).

    Safe to share between threads: entries are replaced whole, never mutated.
    """

    def __init__(self, max_clients: int = MAX_CACHED_CLIENTS) -> None:
        self._max_clients = max_clients
        self._reference: Reference | None = None
        self._ledgers: dict[str, tuple[LedgerHead | None, tuple[Grant, ...]]] = {}
        self._lock = threading.Lock()

    def reference(self, connection: sa.Connection) -> Reference:
        """Purposes and rule book, read on first use (a failed read is retried next time)."""
        reference = self._reference
        if reference is None:
            with Session(bind=connection) as session:
                reference = self._reference = registry.load_reference(session)
        return reference

    def read(
        self,
        connection: sa.Connection,
        *,
        client_id: str,
        call_id: str,
        participants: tuple[str, str],
    ) -> CallSnapshot:
        """The call's earlier decision, or the client's consent for a call between
        ``participants`` (keyed phone hashes), in the caller's transaction.

        ``objections`` holds only those of the two participants that are on the
        client's do-not-record list: all that decide() asks about.
        """
        caller, callee = participants
        params = {"client_id": client_id, "call_id": call_id, "caller": caller, "callee": callee}
        rows = connection.execute(_SNAPSHOT, params).all()
        if not rows:  # no such client; a decision may still exist (unknown_client)
            return CallSnapshot(connection.execute(_DECIDED_ONLY, params).scalar(), None)
        first = rows[0]
        if first.decided is not None:
            return CallSnapshot(first.decided, None)
        days = dict(self.reference(connection).default_days)
        days.update({row.purpose: row.days for row in rows if row.purpose is not None})
        hits = (first.caller_objected, first.callee_objected)
        head = None if first.head_id is None else LedgerHead(first.head_version, first.head_id)
        consent = ClientConsent(
            client_id=client_id,
            active=first.status == ClientStatus.ACTIVE,
            grants=self._grants(connection, client_id, head),
            retention_days=days,
            objections=frozenset(p for p, hit in zip(participants, hits, strict=True) if hit),
        )
        return CallSnapshot(None, consent)

    def _grants(
        self, connection: sa.Connection, client_id: str, head: LedgerHead | None
    ) -> tuple[Grant, ...]:
        if head is None:
            return ()
        cached = self._ledgers.get(client_id)
        if cached is not None and cached[0] == head:
            return cached[1]
        # The ORM here, on the caller's transaction: this runs only after a change.
        with Session(bind=connection) as session:
            events = ledger.ledger(session, client_id)
        grants = tuple(ledger.to_grant(g, r) for g, r in ledger.current_grants(events).values())
        # Keyed by the head of what was actually read: on PostgreSQL (read committed)
        # that may be newer than ``head``, and must not be filed under the older one.
        loaded = LedgerHead(events[-1].ledger_version, events[-1].id) if events else None
        with self._lock:
            if client_id not in self._ledgers and len(self._ledgers) >= self._max_clients:
                del self._ledgers[next(iter(self._ledgers))]
            self._ledgers[client_id] = (loaded, grants)
        return grants

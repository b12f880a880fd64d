"""Group commit: short write transactions that arrive together commit as one.

Every call setup writes a decision and appends an event to the audit chain, whose one
head makes writers wait for each other anyway. Here one writer thread takes all the
work waiting, runs it in one transaction and commits once: BEGIN, the chain's head and
anchor and COMMIT are paid per group instead of per call, and requests do not each
take a worker thread only to queue for the database. Under light load a group holds
one work, and a work waits no longer than a transaction of its own would.

A work is a function of the group's connection and the list of audit entries the
group appends when every work has run. A work that raises rolls the whole group back;
then each work runs again alone, in a transaction of its own, so that one failure
never takes another work's writes with it. A work may therefore run twice: its effects
belong in the connection only. A refusal that is not a failure (a wrong key, say) is a
work's result, not an exception.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.audit import AuditEntry, AuditLog
from storage.db import connection_scope
from storage.errors import AuditChainBroken

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sa.Connection, list[AuditEntry]], T]

# Enough to empty the queue of a busy server in one go; a bound keeps one transaction
# (and the write lock it holds) short.
MAX_GROUP = 64


@dataclass(frozen=True)
class _Pending:
    work: Work[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class GroupCommit:
    """Runs works submitted from event loops in groups, on one thread of its own."""

    def __init__(self, engine: Engine, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._audit = audit
        self._clock = clock
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    async def run(self, work: Work[T]) -> T:
        """Run ``work`` in the next group; its result once the group has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(_Pending(work, loop, future))
        return await future

    def run_alone(self, work: Work[T]) -> T:
        """Run ``work`` now in a transaction of its own, on the caller's thread."""
        with connection_scope(self._engine) as connection:
            entries: list[AuditEntry] = []
            result = work(connection, entries)
            self._audit.append_many(connection, entries, now=self._clock())
        return result

    def close(self) -> None:
        """Finish the work already submitted, then stop the thread. Idempotent."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()

    def _submit(self, pending: _Pending) -> None:
        # Under the lock, so that nothing lands behind the stop that close() queues.
        with self._lock:
            if self._closed:
                raise RuntimeError("the group commit is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put(pending)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(pending)
            try:
                self._commit(group)
            except BaseException as exc:  # never leave a caller waiting for ever
                _settle(group, [], exc)
                raise

    def _commit(self, group: list[_Pending]) -> None:
        try:
            with connection_scope(self._engine) as connection:
                entries: list[AuditEntry] = []
                results = [pending.work(connection, entries) for pending in group]
                self._audit.append_many(connection, entries, now=self._clock())
        except AuditChainBroken as exc:
            # Fails every work alike: running each alone would only fail each again.
            _settle(group, [], exc)
            return
        except Exception as exc:
            if len(group) == 1:
                _settle(group, [], exc)
                return
            log.info("a group of %d writes failed (%s); each runs alone", len(group), exc)
            for pending in group:
                self._commit([pending])
            return
        _settle(group, results, None)


def _settle(group: list[_Pending], results: list[Any], error: BaseException | None) -> None:
    """Hand each future its outcome on its own loop: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any]]] = {}
    for index, pending in enumerate(group):
        by_loop.setdefault(pending.loop, []).append(
            (pending, error if error is not None else results[index])
        )
    for loop, outcomes in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting there any more.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, outcomes, error is not None)


def _resolve(outcomes: list[tuple[_Pending, Any]], failed: bool) -> None:
    for pending, outcome in outcomes:
        if pending.future.done():  # the caller went away (cancelled)
            continue
        if failed:
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

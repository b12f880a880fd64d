"""Webhooks: what the outbox adds to an event's transaction, and how fast the outbox drains.

(a) The outbox's cost to an event's transaction. That transaction writes the audit
event and nothing more for webhooks: the audit log is the outbox's first half, and the
dispatcher fans events out to endpoints later (storage.webhook_fanout). (Before that
design, a webhook-type event paid an endpoint look-up and, when subscribed, an outbox
row in its own transaction.) Measured on transactions shaped like the call hook's
write (one audit event appended in its own transaction, committed), ``TRANSACTIONS``
per measure:

- ``consent.revoked`` of a client with no endpoint (the baseline),
- ``consent.revoked`` of a client with an endpoint subscribed to every type,
- ``call.decided`` of that same client (what the call hook appends).

The cases take turns in chunks of ``CHUNK`` transactions over ``ROUNDS`` rounds; the
median per transaction of each, in wall time and in this process's CPU time (the
figure the other jobs of a shared machine disturb least). Ratio = a case / the
baseline (target <= 1.10).

(b) Delivery: ``EVENTS`` events of a subscribed type are written, then one dispatcher
(the gateway's, default concurrency) fans them out and sends them to a receiver on
127.0.0.1 — uvicorn with a bare ASGI app answering 200, in a process of its own so that
it takes its own core — until every delivery is settled as delivered. Rate = events /
that time (target >= 500/s). Each payload is signed, as in production.

(c) and (d), real operations with and without a subscribed endpoint (the call hook's
throughput, a recording stored): see ``bench.webhook_operations``.

All on SQLite (the embedded default) and on PostgreSQL when one answers on
``CALLREC_BENCH_POSTGRES_URL`` (a throw-away database is created and dropped).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bench import webhook_operations
from bench.harness import now
from recorder.webhook_dispatch import WebhookDispatcher
from storage import outbox, webhooks
from storage.audit import AuditEntry, AuditEvent, AuditLog
from storage.db import connection_scope, create_db_engine, migrate, session_scope
from storage.keyring import Keyring
from storage.webhook_events import EVENT_TYPES
from storage.webhook_fanout import WebhookFanoutCursor

ADMIN_URL = os.environ.get(
    "CALLREC_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Transactions per case and round: PostgreSQL commits cost ~10x SQLite's here (fsync).
TRANSACTIONS = {"sqlite": 1000, "postgresql": 200}
CHUNK = 50
ROUNDS = 3
EVENTS = 5000
TARGET_RATIO = 1.10
TARGET_RATE = 500.0
HOST = "127.0.0.1"


# --- the receiver (its own process) ------------------------------------------------


async def _receive(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _serve(port: int) -> None:
    uvicorn.run(_receive, host=HOST, port=port, log_level="warning", access_log=False)


@contextmanager
def receiver() -> Iterator[str]:
    with socket.socket() as probe:  # a free port for the child to bind
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,))
    process.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the receiver did not start") from None
                time.sleep(0.05)
        yield f"http://{HOST}:{port}/hooks"
    finally:
        process.terminate()
        process.join(timeout=10)


# --- databases ---------------------------------------------------------------------


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """The URL of a throw-away PostgreSQL database (dropped after), None if none answers."""
    try:
        admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            name = f"bench_webhooks_{secrets.token_hex(4)}"
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        print(f"  PostgreSQL: not measured ({str(exc).splitlines()[0]})")
        yield None
        return
    try:
        yield admin.url.set(database=name).render_as_string(False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def databases(workdir: Path) -> Iterator[tuple[str, Engine]]:
    """SQLite, then PostgreSQL if one answers; each migrated and empty."""
    engine = create_db_engine(f"sqlite:///{workdir / 'callrec.db'}")
    migrate(engine)
    try:
        yield "sqlite", engine
    finally:
        engine.dispose()
    with postgres_database() as url:
        if url is None:
            return
        engine = create_db_engine(url)
        try:
            migrate(engine)
            yield "postgresql", engine
        finally:
            engine.dispose()


def subscribe(engine: Engine, keyring: Keyring, audit: AuditLog, client_id: str, url: str) -> None:
    with session_scope(engine) as session:
        webhooks.create_endpoint(
            session,
            client_id=client_id,
            url=url,
            events=EVENT_TYPES,
            gateway=webhooks.Gateway(HOST, 1),
            keyring=keyring,
            audit=audit,
            actor="bench",
            now=now(),
        )


# --- (a) the outbox's cost ---------------------------------------------------------


def transactions(
    engine: Engine, audit: AuditLog, kind: str, client_id: str, count: int
) -> tuple[float, float]:
    """Wall and CPU seconds for ``count`` transactions appending one ``kind`` event each."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        entry = AuditEntry(kind, "bench", client_id=client_id, subject=f"g{i}", data={"n": i})
        with connection_scope(engine) as connection:
            audit.append_many(connection, [entry], now=now())
    return time.perf_counter() - wall, time.process_time() - cpu


def outbox_cost(
    engine: Engine, keyring: Keyring, audit: AuditLog, count: int
) -> dict[str, tuple[float, float]]:
    """Per case: median wall and CPU seconds per transaction over the rounds."""
    subscribe(engine, keyring, audit, "subscribed", "http://192.0.2.1:9/never")
    cases: dict[str, tuple[str, str]] = {
        "unsubscribed consent.revoked": ("consent.revoked", "quiet"),
        "subscribed consent.revoked": ("consent.revoked", "subscribed"),
        "subscribed call.decided": ("call.decided", "subscribed"),
    }
    transactions(engine, audit, "consent.revoked", "warmup", CHUNK)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for round_ in range(ROUNDS):
        totals = dict.fromkeys(cases, (0.0, 0.0))
        # Small chunks, the cases taking turns: a machine whose load drifts meets each alike.
        for chunk in range(count // CHUNK):
            names = list(cases) if (round_ + chunk) % 2 == 0 else list(reversed(cases))
            for name in names:
                wall, cpu = transactions(engine, audit, *cases[name], CHUNK)
                totals[name] = (totals[name][0] + wall, totals[name][1] + cpu)
        for name, (wall, cpu) in totals.items():
            samples[name].append((wall / count, cpu / count))
    with connection_scope(engine) as connection:  # these events are never to be sent
        connection.execute(sa.delete(outbox.WebhookDelivery.__table__))  # type: ignore[attr-defined]
        head = connection.execute(sa.select(sa.func.max(AuditEvent.seq))).scalar_one()
        connection.execute(sa.update(WebhookFanoutCursor).values(seq=head))
    return {
        name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
        for name, s in samples.items()
    }


# --- (b) delivery rate -------------------------------------------------------------


def delivery_rate(engine: Engine, keyring: Keyring, audit: AuditLog, url: str) -> float:
    subscribe(engine, keyring, audit, "receiving", url)
    for start in range(0, EVENTS, 500):
        entries = [
            AuditEntry("consent.revoked", "bench", client_id="receiving", subject=f"g{i}")
            for i in range(start, min(start + 500, EVENTS))
        ]
        with connection_scope(engine) as connection:
            audit.append_many(connection, entries, now=now())
    delivered = sa.select(sa.func.count()).where(
        outbox.WebhookDelivery.status == outbox.DELIVERED  # type: ignore[arg-type]
    )

    async def drain() -> float:
        dispatcher = WebhookDispatcher(engine=engine, keyring=keyring, poll_s=0.05)
        started = time.perf_counter()
        await dispatcher.start()
        try:
            while True:
                await asyncio.sleep(0.05)
                count = await asyncio.to_thread(_count, engine, delivered)
                if count >= EVENTS:
                    return time.perf_counter() - started
                if dispatcher.failed:
                    raise RuntimeError(f"{dispatcher.failed} deliveries failed")
        finally:
            await dispatcher.stop()

    return EVENTS / asyncio.run(drain())


def _count(engine: Engine, query: sa.Select[Any]) -> int:
    with Session(engine) as session:
        return int(session.execute(query).scalar_one())


def _fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:8.0f} µs"


def run() -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, receiver() as url:
        for name, engine in databases(Path(tmp)):
            keyring = Keyring(secrets.token_bytes(32))
            audit = AuditLog(keyring.derive("audit-anchor"))
            count = TRANSACTIONS[name]
            costs = outbox_cost(engine, keyring, audit, count)
            base_wall, base_cpu = costs["unsubscribed consent.revoked"]
            print(
                f"  {name}: one audited event per transaction, {count} per case and round, "
                f"median of {ROUNDS} rounds (wall, and this process's CPU)"
            )
            for case, (wall, cpu) in costs.items():
                ratio = (
                    ""
                    if case.startswith("unsub")
                    else (f"  ratio wall {wall / base_wall:.3f}, CPU {cpu / base_cpu:.3f}")
                )
                print(f"    {case:30s} {_fmt_us(wall)} wall {_fmt_us(cpu)} CPU{ratio}")
                results[f"{name}_{case.replace(' ', '_')}_cpu_s"] = cpu
            subscribed = costs["subscribed consent.revoked"]
            results[f"{name}_outbox_ratio_cpu"] = subscribed[1] / base_cpu
            results[f"{name}_outbox_ratio_wall"] = subscribed[0] / base_wall
            print(
                f"    a subscribed event's transaction: {subscribed[1] / base_cpu - 1:+.1%} CPU "
                f"(goal <= +{TARGET_RATIO - 1:.0%})"
            )
            rate = delivery_rate(engine, keyring, audit, url)
            status = "meets" if rate >= TARGET_RATE else "MISSES"
            print(
                f"  {name}: delivered {EVENTS} signed webhooks to a local receiver at "
                f"{rate:,.0f}/s ({status} >= {TARGET_RATE:.0f}/s)"
            )
            results[f"{name}_delivery_rate"] = rate
    # (c) and (d): real operations, each on a database of its own.
    results.update(webhook_operations.report("sqlite", lambda: nullcontext(None)))
    with postgres_database() as url:
        answers = url is not None
    if answers:
        results.update(webhook_operations.report("postgresql", postgres_database))
    return results


if __name__ == "__main__":
    run()

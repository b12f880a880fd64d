"""Evidence for one recording in a catalog of 1,000,000 recordings on PostgreSQL.

A throw-away database on 127.0.0.1:5432 (user postgres) is created and migrated. The
catalog is filled in the server with ``INSERT … SELECT generate_series``: 100 clients
with one grant each, N call decisions and N stored recordings with two purposes each.
The audit log is a real chain, hashed here as ``AuditLog.append`` hashes it and sent
with COPY: the grants' events, then per recording its ``call.decided`` and
``recording.stored`` events and, for one in ten, a read (``recording.accessed``); a
hold on a few recordings; then the authenticated anchor, and VACUUM ANALYZE.

Measured: ``recording_evidence`` (the domain call behind ``GET
/v1/recordings/{id}/evidence``) for recordings drawn at random, p50/p95/max of
``SAMPLES``, after one walk of the whole chain (a gateway walks it once; later answers
walk only what was appended since), whose time is shown apart. Baseline, same run:
the primary-key read of the same recordings' rows. Target: p95 <= 50 ms. The plans of
the evidence's queries are printed (EXPLAIN) to show they use indexes. The database is
dropped at the end.

``CALLREC_BENCH_EVIDENCE_N`` sets N (default 1,000,000).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
import sqlalchemy as sa
from sqlmodel import Session

from retention.evidence import recording_evidence
from storage.audit import GENESIS_HASH, AuditLog, _canonical, _hash
from storage.db import create_db_engine, migrate

ADMIN_URL = os.environ.get(
    "CALLREC_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RECORDINGS = int(os.environ.get("CALLREC_BENCH_EVIDENCE_N", "1000000"))
CLIENTS = 100
SAMPLES = 300
TARGET_MS = 50.0
KEY = b"bench-anchor-key".ljust(32, b"-")
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
START = NOW - timedelta(days=300)

_FILL = [
    """INSERT INTO clients (id, name, country, status, created_at)
       SELECT 'client-' || i, 'Client ' || i, 'MA', 'active', :start
       FROM generate_series(0, :clients - 1) AS i""",
    """INSERT INTO consent_events (id, client_id, grant_id, kind, ledger_version, purposes,
         directions, channels, notice, notice_version, notice_sha256, valid_from,
         granted_by, evidence, purge_existing, actor, at)
       SELECT 'evt-' || i, 'client-' || i, 'grant-' || i, 'grant', 1,
         '["improvement", "research"]', '["inbound", "outbound"]', '["upload"]', 'contract',
         NULL, NULL, :start, 'DPO', 'contract #' || i, false, 'bench', :start
       FROM generate_series(0, :clients - 1) AS i""",
    """INSERT INTO call_decisions (id, client_id, call_id, channel, direction, participants,
         record, reason, purposes, grant_id, grant_version, rule, rule_jurisdiction,
         rule_version, announcement_required, awaiting_caller_consent, state, decided_at,
         updated_at)
       SELECT 'dec_' || lpad(i::text, 8, '0'), 'client-' || (i % :clients), 'call-' || i,
         'upload', 'inbound', json_build_array(md5('a' || i), md5('b' || i))::text,
         true, 'recorded', '{}', 'grant-' || (i % :clients), 1, 'one_party', 'US-NY', 1,
         false, false, 'ended', :start, :start
       FROM generate_series(1, :n) AS i""",
    """INSERT INTO recordings (id, client_id, call_id, decision_id, channel, codec, container,
         channels, size, sha256, object_key, state, legal_hold, created_at, updated_at,
         purpose_names, last_expiry)
       SELECT 'rec_' || lpad(i::text, 8, '0'), 'client-' || (i % :clients), 'call-' || i,
         'dec_' || lpad(i::text, 8, '0'), 'upload', 'opus', 'ogg', 2, 40000, md5(i::text),
         'client-' || (i % :clients) || '/rec_' || lpad(i::text, 8, '0') || '.ogg',
         'stored', i % 1000 = 7, :start, :start, 'improvement,research',
         :start + interval '365 days'
       FROM generate_series(1, :n) AS i""",
    """INSERT INTO recording_purposes (recording_id, purpose, expires_at)
       SELECT 'rec_' || lpad(i::text, 8, '0'), p.name, :start + p.days * interval '1 day'
       FROM generate_series(1, :n) AS i
       CROSS JOIN (VALUES ('research', 365), ('improvement', 180)) AS p(name, days)""",
    """INSERT INTO legal_holds (id, reason, created_by, created_at)
       VALUES ('hold-1', 'litigation', 'bench', :start)""",
    """INSERT INTO legal_hold_targets (hold_id, kind, target)
       SELECT 'hold-1', 'recording', 'rec_' || lpad(i::text, 8, '0')
       FROM generate_series(7, :n, 1000) AS i""",
]

_COPY = (
    "COPY audit_events (seq, at, kind, actor, client_id, subject, data, prev_hash, hash) FROM STDIN"
)


def _data(fields: dict[str, object]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


def _events() -> object:
    """Every event, in chain order: (at, kind, actor, client_id, subject, data)."""
    for c in range(CLIENTS):
        data = {"version": 1, "purposes": ["improvement", "research"], "notice": "contract"}
        data |= {"notice_sha256": None}
        data["evidence_sha256"] = hashlib.sha256(f"contract #{c}".encode()).hexdigest()
        yield START, "consent.granted", "bench", f"client-{c}", f"grant-{c}", _data(data)
    held = {"reason": "litigation", "targets": "one recording in 1,000", "recordings": 1000}
    yield START, "legal_hold.placed", "key:reader", None, "hold-1", _data(held)
    for i in range(1, RECORDINGS + 1):
        at = START + timedelta(seconds=i * 20)
        client, rid, did = f"client-{i % CLIENTS}", f"rec_{i:08d}", f"dec_{i:08d}"
        decided = {
            "call_id": f"call-{i}",
            "record": True,
            "reason": "recorded",
            "purposes": {},
            "grant_id": f"grant-{i % CLIENTS}",
            "grant_version": 1,
            "rule": "one_party",
            "rule_jurisdiction": "US-NY",
            "state": "open",
        }
        yield at, "call.decided", "key:bench", client, did, _data(decided)
        stored = {
            "call_id": f"call-{i}",
            "object_key": f"{client}/{rid}.ogg",
            "size": 40000,
            "sha256": hashlib.md5(str(i).encode(), usedforsecurity=False).hexdigest(),
            "purposes": {"improvement": "2026-07-30", "research": "2027-01-27"},
        }
        yield at, "recording.stored", "callrec", client, rid, _data(stored)
        if i % 10 == 0:
            read = {"role": "compliance", "sha256": stored["sha256"]}
            yield at, "recording.accessed", "key:reader", client, rid, _data(read)


def _fill_audit(url: str) -> int:
    """Hash the chain as ``append`` does and COPY it in; returns the number of events."""
    seq, prev = 0, GENESIS_HASH
    conninfo = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo) as connection, connection.cursor() as cursor:
        with cursor.copy(_COPY) as copy:
            for at, kind, actor, client_id, subject, data in _events():  # type: ignore[attr-defined]
                seq += 1
                event = {
                    "seq": seq,
                    "at": at,
                    "kind": kind,
                    "actor": actor,
                    "client_id": client_id,
                    "subject": subject,
                    "data": data,
                }
                digest = _hash(prev, _canonical(event))
                copy.write_row((seq, at, kind, actor, client_id, subject, data, prev, digest))
                prev = digest
        mac = AuditLog(KEY)._mac(seq, prev)
        cursor.execute(
            "INSERT INTO audit_anchor (id, seq, hash, mac) VALUES (1, %s, %s, %s)", (seq, prev, mac)
        )
    return seq


_PLANS = {
    "audit events of a recording (by subject)": (
        "SELECT * FROM audit_events WHERE subject IN (:rid, :did, 'grant-1', 'hold-1') "
        "AND (client_id IS NULL OR client_id = 'client-1') ORDER BY seq"
    ),
    "holds naming it": (
        "SELECT * FROM legal_hold_targets WHERE (kind = 'recording' AND target = :rid) "
        "OR (kind = 'call' AND target = 'call-1') OR (kind = 'client' AND target = 'client-1')"
    ),
    "subject requests about its parties": (
        "SELECT id FROM subject_requests WHERE client_id = 'client-1' AND phone_hash IN ('a', 'b')"
    ),
    "its grant's ledger events": (
        "SELECT * FROM consent_events WHERE client_id = 'client-1' AND grant_id = 'grant-1'"
    ),
}


def _explain(engine: sa.Engine, rid: str, did: str) -> None:
    with engine.connect() as connection:
        for what, query in _PLANS.items():
            plan = connection.execute(
                sa.text(f"EXPLAIN {query}"), {"rid": rid, "did": did}
            ).scalars()
            print(f"  plan, {what}:")
            for line in plan:
                print(f"    {line}")


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run() -> dict[str, float]:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"callrec_bench_evidence_{secrets.token_hex(4)}"
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = create_db_engine(url)
    try:
        migrate(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            params = {"start": START, "n": RECORDINGS, "clients": CLIENTS}
            for statement in _FILL:
                connection.execute(sa.text(statement), params)
        filled = time.perf_counter()
        events = _fill_audit(url)
        chained = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
        print(
            f"filled {RECORDINGS:,} recordings in {filled - started:.0f} s, "
            f"{events:,} audit events hashed and copied in {chained - filled:.0f} s, "
            f"vacuumed in {time.perf_counter() - chained:.0f} s"
        )
        _explain(engine, "rec_00000001", "dec_00000001")

        audit = AuditLog(KEY)
        rng = random.Random(7)
        ids = [f"rec_{rng.randint(1, RECORDINGS):08d}" for _ in range(SAMPLES)]

        def evidence(rid: str) -> float:
            begun = time.perf_counter()
            with Session(engine) as session:
                answer = recording_evidence(session, rid, client_id=None, audit=audit, now=NOW)
            elapsed = time.perf_counter() - begun
            assert answer.chain.ok, answer.chain
            assert answer.decision is not None and answer.grant is not None
            assert answer.stored is not None and len(answer.purposes) == 2
            return elapsed * 1000

        # A gateway walks the whole chain once (here: as `GET /v1/audit/verify` does);
        # after that an answer walks only the events appended since.
        begun = time.perf_counter()
        with Session(engine) as session:
            assert audit.verify(session).ok
        first = (time.perf_counter() - begun) * 1000
        print(f"one walk of the whole chain ({events:,} events): {first / 1000:.1f} s")
        ours = [evidence(rid) for rid in ids]

        def row(rid: str) -> float:
            begun = time.perf_counter()
            with engine.connect() as connection:
                connection.execute(
                    sa.text("SELECT * FROM recordings WHERE id = :id"), {"id": rid}
                ).one()
            return (time.perf_counter() - begun) * 1000

        baseline = [row(rid) for rid in ids]
        p50, p95 = statistics.median(ours), _percentile(ours, 95)
        base95 = _percentile(baseline, 95)
        verdict = "OK" if p95 <= TARGET_MS else "TOO SLOW"
        print(
            f"evidence for one recording among {RECORDINGS:,} ({events:,} audit events): "
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(ours):.1f} ms over {SAMPLES} "
            f"(target p95 <= {TARGET_MS:.0f} ms: {verdict}); baseline primary-key read "
            f"p95 {base95:.2f} ms; ratio {p95 / base95:.0f}x"
        )
        return {"first_s": first / 1000, "p50_ms": p50, "p95_ms": p95, "baseline_p95_ms": base95}
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    run()

"""The retention report over 1,000,000 recordings on PostgreSQL, against a bare count.

A throw-away database on 127.0.0.1:5432 (user postgres) is created, migrated, filled
in the server with ``INSERT … SELECT generate_series`` (no row crosses the wire):
100 clients, 1,000,000 recordings created over the last year with 1 to 3 live
purposes each and their call decisions (0.1 % without a grant), 2 % purged, 1 %
restricted, 30,000 purge certificates in the period, a few holds and subject
requests; then VACUUM ANALYZE, as autovacuum would. Ours: ``build_report`` (median of
3). Baseline, same run: ``SELECT count(*) FROM recordings``. Target: at most 2 s. The
database is dropped at the end, whatever happens.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Session

from retention.report import build_report
from storage.db import create_db_engine, migrate

ADMIN_URL = os.environ.get(
    "CALLREC_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RECORDINGS = 1_000_000
PURGES = 30_000
RUNS = 3
TARGET_S = 2.0
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)

# Every statement runs in the server; :now is the report's clock.
_FILL = [
    """INSERT INTO clients (id, name, country, status, created_at)
       SELECT 'client-' || i, 'Client ' || i, 'MA', 'active', :now - interval '2 years'
       FROM generate_series(0, 99) AS i""",
    """INSERT INTO call_decisions (id, client_id, call_id, channel, direction, participants,
         record, reason, purposes, grant_id, rule, announcement_required,
         awaiting_caller_consent, state, decided_at, updated_at)
       SELECT 'dec_' || i, 'client-' || (i % 100), 'call-' || i, 'upload', 'inbound', '[]',
         true, 'recorded', '{}', CASE WHEN i % 1000 = 0 THEN NULL ELSE 'grant-' || (i % 100) END,
         'one_party', false, false, 'ended', :now, :now
       FROM generate_series(1, :n) AS i""",
    # Ages spread over a year, to the second; state: 2 % purged, 1 % restricted. The
    # purpose summary is what the purposes below make it (_SUMMARY_CHECK verifies): the
    # last expiry is research's (365 d, on every recording) while it lasts.
    """INSERT INTO recordings (id, client_id, call_id, decision_id, channel, codec, container,
         channels, size, object_key, state, legal_hold, created_at, updated_at, purged_at,
         purpose_names, last_expiry)
       SELECT 'rec_' || lpad(i::text, 8, '0'), 'client-' || (i % 100), 'call-' || i,
         'dec_' || i, 'upload', 'opus', 'ogg', 2, 40000 + (i::bigint * 7919) % 2000000,
         'client-' || (i % 100) || '/rec_' || i || '.ogg',
         CASE WHEN i % 50 = 0 THEN 'purged' WHEN i % 100 = 1 THEN 'restricted' ELSE 'stored' END,
         false, t, t, CASE WHEN i % 50 = 0 THEN :now END,
         CASE WHEN i % 50 = 0 THEN '' ELSE concat_ws(',',
           CASE WHEN i % 2 = 0 AND t + interval '180 days' > :now THEN 'improvement' END,
           CASE WHEN i % 10 % 3 = 0 AND t + interval '90 days' > :now THEN 'optimization' END,
           CASE WHEN t + interval '365 days' > :now THEN 'research' END) END,
         CASE WHEN i % 50 <> 0 AND t + interval '365 days' > :now
              THEN t + interval '365 days' END
       FROM (SELECT i, :now - (i * 31.536)::int * interval '1 second' AS t
             FROM generate_series(1, :n) AS i) AS g""",
    # Sweeps have run: only purposes still live are left (research 365 d, improvement
    # 180 d, optimization 90 d; the last two on some recordings only).
    """INSERT INTO recording_purposes (recording_id, purpose, expires_at)
       SELECT id, p.name, created_at + p.days * interval '1 day'
       FROM recordings CROSS JOIN (VALUES ('research', 365, 1), ('improvement', 180, 2),
                                          ('optimization', 90, 3)) AS p(name, days, every)
       WHERE state <> 'purged' AND right(id, 1)::int % p.every = 0
         AND created_at + p.days * interval '1 day' > :now""",
    """INSERT INTO audit_events (seq, at, kind, actor, client_id, subject, data, prev_hash, hash)
       SELECT i, :now - (i % 2592000) * interval '1 second', 'recording.purged', 'retention',
         'client-' || (i % 100), 'rec_gone_' || i,
         json_build_object('certificate', 'deletion', 'rule',
           'retention expired: last purpose ended '
             || to_char(:now - (i % 2592000 + 3600 * (i % 30)) * interval '1 second',
                        'YYYY-MM-DD') || ' (as of …)')::text,
         md5(i::text) || md5((i + 1)::text), md5(i::text) || md5((-i)::text)
       FROM generate_series(1, :purges) AS i""",
    """INSERT INTO legal_holds (id, reason, created_by, created_at)
       VALUES ('hold-1', 'litigation', 'bench', :now), ('hold-2', 'inquiry', 'bench', :now)""",
    """INSERT INTO legal_hold_targets (hold_id, kind, target)
       VALUES ('hold-1', 'client', 'client-7'), ('hold-2', 'call', 'call-42')""",
    """INSERT INTO subject_requests (id, client_id, kind, phone_hash, status, result,
         created_by, created_at, due_at, completed_at)
       SELECT 'sr-' || i, 'client-' || (i % 100),
         (ARRAY['access', 'erasure', 'restriction', 'objection'])[1 + i % 4], md5(i::text),
         CASE WHEN i % 10 = 0 THEN 'partially_completed' ELSE 'completed' END, '{}', 'bench',
         :now - (i % 60) * interval '1 day', :now + (30 - i % 60) * interval '1 day',
         CASE WHEN i % 10 = 0 THEN NULL ELSE :now - (i % 60) * interval '1 day' END
       FROM generate_series(1, 5000) AS i""",
]


# Recordings whose purpose summary does not match their purposes: must be 0.
_SUMMARY_CHECK = """
    SELECT count(*) FROM recordings r
    LEFT JOIN (SELECT recording_id, max(expires_at) AS last,
                      string_agg(purpose, ',' ORDER BY purpose) AS names
               FROM recording_purposes GROUP BY recording_id) AS m ON m.recording_id = r.id
    WHERE r.last_expiry IS DISTINCT FROM m.last OR r.purpose_names <> coalesce(m.names, '')"""


def _median(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> dict[str, float]:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"callrec_bench_{secrets.token_hex(4)}"
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = create_db_engine(url)
    try:
        migrate(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            params = {"now": NOW, "n": RECORDINGS, "purges": PURGES}
            for statement in _FILL:
                connection.execute(sa.text(statement), params)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
            astray = connection.execute(sa.text(_SUMMARY_CHECK)).scalar()
            assert astray == 0, f"{astray} recordings with a wrong purpose summary"
        print(f"filled {RECORDINGS:,} recordings in {time.perf_counter() - started:.0f} s")

        def report() -> object:
            with Session(engine) as session:
                return build_report(session, now=NOW)

        def count() -> object:
            with engine.connect() as connection:
                return connection.execute(sa.text("SELECT count(*) FROM recordings")).scalar()

        report()  # warm the caches: both sides are measured warm
        count()
        ours, baseline = _median(RUNS, report), _median(RUNS, count)
        verdict = "OK" if ours <= TARGET_S else "TOO SLOW"
        print(
            f"retention report over {RECORDINGS:,} recordings: {ours:.2f} s median of {RUNS} "
            f"(target <= {TARGET_S:.0f} s: {verdict}); baseline count(*) {baseline * 1000:.0f} ms; "
            f"ratio {ours / baseline:.1f}x"
        )
        return {"report_s": ours, "count_s": baseline, "ratio": ours / baseline}
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    run()

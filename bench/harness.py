"""What every benchmark needs: a real SeaweedFS, a SQLite catalog and a vault."""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from storage.audit import AuditLog
from storage.db import create_db_engine, migrate
from storage.embedded_s3 import EmbeddedS3
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.settings import Settings
from storage.vault import RecordingDraft, Vault

MIB = 1024 * 1024
_DEFAULTS = Settings.model_fields


@dataclass
class Bench:
    s3: EmbeddedS3
    store: ObjectStore
    vault: Vault
    engine: Engine
    keyring: Keyring
    audit: AuditLog


@contextmanager
def bench_setup(
    workdir: Path, *, bucket: str = "bench", database_url: str | None = None
) -> Iterator[Bench]:
    """A vault over a real embedded SeaweedFS and SQLite, all under ``workdir``
    (or the database at ``database_url``)."""
    access, secret = "bench" + secrets.token_hex(4), secrets.token_urlsafe(24)
    with EmbeddedS3(workdir / "s3", access_key_id=access, secret_access_key=secret) as s3:
        store = ObjectStore.from_config(s3.config(bucket))
        store.ensure_bucket()
        engine = create_db_engine(database_url or f"sqlite:///{workdir / 'callrec.db'}")
        migrate(engine)
        keyring = Keyring(secrets.token_bytes(32))
        audit = AuditLog(keyring.derive("audit-anchor"))
        vault = Vault(
            engine=engine,
            store=store,
            keyring=keyring,
            audit=audit,
            spool_dir=workdir / "spool",
            # The shipped defaults (not the environment): the benchmark measures those.
            part_size=_DEFAULTS["s3_part_size"].default,
            concurrency=_DEFAULTS["s3_concurrency"].default,
        )
        try:
            yield Bench(s3, store, vault, engine, keyring, audit)
        finally:
            engine.dispose()


def draft(call_id: str) -> RecordingDraft:
    return RecordingDraft(
        client_id="bench",
        call_id=call_id,
        channel="upload",
        codec="opus",
        container="ogg",
        purposes={"research": datetime(2027, 1, 1, tzinfo=UTC)},
    )


def best_of(runs: int, action: Callable[[], object]) -> tuple[float, list[float]]:
    """Median wall time of ``runs`` calls, and every time."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def now() -> datetime:
    return datetime.now(UTC)

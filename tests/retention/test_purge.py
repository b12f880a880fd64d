"""Purge against a real SeaweedFS and both databases: every version, the key, the proof."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from retention.holds import HoldRequest, place_hold
from retention.purge import Purger
from storage import catalog
from storage.audit import AuditEvent, AuditLog
from storage.bucket_cleanup import VersionRef
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.errors import KeyDestroyed
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.vault import RecordingDraft, Vault

MASTER = b"p" * 32
DAY = timedelta(days=1)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(MASTER)


@pytest.fixture
def audit(keyring: Keyring) -> AuditLog:
    return AuditLog(keyring.derive("audit-anchor"))


@pytest.fixture
def vault(
    engine: Engine, object_store: ObjectStore, keyring: Keyring, audit: AuditLog, tmp_path: Path
) -> Vault:
    return Vault(
        engine=engine,
        store=object_store,
        keyring=keyring,
        audit=audit,
        spool_dir=tmp_path / "spool",
    )


@pytest.fixture
def purger(engine: Engine, object_store: ObjectStore, keyring: Keyring, audit: AuditLog) -> Purger:
    return Purger(engine=engine, store=object_store, keyring=keyring, audit=audit)


@pytest.fixture
def store_recording(vault: Vault, now: datetime) -> Callable[..., Recording]:
    calls = iter(range(1_000_000))

    def store(**purposes: int) -> Recording:
        draft = RecordingDraft(
            client_id="acme",
            call_id=f"call-{next(calls)}",
            channel="upload",
            codec="opus",
            container="ogg",
            purposes={name: now + days * DAY for name, days in purposes.items()},
        )
        return vault.store(draft, [os.urandom(50_000)], now=now)

    return store


def _reload(engine: Engine, recording_id: str) -> Recording:
    with Session(engine) as session:
        recording = catalog.get_recording(session, recording_id)
        assert recording is not None
        return recording


def _events(engine: Engine, kind: str) -> list[dict[str, object]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.kind == kind))
        return [json.loads(row.data) for row in rows]


def test_each_purpose_expires_on_its_own(
    purger: Purger,
    store_recording: Callable[..., Recording],
    object_store: ObjectStore,
    engine: Engine,
    now: datetime,
) -> None:
    recording = store_recording(research=40, improvement=30)
    assert recording.last_expiry == now + 40 * DAY
    assert purger.sweep(as_of=now + 5 * DAY, now=now).purposes_expired == 0
    report = purger.sweep(as_of=now + 31 * DAY, now=now)
    assert (report.purposes_expired, report.purged) == (1, 0)
    assert object_store.get_tags(recording.object_key) == {
        "client": "acme",
        "purpose:research": f"{now + 40 * DAY:%Y-%m-%d}",
    }
    with Session(engine) as session:
        assert set(catalog.purposes_of(session, recording.id)) == {"research"}
    assert _reload(engine, recording.id).last_expiry == now + 40 * DAY
    report = purger.sweep(as_of=now + 41 * DAY, now=now)
    assert (report.purposes_expired, report.purged) == (1, 1)
    assert _reload(engine, recording.id).last_expiry is None


def test_last_purpose_purges_every_version_and_the_key(
    purger: Purger,
    vault: Vault,
    store_recording: Callable[..., Recording],
    object_store: ObjectStore,
    keyring: Keyring,
    audit: AuditLog,
    engine: Engine,
    now: datetime,
) -> None:
    recording = store_recording(research=10)
    keep = store_recording(research=100)
    old_ciphertext = b"".join(object_store.get_stream(recording.object_key))
    object_store.put_bytes(recording.object_key, b"an older version", tags={})  # 2 versions
    report = purger.sweep(as_of=now + 11 * DAY, now=now + 11 * DAY)
    assert (report.purged, report.failed) == (1, [])

    assert object_store.list_versions(recording.object_key) == []
    assert _reload(engine, recording.id).state == RecordingState.PURGED
    with Session(engine) as session, pytest.raises(KeyDestroyed):
        keyring.recording_key(session, recording_id=recording.id)
    with pytest.raises(KeyDestroyed):
        vault.read(recording, BytesIO())
    assert old_ciphertext  # the bytes an attacker kept are useless without the key
    (certificate,) = _events(engine, "recording.purged")
    assert certificate["versions_removed"] == 2
    assert certificate["key_destroyed"] is True
    assert certificate["sha256"] == recording.sha256
    assert _reload(engine, keep.id).state == RecordingState.STORED
    with Session(engine) as session:
        assert audit.verify(session).ok


def test_dry_run_changes_nothing(
    purger: Purger,
    store_recording: Callable[..., Recording],
    object_store: ObjectStore,
    engine: Engine,
    now: datetime,
) -> None:
    recording = store_recording(research=10)
    report = purger.sweep(as_of=now + 11 * DAY, now=now, dry_run=True)
    assert report.purged == 1
    assert _reload(engine, recording.id).state == RecordingState.STORED
    assert len(object_store.list_versions(recording.object_key)) == 1
    assert _events(engine, "recording.purged") == []


def test_legal_hold_blocks_the_purge(
    purger: Purger,
    store_recording: Callable[..., Recording],
    object_store: ObjectStore,
    engine: Engine,
    now: datetime,
) -> None:
    recording = store_recording(research=10)
    with session_scope(engine) as session:
        place_hold(
            session,
            request=HoldRequest(reason="litigation", recording_ids=[recording.id]),
            store=object_store,
            actor="test",
            audit=purger.audit,
            now=now,
        )
    report = purger.sweep(as_of=now + 11 * DAY, now=now)
    assert (report.purged, report.held) == (0, 1)
    assert object_store.get_tags(recording.object_key) == {"client": "acme", "legal-hold": "true"}
    assert _reload(engine, recording.id).state == RecordingState.STORED


def test_s3_failure_is_finished_by_the_next_sweep(
    purger: Purger,
    store_recording: Callable[..., Recording],
    object_store: ObjectStore,
    engine: Engine,
    now: datetime,
) -> None:
    recording = store_recording(research=10)
    real_bucket = object_store.bucket
    object_store.bucket = "no-such-bucket-for-this-test"
    report = purger.sweep(as_of=now + 11 * DAY, now=now)
    assert report.failed == [recording.id]
    assert _reload(engine, recording.id).state == RecordingState.STORED
    object_store.bucket = real_bucket
    again = purger.sweep(as_of=now + 11 * DAY, now=now)
    assert (again.purged, again.failed) == (1, [])
    assert object_store.list_versions(recording.object_key) == []


def test_a_key_s3_refuses_fails_alone_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
    purger: Purger,
    store_recording: Callable[..., Recording],
    object_store: ObjectStore,
    keyring: Keyring,
    engine: Engine,
    now: datetime,
) -> None:
    stuck, free = store_recording(research=10), store_recording(research=10)
    real = ObjectStore._delete_batch

    def refuse_stuck(store: ObjectStore, batch: list[VersionRef]) -> object:
        # S3 answers the request but keeps one key, as DeleteObjects may.
        kept = [r for r in batch if r.key == stuck.object_key]
        rest = [r for r in batch if r not in kept]
        failed, codes = real(store, rest) if rest else ([], set())
        return failed + kept, codes | ({"InternalError"} if kept else set())

    monkeypatch.setattr(ObjectStore, "_delete_batch", refuse_stuck)
    report = purger.sweep(as_of=now + 11 * DAY, now=now)
    assert (report.purged, report.failed) == (1, [stuck.id])
    assert _reload(engine, free.id).state == RecordingState.PURGED
    assert _reload(engine, stuck.id).state == RecordingState.STORED
    assert len(object_store.list_versions(stuck.object_key)) == 1
    with Session(engine) as session:
        assert keyring.recording_key(session, recording_id=stuck.id)  # still readable
    assert [c["object_key"] for c in _events(engine, "recording.purged")] == [free.object_key]

    monkeypatch.undo()
    assert purger.sweep(as_of=now + 11 * DAY, now=now).purged == 1
    assert object_store.list_versions(stuck.object_key) == []


def test_a_second_sweep_finds_nothing(
    purger: Purger, store_recording: Callable[..., Recording], now: datetime
) -> None:
    store_recording(research=10)
    assert purger.sweep(as_of=now + 11 * DAY, now=now).purged == 1
    again = purger.sweep(as_of=now + 11 * DAY, now=now)
    assert (again.purged, again.purposes_expired) == (0, 0)


def test_two_purgers_at_once_delete_each_recording_exactly_once(
    engine: Engine,
    object_store: ObjectStore,
    keyring: Keyring,
    audit: AuditLog,
    store_recording: Callable[..., Recording],
    now: datetime,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    recordings = [store_recording(research=10) for _ in range(12)]
    purgers = [
        Purger(engine=engine, store=object_store, keyring=keyring, audit=audit) for _ in range(2)
    ]
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda p: p.sweep(as_of=now + 11 * DAY, now=now), purgers))
    assert sum(r.purged for r in reports) == 12
    assert all(r.failed == [] for r in reports)
    certificates = _events(engine, "recording.purged")
    purged_keys = sorted(str(c["object_key"]) for c in certificates)
    assert purged_keys == sorted(r.object_key for r in recordings)
    with Session(engine) as session:
        assert audit.verify(session).ok


class _Crash(Exception):
    """The process dies here: what it did so far outside the database stays done."""


# Every step of a sweep with a side effect, in the order the sweep takes them.
_STEPS = [
    (ObjectStore, "put_tags"),  # an expired purpose's tag goes
    (Purger, "remove_purposes"),  # ... then its catalog row
    (ObjectStore, "delete_versions"),  # every version of a purged object
    (ObjectStore, "versions_of"),  # the read-back check
    (Keyring, "destroy_recording_keys"),
    (catalog, "mark_purged"),
    (AuditLog, "append"),  # the event or certificate
]


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize(("owner", "step"), _STEPS, ids=[step for _, step in _STEPS])
def test_a_crash_at_any_step_is_finished_by_the_next_sweep(
    owner: object,
    step: str,
    after: bool,
    monkeypatch: pytest.MonkeyPatch,
    purger: Purger,
    store_recording: Callable[..., Recording],
    object_store: ObjectStore,
    keyring: Keyring,
    audit: AuditLog,
    engine: Engine,
    now: datetime,
) -> None:
    gone = store_recording(research=10)
    thinned = store_recording(research=10, improvement=30)
    real = getattr(owner, step)
    crashed = []

    def crash_once(*args: object, **kwargs: object) -> object:
        if crashed:
            return real(*args, **kwargs)
        crashed.append(step)
        if after:
            real(*args, **kwargs)
        raise _Crash(f"{'after' if after else 'before'} {step}")

    monkeypatch.setattr(owner, step, crash_once)
    first = purger.sweep(as_of=now + 11 * DAY, now=now)
    assert crashed and sorted(first.failed) == sorted([gone.id, thinned.id])
    assert _reload(engine, gone.id).state == RecordingState.STORED  # rolled back

    again = purger.sweep(as_of=now + 11 * DAY, now=now)
    assert (again.purged, again.purposes_expired, again.failed) == (1, 2, [])
    assert _reload(engine, gone.id).state == RecordingState.PURGED
    assert object_store.list_versions(gone.object_key) == []
    with Session(engine) as session, pytest.raises(KeyDestroyed):
        keyring.recording_key(session, recording_id=gone.id)
    assert object_store.get_tags(thinned.object_key) == {
        "client": "acme",
        "purpose:improvement": f"{now + 30 * DAY:%Y-%m-%d}",
    }
    with Session(engine) as session:
        assert set(catalog.purposes_of(session, thinned.id)) == {"improvement"}
        assert audit.verify(session).ok
    # One proof of each, however many attempts it took.
    assert [c["object_key"] for c in _events(engine, "recording.purged")] == [gone.object_key]
    assert len(_events(engine, "recording.purposes_expired")) == 1
    assert purger.sweep(as_of=now + 11 * DAY, now=now).purged == 0

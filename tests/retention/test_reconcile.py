from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from retention.reconcile import clean, reconcile, record
from storage.audit import AuditEvent, AuditLog
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.vault import RecordingDraft, Vault


def test_orphans_and_ghosts_are_reported_not_fixed(
    engine: Engine, object_store: ObjectStore, now: datetime, tmp_path: Path
) -> None:
    keyring = Keyring(b"r" * 32)
    vault = Vault(
        engine=engine,
        store=object_store,
        keyring=keyring,
        audit=AuditLog(keyring.derive("audit-anchor")),
        spool_dir=tmp_path / "spool",
    )
    draft = RecordingDraft(
        client_id="acme",
        call_id="c",
        channel="upload",
        codec="opus",
        container="ogg",
        purposes={"research": now + timedelta(days=9)},
    )
    fine = vault.store(draft, [os.urandom(1000)], now=now)
    ghost = vault.store(replace(draft, call_id="c2"), [os.urandom(1000)], now=now)
    object_store.delete_all_versions(ghost.object_key)
    object_store.put_bytes("acme/2026/11/28/rec_unknown.ogg", b"?", tags={})
    with Session(engine) as session:
        report = reconcile(session, object_store, now=now)
    assert report.orphans == ["acme/2026/11/28/rec_unknown.ogg"]
    assert report.ghosts == [ghost.id]
    assert (report.objects, report.recordings, report.ok) == (2, 2, False)
    assert len(object_store.list_versions("acme/2026/11/28/rec_unknown.ogg")) == 1  # kept
    assert fine.id not in report.ghosts


def _vault(engine: Engine, store: ObjectStore, spool: Path) -> Vault:
    keyring = Keyring(b"r" * 32)
    return Vault(
        engine=engine,
        store=store,
        keyring=keyring,
        audit=AuditLog(keyring.derive("audit-anchor")),
        spool_dir=spool,
        part_size=5 * 1024 * 1024,
    )


def _events(engine: Engine, kind: str) -> list[tuple[str | None, dict[str, Any]]]:
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.kind == kind))
        return [(event.subject, json.loads(event.data)) for event in events]


def test_leftover_uploads_and_versions_are_reported_then_cleaned_past_the_bound(
    engine: Engine, object_store: ObjectStore, now: datetime, tmp_path: Path
) -> None:
    vault = _vault(engine, object_store, tmp_path / "spool")
    draft = RecordingDraft(
        client_id="acme", call_id="c", channel="upload", codec="opus", container="ogg"
    )
    # A crash after the object was complete and before the catalog knew: the retry
    # stores the spool again, a second version of the same key.
    crashed = vault.begin(draft, now=now)
    crashed.write(os.urandom(1000))
    path = crashed.seal()[0]
    with Session(engine) as session:
        key = session.get(Recording, crashed.recording_id).object_key  # type: ignore[union-attr]
    first = object_store.put_file(key, path, tags={}).version_id
    crashed.release()
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        stored = session.get(Recording, crashed.recording_id)
    assert stored is not None and stored.version_id not in (None, first)
    # An upload whose abort never reached S3, and one a live capture is still sending.
    left = object_store.create_upload("acme/2026/11/28/rec_gone.ogg", tags={})
    live = vault.begin(replace(draft, call_id="c2"), now=now)
    live.write(os.urandom(6 * 1024 * 1024))  # its first part is on its way
    assert live.upload is not None and live.upload.started

    wall = datetime.now(UTC)  # S3 stamps its listings with the real time
    with Session(engine) as session:
        report = reconcile(session, object_store, now=wall)
    assert [(s.key, s.version_id, s.recording_id) for s in report.stray_versions] == [
        (key, first, stored.id)
    ]
    assert [u.upload_id for u in report.unfinished_uploads] == [left]
    assert (report.orphans, report.ghosts, report.leftovers, report.ok) == ([], [], 2, False)
    with session_scope(engine) as session:  # all of it younger than the bound: kept
        clean(
            session,
            object_store,
            report,
            older_than=timedelta(hours=1),
            audit=vault_audit(),
            actor="t",
        )
    assert (report.aborted, report.deleted, report.leftovers) == ([], [], 2)
    assert len(object_store.list_versions(key)) == 2

    later = wall + timedelta(hours=2)
    with Session(engine) as session:
        report = reconcile(session, object_store, now=later)
    with session_scope(engine) as session:
        clean(
            session,
            object_store,
            report,
            older_than=timedelta(hours=1),
            audit=vault_audit(),
            actor="t",
        )
        record(session, report, audit=vault_audit(), actor="t")
    assert (len(report.aborted), len(report.deleted), report.leftovers, report.ok) == (
        1,
        1,
        0,
        True,
    )
    assert [v.version_id for v in object_store.list_versions(key)] == [stored.version_id]
    assert [u.key for u in object_store.list_uploads()] == [live.upload.key]  # still sending
    [(subject, deleted)] = _events(engine, "reconciliation.version_deleted")
    assert (subject, deleted["version_id"]) == (stored.id, first)
    [(_, aborted)] = _events(engine, "reconciliation.upload_aborted")
    assert aborted["upload_id"] == left
    [(_, recorded)] = _events(engine, "reconciliation.report")
    assert (recorded["uploads_aborted"], recorded["versions_deleted"]) == (1, 1)

    assert vault.finish(live, now=now).state == RecordingState.STORED  # untouched by it all
    with Session(engine) as session:
        assert reconcile(session, object_store, now=later).ok


def vault_audit() -> AuditLog:
    return AuditLog(Keyring(b"r" * 32).derive("audit-anchor"))


def test_a_current_stray_version_and_a_delete_marker_are_left_to_a_person(
    engine: Engine, object_store: ObjectStore, now: datetime, tmp_path: Path
) -> None:
    vault = _vault(engine, object_store, tmp_path / "spool")
    draft = RecordingDraft(
        client_id="acme", call_id="c", channel="upload", codec="opus", container="ogg"
    )
    overwritten = vault.store(draft, [os.urandom(1000)], now=now)
    object_store.put_bytes(overwritten.object_key, b"newer", tags={})  # now the current one
    hidden = vault.store(replace(draft, call_id="c2"), [os.urandom(1000)], now=now)
    object_store.delete(hidden.object_key)  # a delete marker: a ghost, not a stray
    later = datetime.now(UTC) + timedelta(days=1)
    with Session(engine) as session:
        report = reconcile(session, object_store, now=later)
    with session_scope(engine) as session:
        clean(
            session, object_store, report, older_than=timedelta(0), audit=vault_audit(), actor="t"
        )
    assert [s.recording_id for s in report.stray_versions] == [overwritten.id]
    assert report.ghosts == [hidden.id]
    assert (report.deleted, report.leftovers) == ([], 1)
    assert len(object_store.list_versions(overwritten.object_key)) == 2
    assert len(object_store.list_versions(hidden.object_key)) == 2

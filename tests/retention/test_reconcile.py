from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from retention.reconcile import reconcile
from storage.audit import AuditLog
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
    ghost = vault.store(draft, [os.urandom(1000)], now=now)
    object_store.delete_all_versions(ghost.object_key)
    object_store.put_bytes("acme/2026/11/28/rec_unknown.ogg", b"?", tags={})
    with Session(engine) as session:
        report = reconcile(session, object_store, now=now)
    assert report.orphans == ["acme/2026/11/28/rec_unknown.ogg"]
    assert report.ghosts == [ghost.id]
    assert (report.objects, report.recordings, report.ok) == (2, 2, False)
    assert len(object_store.list_versions("acme/2026/11/28/rec_unknown.ogg")) == 1  # kept
    assert fine.id not in report.ghosts

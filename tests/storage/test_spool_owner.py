"""A spool has one owner: recovery takes only spools whose writer is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import catalog
from storage.audit import AuditLog
from storage.catalog import RecordingState
from storage.embedded_s3 import EmbeddedS3
from storage.keyring import Keyring
from storage.objectstore import ObjectStore, PutResult
from storage.spool import claim_spool, ownerless_spools
from storage.vault import RecordingDraft, Vault

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MASTER = b"o" * 32
PART = 5 * 1024 * 1024
BOUND = 60.0  # seconds any wait below may take before the test gives up


class _HeldStore(ObjectStore):
    """The real store, except that completing an upload waits until the test says go."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store.client, store.bucket)
        self.completing = threading.Event()
        self.go = threading.Event()

    def complete_upload(
        self, key: str, upload_id: str, etags: Sequence[str], *, size: int
    ) -> PutResult:
        self.completing.set()
        assert self.go.wait(BOUND)
        return super().complete_upload(key, upload_id, etags, size=size)


def _vault(engine: Engine, store: ObjectStore, spool: Path) -> Vault:
    keyring = Keyring(MASTER)
    return Vault(
        engine=engine,
        store=store,
        keyring=keyring,
        audit=AuditLog(keyring.derive("audit-anchor")),
        spool_dir=spool,
        part_size=PART,
    )


def _draft(now: datetime) -> RecordingDraft:
    return RecordingDraft(
        client_id="acme",
        call_id="long-call",
        channel="upload",
        codec="opus",
        container="ogg",
        purposes={"research": now + timedelta(days=30)},
    )


def test_recovery_never_takes_a_capture_or_an_upload_in_progress(
    engine: Engine, object_store: ObjectStore, s3_admin: S3Client, now: datetime, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    store = _HeldStore(object_store)
    vault = _vault(engine, store, spool)
    audio = os.urandom(int(2.5 * PART))
    pieces = [audio[i : i + PART // 2] for i in range(0, len(audio), PART // 2)]
    recovered = threading.Semaphore(0)
    result: list[object] = []

    def capture() -> None:  # a long call: each piece arrives after another recovery run
        try:
            writer = vault.begin(_draft(now), now=now)
            for piece in pieces:
                assert recovered.acquire(timeout=BOUND)
                writer.write(piece)
            result.append(vault.finish(writer, now=now))
        except BaseException as exc:
            result.append(exc)
            store.completing.set()

    thread = threading.Thread(target=capture)
    thread.start()
    try:
        for _ in pieces:
            assert vault.recover(now=now) == 0
            recovered.release()
        # The spool is sealed and its last part is on its way: still not recovery's.
        assert store.completing.wait(BOUND)
        assert [p.suffix for p in spool.iterdir()] in ([".sealed"], [])
        for _ in range(3):
            assert vault.recover(now=now) == 0
    finally:
        store.go.set()
        thread.join(BOUND)
    (recording,) = result
    assert not isinstance(recording, BaseException), recording
    assert recording.state == RecordingState.STORED
    versions = object_store.list_versions(recording.object_key)
    assert [v.version_id for v in versions] == [recording.version_id]  # stored once
    assert not s3_admin.list_multipart_uploads(Bucket=object_store.bucket).get("Uploads")
    plaintext = BytesIO()
    vault.read(recording, plaintext)
    assert plaintext.getvalue() == audio
    assert list(spool.iterdir()) == []


def _spawn_writer(
    database_url: str, s3: EmbeddedS3, bucket: str, spool: Path, *, size: int, seal: bool
) -> tuple[subprocess.Popen[str], str, Path]:
    cfg = s3.config(bucket)
    args = {
        "database_url": database_url,
        "s3": {
            "endpoint_url": cfg.endpoint_url,
            "access_key_id": cfg.access_key_id,
            "secret_access_key": cfg.secret_access_key,
            "bucket": bucket,
        },
        "master_key": MASTER.hex(),
        "spool_dir": str(spool),
        "part_size": PART,
        "size": size,
        "seal": seal,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.spool_writer_process", json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, "the writer process died before writing its spool"
    told = json.loads(line)
    return child, told["recording_id"], Path(told["path"])


def _uploads(s3_admin: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.mark.parametrize("sealed", [False, True], ids=["mid-capture", "sealed"])
def test_the_spool_of_a_killed_writer_is_recovered(
    sealed: bool,
    database_url: str,
    engine: Engine,
    object_store: ObjectStore,
    s3_server: EmbeddedS3,
    s3_admin: S3Client,
    now: datetime,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    vault = _vault(engine, object_store, spool)
    child, recording_id, path = _spawn_writer(
        database_url, s3_server, object_store.bucket, spool, size=int(1.5 * PART), seal=sealed
    )
    try:
        assert path.exists()
        assert vault.recover(now=now) == 0  # its writer lives, in another process
        assert path.exists()
        for _ in range(int(BOUND * 10)):  # the first part is on its way to S3
            if _uploads(s3_admin, object_store.bucket):
                break
            threading.Event().wait(0.1)
        assert _uploads(s3_admin, object_store.bucket)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(BOUND)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()
    assert ownerless_spools(spool) == [path]  # the kernel dropped its lock with it
    assert vault.recover(now=now) == (1 if sealed else 0)
    with Session(engine) as session:
        recording = catalog.get_recording(session, recording_id)
    assert recording is not None
    if sealed:
        assert recording.state == RecordingState.STORED
        assert len(object_store.list_versions(recording.object_key)) == 1
    else:
        assert (recording.state, recording.failure) == (
            RecordingState.FAILED,
            "capture interrupted",
        )
        assert list(object_store.list_keys("acme/")) == []
    assert _uploads(s3_admin, object_store.bucket) == []  # no parts left behind
    assert list(spool.iterdir()) == []


def test_a_claimed_spool_is_nobody_elses(tmp_path: Path) -> None:
    path = tmp_path / "rec_x.sealed"
    path.write_bytes(b"x")
    with claim_spool(path) as first, claim_spool(path) as second:
        assert (first, second) == (True, False)
        assert ownerless_spools(tmp_path) == []
    assert ownerless_spools(tmp_path) == [path]
    with claim_spool(tmp_path / "rec_gone.part") as missing:
        assert not missing


def test_a_spool_left_after_the_catalog_said_stored_is_only_removed(
    engine: Engine, object_store: ObjectStore, now: datetime, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    vault = _vault(engine, object_store, spool)
    writer = vault.begin(_draft(now), now=now)
    writer.write(os.urandom(100_000))
    path = writer.seal()[0]
    kept = path.read_bytes()
    writer.release()
    assert vault.recover(now=now) == 1
    path.write_bytes(kept)  # killed after the catalog write, before the spool was removed
    assert ownerless_spools(spool) == [path]
    assert vault.recover(now=now) == 0
    assert list(spool.iterdir()) == []
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.STORED
    assert [v.version_id for v in object_store.list_versions(recording.object_key)] == [
        recording.version_id
    ]


def test_a_catalogued_recording_always_has_its_spool(
    engine: Engine, object_store: ObjectStore, now: datetime, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    vault = _vault(engine, object_store, spool)
    at_commit: list[list[tuple[str, bool]]] = []

    def look(connection: object) -> None:  # a crash here must leave a spool to recover
        at_commit.append([(p.suffix, p in ownerless_spools(spool)) for p in spool.iterdir()])

    event.listen(engine, "commit", look)
    try:
        writer = vault.begin(_draft(now), now=now)
    finally:
        event.remove(engine, "commit", look)
    assert at_commit and all(seen == [(".part", False)] for seen in at_commit)

    def refuse(connection: object) -> None:
        raise RuntimeError("the database went away")

    event.listen(engine, "commit", refuse)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            vault.begin(replace(_draft(now), call_id="another-call"), now=now)
    finally:
        event.remove(engine, "commit", refuse)
    assert [p.name for p in spool.iterdir()] == [writer.path.name]  # the refused one's is gone
    vault.discard(writer, reason="test over", now=now)
    assert list(spool.iterdir()) == []

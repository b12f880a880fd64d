from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import catalog, crypto
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.embedded_s3 import EmbeddedS3
from storage.errors import IntegrityError, KeyDestroyed, ObjectNotFound
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.s3_client import S3Config
from storage.vault import RecordingDraft, SpoolWriter, Vault
from tests.conftest import drop_bucket, unique_bucket

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MASTER = b"m" * 32
AUDIO = os.urandom(300_000)
PART = 5 * 1024 * 1024  # the vaults below stream parts of this size, S3's minimum


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


@pytest.fixture
def vault(engine: Engine, object_store: ObjectStore, tmp_path: Path) -> Vault:
    return _vault(engine, object_store, tmp_path / "spool")


@pytest.fixture
def dead_store(object_store: ObjectStore) -> ObjectStore:
    """An S3 endpoint that is down: a local port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ObjectStore.from_config(
        S3Config(
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key_id="x",
            secret_access_key="y",
            bucket=object_store.bucket,
        )
    )


def _draft(now: datetime, call_id: str = "call-1") -> RecordingDraft:
    return RecordingDraft(
        client_id="acme",
        call_id=call_id,
        channel="upload",
        codec="opus",
        container="ogg",
        purposes={"research": now + timedelta(days=30), "improvement": now + timedelta(days=90)},
    )


def _pieces(data: bytes, size: int = 7_000) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def _plaintext(vault: Vault, recording: Recording) -> bytes:
    out = BytesIO()
    vault.read(recording, out)
    return out.getvalue()


def _audit_kinds(engine: Engine) -> list[str]:
    from sqlmodel import select

    from storage.audit import AuditEvent

    with Session(engine) as session:
        report = AuditLog(Keyring(MASTER).derive("audit-anchor")).verify(session)
        assert report.ok, report.problem
        return [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.seq))]  # type: ignore[arg-type]


def test_store_round_trip(
    vault: Vault, object_store: ObjectStore, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    recording = vault.store(_draft(now), _pieces(AUDIO), now=now, duration_s=12.5)
    assert recording.state == RecordingState.STORED
    assert recording.object_key == f"acme/2026/11/28/{recording.id}.ogg"
    assert _plaintext(vault, recording) == AUDIO
    stored = b"".join(object_store.get_stream(recording.object_key))
    assert recording.size == len(stored)
    assert recording.sha256 == hashlib.sha256(stored).hexdigest()
    assert (recording.audio_size, recording.audio_sha256) == (
        len(AUDIO),
        hashlib.sha256(AUDIO).hexdigest(),
    )
    assert AUDIO[:64] not in stored  # the object holds ciphertext only
    assert list((tmp_path / "spool").iterdir()) == []
    assert _audit_kinds(engine) == ["recording.stored"]


def test_tags_and_catalog_agree(
    vault: Vault, object_store: ObjectStore, engine: Engine, now: datetime
) -> None:
    recording = vault.store(_draft(now), [AUDIO], now=now)
    with Session(engine) as session:
        purposes = catalog.purposes_of(session, recording.id)
    assert object_store.get_tags(recording.object_key) == catalog.object_tags("acme", purposes)
    assert object_store.get_tags(recording.object_key) == {
        "client": "acme",
        "purpose:research": "2026-12-28",
        "purpose:improvement": "2027-02-26",
    }


def test_s3_outage_keeps_the_recording_in_the_spool(
    engine: Engine,
    object_store: ObjectStore,
    dead_store: ObjectStore,
    now: datetime,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    recording = _vault(engine, dead_store, spool).store(_draft(now), [AUDIO], now=now)
    assert recording.state == RecordingState.RECORDING
    assert [p.suffix for p in spool.iterdir()] == [".sealed"]

    vault = _vault(engine, object_store, spool)  # S3 is back (or callrec restarted)
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        stored = catalog.get_recording(session, recording.id)
    assert stored is not None and stored.state == RecordingState.STORED
    assert _plaintext(vault, stored) == AUDIO
    assert list(spool.iterdir()) == []


def test_crash_after_sealing_is_recovered(
    vault: Vault, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    writer = vault.begin(_draft(now), now=now)
    writer.write(AUDIO)
    writer.seal()  # the process dies here, before the catalog learns size and hash
    writer.release()  # and its lock on the spool with it
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.STORED
    assert recording.size is not None and recording.sha256 is not None
    assert recording.audio_sha256 == hashlib.sha256(AUDIO).hexdigest()
    assert _plaintext(vault, recording) == AUDIO


def test_crash_mid_capture_is_marked_failed_and_shredded(
    vault: Vault, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    writer = vault.begin(_draft(now), now=now)
    writer.write(AUDIO)  # the process dies mid-call: no final chunk, never sealed
    writer.release()  # and its lock on the spool with it
    assert vault.recover(now=now) == 0
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
        assert recording is not None and recording.state == RecordingState.FAILED
        with pytest.raises(KeyDestroyed):
            Keyring(MASTER).recording_key(session, recording_id=recording.id)
    assert list((tmp_path / "spool").iterdir()) == []
    assert _audit_kinds(engine) == ["recording.discarded"]
    writer.close()  # the dead process's file handle


def test_crash_after_upload_before_catalog_is_recovered(
    vault: Vault, object_store: ObjectStore, engine: Engine, now: datetime
) -> None:
    writer = vault.begin(_draft(now), now=now)
    writer.write(AUDIO)
    path, _size, _sha = writer.seal()
    with Session(engine) as session:
        key = catalog.get_recording(session, writer.recording_id)
        assert key is not None
    object_store.put_file(key.object_key, path, tags={"client": "acme"})  # then the crash
    writer.release()
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.STORED
    assert _plaintext(vault, recording) == AUDIO


def test_discard_leaves_nothing(
    vault: Vault, object_store: ObjectStore, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    writer = vault.begin(_draft(now), now=now)
    writer.write(AUDIO)
    vault.discard(writer, reason="caller opted out", now=now)
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.FAILED
    assert recording.failure == "caller opted out"
    assert list(object_store.list_keys("acme/")) == []
    assert list((tmp_path / "spool").iterdir()) == []


def test_failed_source_is_discarded(vault: Vault, engine: Engine, now: datetime) -> None:
    def broken_source() -> Iterator[bytes]:
        yield AUDIO
        raise OSError("connection reset by the platform")

    with pytest.raises(OSError, match="connection reset"):
        vault.store(_draft(now), broken_source(), now=now)
    assert _audit_kinds(engine) == ["recording.discarded"]


def test_tampered_object_never_reads(
    vault: Vault, object_store: ObjectStore, now: datetime
) -> None:
    recording = vault.store(_draft(now), [AUDIO], now=now)
    stored = bytearray(b"".join(object_store.get_stream(recording.object_key)))
    stored[len(stored) // 2] ^= 1
    object_store.put_bytes(recording.object_key, bytes(stored), tags={})
    recording.version_id = None  # read the newest (tampered) version
    with pytest.raises(IntegrityError):
        _plaintext(vault, recording)


def test_swapped_objects_do_not_decrypt(
    vault: Vault, object_store: ObjectStore, now: datetime
) -> None:
    first = vault.store(_draft(now), [AUDIO], now=now)
    second = vault.store(_draft(now, "call-2"), [AUDIO], now=now)
    body = b"".join(object_store.get_stream(second.object_key))
    object_store.put_bytes(first.object_key, body, tags={})
    first.version_id = None
    with pytest.raises(IntegrityError):
        _plaintext(vault, first)


def test_destroyed_key_makes_the_object_unreadable(
    vault: Vault, engine: Engine, now: datetime
) -> None:
    recording = vault.store(_draft(now), [AUDIO], now=now)
    with session_scope(engine) as session:
        Keyring(MASTER).destroy_recording_key(session, recording_id=recording.id, now=now)
    with pytest.raises(KeyDestroyed):
        _plaintext(vault, recording)


class _Relay:
    """A TCP relay in front of the S3 server; ``cut`` is a network outage."""

    def __init__(self, upstream: str) -> None:
        url = urlsplit(upstream)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was shut: the outage began
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink))
                self._threads.append(pump)
                pump.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        # A connection accepted just before the shutdown still gets its pumps:
        # wait for the acceptor so that every socket is known before the reset.
        self._threads[0].join()
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        for sock in self._sockets:
            sock.close()


def _write_parts(writer: SpoolWriter, parts: float) -> bytes:
    """Write ``parts`` parts' worth of fresh audio; the upload starts on the first one."""
    audio = os.urandom(int(parts * PART))
    for piece in _pieces(audio, 256 * 1024):
        writer.write(piece)
    assert writer.upload is not None and writer.upload.started
    return audio


def test_large_recording_streams_as_multipart(
    vault: Vault, object_store: ObjectStore, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    writer = vault.begin(_draft(now), now=now)
    audio = _write_parts(writer, 3.2)  # parts go up while the capture goes on
    recording = vault.finish(writer, now=now)
    assert recording.state == RecordingState.STORED
    info = object_store.head(recording.object_key)
    assert info.etag.endswith("-4")  # three whole parts sent during capture, then the rest
    assert (info.size, info.version_id) == (recording.size, recording.version_id)
    assert _plaintext(vault, recording) == audio
    stored = b"".join(object_store.get_stream(recording.object_key))
    assert recording.sha256 == hashlib.sha256(stored).hexdigest()
    with Session(engine) as session:
        purposes = catalog.purposes_of(session, recording.id)
    assert object_store.get_tags(recording.object_key) == catalog.object_tags("acme", purposes)
    assert list((tmp_path / "spool").iterdir()) == []
    assert _audit_kinds(engine) == ["recording.stored"]


def test_outage_mid_upload_keeps_the_spool_for_recover(
    engine: Engine,
    object_store: ObjectStore,
    s3_server: EmbeddedS3,
    s3_admin: S3Client,
    now: datetime,
    tmp_path: Path,
) -> None:
    relay = _Relay(s3_server.endpoint_url)
    via_relay = replace(
        s3_server.config(object_store.bucket), endpoint_url=f"http://127.0.0.1:{relay.port}"
    )
    spool = tmp_path / "spool"
    with ObjectStore.from_config(via_relay, max_attempts=1) as flaky:
        vault = _vault(engine, flaky, spool)
        writer = vault.begin(_draft(now), now=now)
        audio = _write_parts(writer, 2.5)
        relay.cut()  # S3 goes away while parts are in flight
        audio += _write_parts(writer, 1.5)
        recording = vault.finish(writer, now=now)
    assert recording.state == RecordingState.RECORDING
    assert [p.suffix for p in spool.iterdir()] == [".sealed"]

    vault = _vault(engine, object_store, spool)  # S3 is back
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        stored = catalog.get_recording(session, recording.id)
    assert stored is not None and stored.state == RecordingState.STORED
    assert _plaintext(vault, stored) == audio
    assert list(spool.iterdir()) == []
    # The abort could not reach S3 during the outage; recover cleaned the parts up.
    assert not s3_admin.list_multipart_uploads(Bucket=object_store.bucket).get("Uploads")


def test_store_error_fails_finish_but_keeps_the_spool(
    engine: Engine, s3_server: EmbeddedS3, s3_admin: S3Client, now: datetime, tmp_path: Path
) -> None:
    bucket = unique_bucket()  # not created yet: S3 answers, and answers "no"
    spool = tmp_path / "spool"
    with ObjectStore.from_config(s3_server.config(bucket)) as store:
        vault = _vault(engine, store, spool)
        writer = vault.begin(_draft(now), now=now)
        audio = _write_parts(writer, 2.5)
        # The streamed upload fails, then so does sending the spool: the error is no outage.
        with pytest.raises(ObjectNotFound, match="NoSuchBucket"):
            vault.finish(writer, now=now)
        assert [p.suffix for p in spool.iterdir()] == [".sealed"]

        store.ensure_bucket()
        try:
            assert vault.recover(now=now) == 1
            with Session(engine) as session:
                stored = catalog.get_recording(session, writer.recording_id)
            assert stored is not None and stored.state == RecordingState.STORED
            assert _plaintext(vault, stored) == audio
        finally:
            drop_bucket(s3_admin, bucket)


def test_discard_mid_upload_leaves_no_parts(
    vault: Vault,
    object_store: ObjectStore,
    s3_admin: S3Client,
    engine: Engine,
    now: datetime,
    tmp_path: Path,
) -> None:
    writer = vault.begin(_draft(now), now=now)
    _write_parts(writer, 3.5)
    vault.discard(writer, reason="caller opted out", now=now)
    assert not s3_admin.list_multipart_uploads(Bucket=object_store.bucket).get("Uploads")
    assert list(object_store.list_keys("acme/")) == []
    assert list((tmp_path / "spool").iterdir()) == []
    assert _audit_kinds(engine) == ["recording.discarded"]


def test_torn_sealed_spool_is_not_uploaded(
    vault: Vault, object_store: ObjectStore, engine: Engine, now: datetime
) -> None:
    writer = vault.begin(_draft(now), now=now)
    writer.write(AUDIO)
    path, size, _sha = writer.seal()
    os.truncate(path, size // 2)  # a power cut before the spool reached the disk
    writer.release()
    assert vault.recover(now=now) == 0
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.FAILED
    assert recording.failure == "spool torn"
    assert list(object_store.list_keys("acme/")) == []


def _live(now: datetime, call_id: str = "call-live") -> RecordingDraft:
    return replace(_draft(now, call_id), channel="whip")


def test_a_live_capture_cut_by_a_crash_is_sealed_and_stored_as_recovered(
    vault: Vault,
    object_store: ObjectStore,
    s3_admin: S3Client,
    engine: Engine,
    now: datetime,
    tmp_path: Path,
) -> None:
    writer = vault.begin(_live(now), now=now)
    audio = _write_parts(writer, 1.3)  # a part went up during the call
    writer.write(b"tail not yet in a whole chunk")
    writer._file.flush()  # what the kernel has of it when the process dies
    writer.release()  # the process dies mid-call: never sealed, its lock gone
    assert _uploads(s3_admin, object_store.bucket)
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.STORED
    assert recording.recovered
    kept = len(audio) // crypto.DEFAULT_CHUNK_SIZE * crypto.DEFAULT_CHUNK_SIZE
    assert _plaintext(vault, recording) == audio[:kept]
    assert recording.audio_size == kept
    assert recording.audio_sha256 == hashlib.sha256(audio[:kept]).hexdigest()
    stored = b"".join(object_store.get_stream(recording.object_key))
    assert (recording.size, recording.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert len(object_store.list_versions(recording.object_key)) == 1
    assert _uploads(s3_admin, object_store.bucket) == []  # the call's parts are not left behind
    assert list((tmp_path / "spool").iterdir()) == []
    assert _audit_kinds(engine) == ["recording.recovered", "recording.stored"]
    event = _audit_data(engine, "recording.recovered")
    assert event["audio_kept"] == kept and event["whole"] is False


def test_an_upload_cut_by_a_crash_is_not_recovered(
    vault: Vault, engine: Engine, now: datetime
) -> None:
    writer = vault.begin(_draft(now), now=now)
    writer.write(AUDIO)
    writer.release()
    assert vault.recover(now=now) == 0
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.FAILED
    assert not recording.recovered


def test_a_tampered_live_spool_is_refused(
    vault: Vault, object_store: ObjectStore, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    writer = vault.begin(_live(now), now=now)
    writer.write(AUDIO)
    writer._file.flush()
    writer.release()
    with open(writer.path, "r+b") as spool:  # one bit of the second chunk flipped
        spool.seek(crypto.HEADER_SIZE + crypto.DEFAULT_CHUNK_SIZE + 16 + 100)
        byte = spool.read(1)
        spool.seek(-1, os.SEEK_CUR)
        spool.write(bytes([byte[0] ^ 1]))
    assert vault.recover(now=now) == 0
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None
    assert (recording.state, recording.failure) == (RecordingState.FAILED, "spool torn")
    assert list(object_store.list_keys("acme/")) == []
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_recovery_that_died_while_sealing_is_finished_by_the_next(
    vault: Vault, engine: Engine, now: datetime, tmp_path: Path
) -> None:
    writer = vault.begin(_live(now), now=now)
    writer.write(AUDIO)
    writer._file.flush()
    writer.release()
    leftover = writer.path.with_suffix(".resealing")
    leftover.write_bytes(b"half a sealed spool")  # its recovery died here
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.STORED
    kept = len(AUDIO) // crypto.DEFAULT_CHUNK_SIZE * crypto.DEFAULT_CHUNK_SIZE
    assert _plaintext(vault, recording) == AUDIO[:kept]
    assert list((tmp_path / "spool").iterdir()) == []
    assert _audit_kinds(engine) == ["recording.recovered", "recording.stored"]


def _audit_data(engine: Engine, kind: str) -> dict[str, object]:
    from sqlmodel import select

    from storage.audit import AuditEvent

    with Session(engine) as session:
        (event,) = session.exec(select(AuditEvent).where(AuditEvent.kind == kind)).all()
        data: dict[str, object] = json.loads(event.data)
        return data


def _uploads(s3_admin: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_a_recovered_live_capture_waits_for_s3_like_any_sealed_spool(
    engine: Engine,
    object_store: ObjectStore,
    dead_store: ObjectStore,
    now: datetime,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    vault = _vault(engine, dead_store, spool)
    writer = vault.begin(_live(now), now=now)
    writer.write(AUDIO)
    writer._file.flush()
    writer.release()
    assert vault.recover(now=now) == 0  # sealed at its last whole chunk, but S3 is down
    assert [p.suffix for p in spool.iterdir()] == [".sealed"]
    writer.path.write_bytes(b"a torn spool a recovery died before removing")

    vault = _vault(engine, object_store, spool)  # S3 is back
    assert vault.recover(now=now) == 1
    with Session(engine) as session:
        recording = catalog.get_recording(session, writer.recording_id)
    assert recording is not None and recording.state == RecordingState.STORED
    assert recording.recovered
    kept = len(AUDIO) // crypto.DEFAULT_CHUNK_SIZE * crypto.DEFAULT_CHUNK_SIZE
    assert _plaintext(vault, recording) == AUDIO[:kept]
    assert list(spool.iterdir()) == []
    assert _audit_kinds(engine) == ["recording.recovered", "recording.stored"]

"""The store path every source feeds: spool → encrypt → tag → upload → catalog → audit.

A source (an upload, a WebRTC or SIPREC session) opens a ``SpoolWriter`` with
``Vault.begin``, writes audio as it arrives and calls ``Vault.finish``. The audio is
encrypted *before* it touches the disk, the spool file is sealed and fsynced before
the upload, and it is removed only once the catalog says ``stored``: a crash or an S3
outage at any step leaves either a sealed spool that ``Vault.recover`` uploads, or
nothing at all. Each replica only recovers spool files on its own disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import catalog, crypto
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.errors import StoreUnavailable
from storage.ids import new_id
from storage.keyring import Keyring
from storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

_PART, _SEALED = ".part", ".sealed"


@dataclass(frozen=True)
class RecordingDraft:
    """What a source knows when it starts capturing a call."""

    client_id: str
    call_id: str
    channel: str
    codec: str
    container: str
    channels: int = 1
    decision_id: str | None = None
    purposes: Mapping[str, datetime] = field(default_factory=dict)
    started_at: datetime | None = None


class SpoolWriter:
    """Encrypts audio into a local spool file as it arrives."""

    def __init__(self, recording_id: str, path: Path, key: bytes) -> None:
        self.recording_id = recording_id
        self.path = path
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed by seal/discard)
        self._encryptor = crypto.StreamEncryptor(key, aad=_aad(recording_id))

    @property
    def plaintext_size(self) -> int:
        return self._encryptor.plaintext_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(self._encryptor.update(data))

    def seal(self) -> tuple[Path, int, str]:
        """Finish the ciphertext, flush it to disk; return (path, size, sha256)."""
        self._file.write(self._encryptor.finalize())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sealed = self.path.with_suffix(_SEALED)
        os.replace(self.path, sealed)
        _fsync_dir(sealed.parent)
        return sealed, self._encryptor.ciphertext_size, self._encryptor.ciphertext_sha256

    def close(self) -> None:
        """Drop an unsealed spool file (the capture is discarded)."""
        self._file.close()
        self.path.unlink(missing_ok=True)


class Vault:
    """Stores recordings encrypted in S3 and keeps the catalog and the audit log in step."""

    def __init__(
        self,
        *,
        engine: Engine,
        store: ObjectStore,
        keyring: Keyring,
        audit: AuditLog,
        spool_dir: Path,
        part_size: int = 16 * 1024 * 1024,
        concurrency: int = 4,
    ) -> None:
        self._engine = engine
        self._store = store
        self._keyring = keyring
        self._audit = audit
        self._spool_dir = spool_dir
        self._part_size = part_size
        self._concurrency = concurrency
        spool_dir.mkdir(parents=True, exist_ok=True)

    def begin(self, draft: RecordingDraft, *, now: datetime) -> SpoolWriter:
        """Catalog a new recording in state ``recording`` and open its spool."""
        recording_id = new_id("rec", now)
        key_name = catalog.object_key(
            client_id=draft.client_id,
            recording_id=recording_id,
            created_at=now,
            ext=draft.container,
        )
        with session_scope(self._engine) as session:
            recording = Recording(
                id=recording_id,
                client_id=draft.client_id,
                call_id=draft.call_id,
                decision_id=draft.decision_id,
                channel=draft.channel,
                codec=draft.codec,
                container=draft.container,
                channels=draft.channels,
                started_at=draft.started_at or now,
                object_key=key_name,
                created_at=now,
                updated_at=now,
            )
            catalog.add_recording(session, recording=recording, purposes=draft.purposes)
            key = self._keyring.new_recording_key(
                session, client_id=draft.client_id, recording_id=recording_id, now=now
            )
        return SpoolWriter(recording_id, self._spool_dir / f"{recording_id}{_PART}", key)

    def finish(
        self,
        writer: SpoolWriter,
        *,
        now: datetime,
        duration_s: float | None = None,
        ended_at: datetime | None = None,
    ) -> Recording:
        """Seal the spool and upload it; on an S3 outage the recording waits in the spool."""
        path, size, sha256 = writer.seal()
        with session_scope(self._engine) as session:
            recording = _require(session, writer.recording_id)
            recording.size, recording.sha256 = size, sha256
            recording.duration_s, recording.ended_at = duration_s, ended_at or now
            recording.updated_at = now
            session.add(recording)
        return self._upload(writer.recording_id, path, now=now)

    def store(
        self,
        draft: RecordingDraft,
        chunks: Iterable[bytes],
        *,
        now: datetime,
        duration_s: float | None = None,
    ) -> Recording:
        """Store a whole recording from an iterable of plaintext pieces."""
        writer = self.begin(draft, now=now)
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            self.discard(writer, reason="capture failed", now=now)
            raise
        return self.finish(writer, now=now, duration_s=duration_s)

    def discard(self, writer: SpoolWriter, *, reason: str, now: datetime) -> None:
        """Throw away a capture (opt-out, refusal, error): spool gone, key destroyed."""
        writer.close()
        with session_scope(self._engine) as session:
            recording = _require(session, writer.recording_id)
            self._fail(session, recording, reason=reason, now=now)

    def recover(self, *, now: datetime, on_progress: Callable[[str], None] | None = None) -> int:
        """Finish what a crash or an S3 outage interrupted; return how many were uploaded.

        Sealed spools are uploaded (or just removed if the catalog already says stored);
        unsealed ones lost the tail of their audio with the process that wrote them.
        """
        uploaded = 0
        for path in sorted(self._spool_dir.iterdir()):
            recording_id = path.stem
            with session_scope(self._engine) as session:
                recording = session.get(Recording, recording_id)
                if recording is None or recording.state != RecordingState.RECORDING:
                    path.unlink(missing_ok=True)
                    continue
                if path.suffix == _PART:
                    self._fail(session, recording, reason="capture interrupted", now=now)
                    path.unlink(missing_ok=True)
                    continue
            if path.suffix == _SEALED:
                stored = self._upload(recording_id, path, now=now)
                uploaded += stored.state == RecordingState.STORED
                if on_progress:
                    on_progress(recording_id)
        return uploaded

    def read(self, recording: Recording, dest: BinaryIO) -> None:
        """Decrypt a recording's audio into ``dest``.

        Each chunk is authenticated before it is written, and a truncated or tampered
        object raises IntegrityError; ``dest`` must be a scratch file that the caller
        serves only when this returns.
        """
        with Session(self._engine) as session:
            key = self._keyring.recording_key(session, recording_id=recording.id)
        decryptor = crypto.StreamDecryptor(key, aad=_aad(recording.id))
        for piece in self._store.get_stream(recording.object_key, version_id=recording.version_id):
            dest.write(decryptor.update(piece))
        dest.write(decryptor.finalize())

    def _upload(self, recording_id: str, path: Path, *, now: datetime) -> Recording:
        with session_scope(self._engine) as session:
            recording = _require(session, recording_id)
            if recording.sha256 is None:  # sealed, then a crash before the catalog heard
                recording.size, recording.sha256 = _size_and_sha256(path)
                session.add(recording)
            purposes = catalog.purposes_of(session, recording_id)
        tags = catalog.object_tags(recording.client_id, purposes)
        try:
            result = self._store.put_file(
                recording.object_key,
                path,
                tags=tags,
                part_size=self._part_size,
                concurrency=self._concurrency,
            )
        except StoreUnavailable as exc:
            log.warning("recording %s kept in the spool until S3 is back: %s", recording_id, exc)
            return recording
        with session_scope(self._engine) as session:
            recording = _require(session, recording_id)
            recording.version_id = result.version_id
            catalog.transition(recording, RecordingState.STORED, now=now)
            session.add(recording)
            self._audit.append(
                session,
                kind="recording.stored",
                actor="callrec",
                now=now,
                client_id=recording.client_id,
                subject=recording.id,
                data={
                    "call_id": recording.call_id,
                    "object_key": recording.object_key,
                    "version_id": result.version_id,
                    "size": recording.size,
                    "sha256": recording.sha256,
                    "purposes": {
                        name.removeprefix("purpose:"): expiry
                        for name, expiry in tags.items()
                        if name.startswith("purpose:")
                    },
                },
            )
        path.unlink(missing_ok=True)
        return recording

    def _fail(self, session: Session, recording: Recording, *, reason: str, now: datetime) -> None:
        catalog.transition(recording, RecordingState.FAILED, now=now)
        recording.failure = reason
        session.add(recording)
        self._keyring.destroy_recording_key(session, recording_id=recording.id, now=now)
        self._audit.append(
            session,
            kind="recording.discarded",
            actor="callrec",
            now=now,
            client_id=recording.client_id,
            subject=recording.id,
            data={"call_id": recording.call_id, "reason": reason, "key_destroyed": True},
        )


def _aad(recording_id: str) -> bytes:
    # Binds the ciphertext to its recording: swapping two objects fails authentication.
    return f"callrec-recording:{recording_id}".encode()


def _require(session: Session, recording_id: str) -> Recording:
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise LookupError(f"recording {recording_id} is not in the catalog")
    return recording


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

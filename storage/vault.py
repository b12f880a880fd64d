"""The store path every source feeds: spool → encrypt → tag → upload → catalog → audit.

A source (an upload, a WebRTC or SIPREC session) opens a ``SpoolWriter`` with
``Vault.begin``, writes audio as it arrives and calls ``Vault.finish``. The audio is
encrypted *before* it touches the disk; as soon as a whole part of ciphertext is in the
spool, it is uploaded in the background (tagged at the start of the multipart upload),
so ``finish`` only sends the last part. The spool is removed only once the catalog says
``stored``: a crash or an S3 outage at any step leaves either a sealed spool that
``Vault.recover`` uploads, or nothing at all. Each replica only recovers spool files on
its own disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import catalog, crypto
from storage.audit import AuditLog
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.duration import DurationProbe
from storage.errors import (
    IntegrityError,
    ObjectStoreError,
    RecordingExists,
    StoreUnavailable,
)
from storage.ids import new_id
from storage.keyring import Keyring
from storage.multipart import PartBuffers, PartUploader
from storage.objectstore import ObjectStore, PutResult
from storage.spool import (
    PART_SUFFIX,
    RESEAL_SUFFIX,
    SEALED_SUFFIX,
    SpoolWriter,
    claim_spool,
    create_spool,
    fsync_spool,
    ownerless_spools,
    recording_aad,
)

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where ``Vault.read`` writes plaintext."""

    def write(self, data: bytes, /) -> object: ...


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
    legal_hold: bool = False  # a case already holds the client or the call


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
        part_size: int = 8 * 1024 * 1024,
        concurrency: int = 4,
    ) -> None:
        self._engine = engine
        self._store = store
        self._keyring = keyring
        self._audit = audit
        self._spool_dir = spool_dir
        self._part_size = part_size
        self._concurrency = concurrency
        # Caps the parts held in memory across every recording this vault streams at once.
        self._buffers = PartBuffers(concurrency, part_size)
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.upload_retries = 0  # uploads tried again from the spool, since this vault began

    def begin(
        self,
        draft: RecordingDraft,
        *,
        now: datetime,
        is_held: Callable[[Session], bool] | None = None,
    ) -> SpoolWriter:
        """Catalog a new recording in state ``recording`` and open its spool.

        The object's tags follow from ``draft.purposes`` and go on the multipart upload
        that starts once the spool holds a whole part. ``is_held`` says, inside the
        transaction that catalogs the recording, whether a legal hold covers it from
        the start (a case on its client or call): asked there, no case placed
        meanwhile is missed. A call that already has a recording raises
        ``RecordingExists``: the database decides between concurrent uploads.
        """
        recording_id = new_id("rec", now)
        key_name = catalog.object_key(
            client_id=draft.client_id,
            recording_id=recording_id,
            created_at=now,
            ext=draft.container,
        )
        path = self._spool_dir / f"{recording_id}{PART_SUFFIX}"
        # The spool exists, locked, before the catalog knows the recording: a crash at
        # any later point leaves a spool for recovery, so a catalogued recording always
        # ends stored or failed with its reason, never "recording" for good.
        spool = create_spool(path)
        try:
            key, held = self._catalog_new(draft, recording_id, key_name, now=now, is_held=is_held)
        except BaseException:
            path.unlink(missing_ok=True)  # before its lock goes: no recovery sees it
            spool.close()
            raise
        upload = PartUploader(
            self._store,
            key_name,
            path=path,
            tags=catalog.object_tags(draft.client_id, draft.purposes, legal_hold=held),
            part_size=self._part_size,
            concurrency=self._concurrency,
            buffers=self._buffers,
        )
        return SpoolWriter(recording_id, path, key, upload, file=spool)

    def _catalog_new(
        self,
        draft: RecordingDraft,
        recording_id: str,
        key_name: str,
        *,
        now: datetime,
        is_held: Callable[[Session], bool] | None,
    ) -> tuple[bytes, bool]:
        """Add the recording in state ``recording``; return its data key and hold flag."""
        try:
            with session_scope(self._engine) as session:
                catalog.order_with_holds(session, exclusive=False)
                # Nothing is captured that could not be audited once stored.
                self._audit.require_head(session)
                held = draft.legal_hold or (is_held is not None and is_held(session))
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
                    legal_hold=held,
                    created_at=now,
                    updated_at=now,
                )
                catalog.add_recording(session, recording=recording, purposes=draft.purposes)
                key = self._keyring.new_recording_key(
                    session, client_id=draft.client_id, recording_id=recording_id, now=now
                )
        except sa.exc.IntegrityError as exc:
            if "call_id" not in str(exc.orig) and "one_per_call" not in str(exc.orig):
                raise
            raise RecordingExists(
                f"call {draft.call_id} already has a recording", code="recording_exists"
            ) from None
        return key, held

    def finish(
        self,
        writer: SpoolWriter,
        *,
        now: datetime,
        duration_s: float | None = None,
        ended_at: datetime | None = None,
    ) -> Recording:
        """Seal the spool and finish its upload; on an S3 outage it waits in the spool.

        ``write`` spooled and encrypted the audio and sent the whole parts, tagged since
        ``begin``; here the last part goes up, then the catalog and the audit log follow,
        in one transaction with everything the writer learnt (sizes, hashes, duration):
        with ``begin``'s, two per recording. A crash before it leaves a sealed spool,
        whose sizes and hashes recovery finds again (its duration stays unknown).
        """
        try:
            path, size, sha256 = writer.seal()
            facts = {
                "size": size,
                "sha256": sha256,
                "audio_size": writer.plaintext_size,
                "audio_sha256": writer.audio_sha256,
                "duration_s": duration_s,
                "ended_at": ended_at or now,
            }
            return self._upload(
                writer.recording_id, path, now=now, streamed=writer.upload, facts=facts
            )
        finally:
            writer.release()  # only now may recovery take what is left in the spool

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
        """Throw away a capture (opt-out, refusal, error): upload, spool and key all gone."""
        writer.close()
        with session_scope(self._engine) as session:
            recording = _require(session, writer.recording_id)
            self._fail(session, recording, reason=reason, now=now)

    def recover(self, *, now: datetime, on_progress: Callable[[str], None] | None = None) -> int:
        """Finish what a crash or an S3 outage interrupted; return how many were uploaded.

        Only spools whose writer is gone are touched (see ``storage.spool``): a capture
        or an upload still running, however long, keeps its spool. Sealed spools are
        uploaded (or just removed if the catalog already says stored). An unsealed
        spool of a live capture is sealed at its last whole chunk and uploaded, marked
        recovered; an unsealed upload lost its tail with the process that wrote it
        (the platform can send it again), and so did sealed spools that a power cut
        tore before they were fsynced or uploaded: those recordings fail.
        """
        with self._engine.connect() as connection:
            if not self._audit.check_head(connection).ok:
                return 0  # the spool waits: what is stored now could not be audited
        uploaded = 0
        for path in ownerless_spools(self._spool_dir):
            with claim_spool(path) as claimed:
                if not claimed:  # another recovery took it meanwhile, or finished it
                    continue
                stored = self._recover_one(path, now=now)
            if stored is None:
                continue
            uploaded += stored.state == RecordingState.STORED
            if on_progress:
                on_progress(stored.id)
        return uploaded

    def _recover_one(self, path: Path, *, now: datetime) -> Recording | None:
        """Upload or fail one spool that nobody owns; None if there was nothing to upload."""
        recording_id = path.stem
        if path.suffix == RESEAL_SUFFIX:  # a recovery died while re-sealing: the .part is left
            path.unlink(missing_ok=True)
            return None
        with session_scope(self._engine) as session:
            recording = session.get(Recording, recording_id)
            if recording is None or recording.state != RecordingState.RECORDING:
                path.unlink(missing_ok=True)
                return None
            live = sealed = False
            if path.suffix == PART_SUFFIX and recording.channel in catalog.LIVE_CHANNELS:
                live = True
            elif path.suffix == SEALED_SUFFIX and self._check_spool(session, recording, path):
                sealed = True
            else:
                reason = "capture interrupted" if path.suffix == PART_SUFFIX else "spool torn"
                self._fail(session, recording, reason=reason, now=now)
                sealed = False
        if live:
            return self._recover_live(recording, path, now=now)
        if not sealed:
            path.unlink(missing_ok=True)
            self._abort_parts(recording.object_key)
            return None
        self.upload_retries += 1
        return self._upload(recording_id, path, now=now, streamed=None)

    def _recover_live(self, recording: Recording, path: Path, *, now: datetime) -> Recording | None:
        """Seal a dead live capture's spool at its last whole chunk, mark it recovered, store it.

        Crash-safe in each step: the torn ``.part`` goes only once the ``.sealed`` that
        replaces it is durable, and the catalog learns the new spool's facts first, so
        a recovery that dies anywhere leaves work the next one finishes.
        """
        sealed_path = path.with_suffix(SEALED_SUFFIX)
        if sealed_path.exists():  # sealed by a recovery that died before removing the .part
            path.unlink(missing_ok=True)
            return None
        work = path.with_suffix(RESEAL_SUFFIX)
        work.unlink(missing_ok=True)  # a dead recovery's: we hold the .part, nobody writes it
        with Session(self._engine) as session:
            key = self._keyring.recording_key(session, recording_id=recording.id)
        out = create_spool(work)  # locked until the upload is done, like a writer's
        try:
            try:
                with open(path, "rb") as torn:
                    kept = crypto.seal_torn_stream(
                        key,
                        iter(lambda: torn.read(1024 * 1024), b""),
                        aad=recording_aad(recording.id),
                        write=out.write,
                    )
            except IntegrityError as exc:  # tampered, or cut in its header: nothing to keep
                log.warning("recording %s: live spool not recovered: %s", recording.id, exc)
                work.unlink(missing_ok=True)
                with session_scope(self._engine) as session:
                    self._fail(
                        session, _require(session, recording.id), reason="spool torn", now=now
                    )
                path.unlink(missing_ok=True)
                self._abort_parts(recording.object_key)
                return None
            out.flush()
            # Durable before its name is: a .sealed found later must be whole, since
            # finding one is what lets a recovery drop the torn .part.
            os.fsync(out.fileno())
            with session_scope(self._engine) as session:
                recording = _require(session, recording.id)
                probe = DurationProbe(recording.container)
                if not self._check_spool(
                    session, recording, work, refresh=True, audio_sink=probe.feed
                ):
                    raise IntegrityError(f"re-sealed spool of {recording.id} does not authenticate")
                recording.duration_s = probe.seconds()  # what was counted died with the process
                if not recording.recovered:  # once, though a recovery may die and redo this
                    recording.recovered = True
                    self._audit.append(
                        session,
                        kind="recording.recovered",
                        actor="callrec",
                        now=now,
                        client_id=recording.client_id,
                        subject=recording.id,
                        data={
                            "call_id": recording.call_id,
                            "reason": "capture interrupted",
                            "audio_kept": kept.kept,
                            "torn_bytes_dropped": kept.dropped,
                            "whole": kept.whole,
                        },
                    )
                session.add(recording)
            os.replace(work, sealed_path)  # our lock moves with the file
            fsync_spool(sealed_path)
            path.unlink(missing_ok=True)
            self.upload_retries += 1
            # No streamed upload: any parts the capture sent are aborted, the spool goes whole.
            return self._upload(recording.id, sealed_path, now=now, streamed=None)
        finally:
            out.close()

    def spool_backlog(self, *, now: datetime) -> tuple[int, float]:
        """Whole recordings in the spool, not (yet) in S3, and the oldest one's wait in seconds."""
        waits = []
        for path in self._spool_dir.glob(f"*{SEALED_SUFFIX}"):
            try:
                waits.append(now.timestamp() - path.stat().st_mtime)
            except FileNotFoundError:  # stored meanwhile
                continue
        return len(waits), max(waits, default=0.0)

    def _abort_parts(self, key: str) -> None:
        """Drop the parts a dead capture streamed; reconciliation cleans up if S3 is away."""
        try:
            self._store.abort_uploads(key)
        except ObjectStoreError as exc:
            log.warning("could not abort the unfinished upload of %s: %s", key, exc)

    def read(self, recording: Recording, dest: Sink) -> None:
        """Decrypt a recording's audio into ``dest``.

        Each chunk is authenticated before it is written, and a truncated or tampered
        object raises IntegrityError; ``dest`` must be an encrypted scratch
        (``storage.scratch``) that the caller serves only when this returns.
        """
        with Session(self._engine) as session:
            key = self._keyring.recording_key(session, recording_id=recording.id)
        decryptor = crypto.StreamDecryptor(key, aad=recording_aad(recording.id))
        for piece in self._store.get_stream(recording.object_key, version_id=recording.version_id):
            dest.write(decryptor.update(piece))
        dest.write(decryptor.finalize())

    def _upload(
        self,
        recording_id: str,
        path: Path,
        *,
        now: datetime,
        streamed: PartUploader | None,
        facts: Mapping[str, object] | None = None,
    ) -> Recording:
        if streamed is not None:  # the tags ``begin`` gave the upload, and its key
            key, tags = streamed.key, dict(streamed.tags)
        else:  # recovering: what the catalog says now
            with Session(self._engine) as session:
                recording = _require(session, recording_id)
                purposes = catalog.purposes_of(session, recording_id)
            key = recording.object_key
            tags = catalog.object_tags(
                recording.client_id, purposes, legal_hold=recording.legal_hold
            )
        try:
            result = self._send(key, path, tags=tags, streamed=streamed)
        except BaseException as exc:
            # The recording must be durable before finish returns or raises: in S3 once
            # the upload completed, otherwise on disk. So the spool is fsynced only here,
            # off the path of a working S3, where it would cost time and buy nothing.
            fsync_spool(path)
            if not isinstance(exc, StoreUnavailable):
                raise
            log.warning("recording %s kept in the spool until S3 is back: %s", recording_id, exc)
            with session_scope(self._engine) as session:  # off the path of a working S3
                recording = _require(session, recording_id)
                _set_facts(recording, facts, now)
                session.add(recording)
            return recording
        with session_scope(self._engine) as session:
            catalog.order_with_holds(session, exclusive=False)
            recording = _require(session, recording_id)
            _set_facts(recording, facts, now)
            # A hold placed (or a purpose withdrawn) while the object went up is in the
            # catalog by now: the object says the same before the recording counts as
            # stored, and a hold placed after this sees it stored and tags it itself.
            purposes = catalog.purposes_of(session, recording_id)
            final = catalog.object_tags(
                recording.client_id, purposes, legal_hold=recording.legal_hold
            )
            if final != tags:
                self._store.put_tags(recording.object_key, final)
                tags = final
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
                    "audio_size": recording.audio_size,
                    "audio_sha256": recording.audio_sha256,
                    "purposes": {
                        name.removeprefix("purpose:"): expiry
                        for name, expiry in tags.items()
                        if name.startswith("purpose:")
                    },
                },
            )
        path.unlink(missing_ok=True)
        return recording

    def _send(
        self, key: str, path: Path, *, tags: dict[str, str], streamed: PartUploader | None
    ) -> PutResult:
        """Complete the upload that streamed during capture, or send the sealed spool."""
        if streamed is not None and streamed.started:
            try:
                result = streamed.complete(path.stat().st_size)
            except StoreUnavailable:
                raise
            except ObjectStoreError as exc:  # e.g. the upload was aborted behind our back
                log.warning("streamed upload of %s failed, sending the spool: %s", key, exc)
            else:
                if streamed.tags != tags:  # purposes changed during the call
                    self._store.put_tags(key, tags)
                return result
        elif streamed is None:  # recovering: a crash or an outage may have left parts
            self._store.abort_uploads(key)
        return self._store.put_file(
            key, path, tags=tags, part_size=self._part_size, concurrency=self._concurrency
        )

    def _check_spool(
        self,
        session: Session,
        recording: Recording,
        path: Path,
        *,
        refresh: bool = False,
        audio_sink: Callable[[bytes], object] | None = None,
    ) -> bool:
        """Whether a sealed spool authenticates to its end; fill in its size and hash.

        Sealing does not fsync (see ``_upload``), so a power cut before the upload
        completed can leave a sealed name over missing blocks: that spool is no whole
        recording. The catalog lacks size and hash if the crash came right after sealing.
        """
        key = self._keyring.recording_key(session, recording_id=recording.id)
        decryptor = crypto.StreamDecryptor(key, aad=recording_aad(recording.id))
        digest, audio_digest, audio_size = hashlib.sha256(), hashlib.sha256(), 0
        try:
            with open(path, "rb") as handle:
                while block := handle.read(1024 * 1024):
                    digest.update(block)
                    audio = decryptor.update(block)
                    audio_digest.update(audio)
                    audio_size += len(audio)
                    if audio_sink is not None:
                        audio_sink(audio)
            audio = decryptor.finalize()
            audio_digest.update(audio)
            audio_size += len(audio)
            if audio_sink is not None:
                audio_sink(audio)
        except IntegrityError as exc:
            log.warning("recording %s: sealed spool does not authenticate: %s", recording.id, exc)
            return False
        if recording.sha256 is None or refresh:
            recording.size, recording.sha256 = path.stat().st_size, digest.hexdigest()
            recording.audio_size, recording.audio_sha256 = audio_size, audio_digest.hexdigest()
            session.add(recording)
        return True

    def _fail(self, session: Session, recording: Recording, *, reason: str, now: datetime) -> None:
        catalog.transition(recording, RecordingState.FAILED, now=now)
        recording.failure = reason
        session.add(recording)
        catalog.remove_purposes(session, [recording.id])  # what was discarded serves none
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


def _set_facts(recording: Recording, facts: Mapping[str, object] | None, now: datetime) -> None:
    """What the writer learnt while writing: sizes, hashes, duration, end."""
    for name, value in (facts or {}).items():
        setattr(recording, name, value)
    recording.updated_at = now


def _require(session: Session, recording_id: str) -> Recording:
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise LookupError(f"recording {recording_id} is not in the catalog")
    return recording

"""The spool: a recording's ciphertext on local disk, the copy that survives a crash.

Audio is encrypted before it touches the disk. A ``.part`` file is a capture in
progress; sealing it (final chunk written) renames it ``.sealed``. Only the vault
decides when a spool may go: once the catalog says the recording is stored.

A live capture's ``.part`` whose writer died (``kill -9``) is re-sealed by recovery at
its last whole chunk (``crypto.seal_torn_stream``) into a ``.resealing`` file, renamed
``.sealed`` once whole; an upload's ``.part`` is given up (the platform sends it again).

A spool has one owner. Its writer holds an exclusive ``flock`` on the file from the
moment it is created until the vault is done with it (stored, or left for a retry),
however long the call; the kernel drops the lock with the process, so a spool whose
lock can be taken has no living writer, on this machine, and never gets one again.
Writers create their file under a shared lock of the spool directory and recovery
lists it under an exclusive one, so no spool is ever seen between its creation and
its lock. (Spools live on a local disk: ``flock`` means little on a network one.)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from storage import crypto
from storage.multipart import PartUploader

PART_SUFFIX, SEALED_SUFFIX = ".part", ".sealed"
# A torn live spool being re-sealed by recovery; renamed ``.sealed`` once whole.
RESEAL_SUFFIX = ".resealing"
# Fed to the encryptor in slices of a few chunks: it returns each call's ciphertext as
# one new buffer, and buffers this small are recycled by the allocator, while fresh
# ones of a MiB fault in page by page (which doubled the cost of encryption).
_FEED = 4 * crypto.DEFAULT_CHUNK_SIZE


class SpoolWriter:
    """Encrypts audio into a local spool file as it arrives, and uploads it as it grows.

    The spool is the copy that survives a crash or an S3 outage; ``upload``, if given,
    sends each whole part of it to S3 in the background meanwhile.
    """

    def __init__(
        self,
        recording_id: str,
        path: Path,
        key: bytes,
        upload: PartUploader | None = None,
        *,
        file: BinaryIO | None = None,
    ) -> None:
        self.recording_id = recording_id
        self.path = path
        self.upload = upload
        # ``file``: the spool as ``create_spool`` opened it, if that came first.
        self._file: BinaryIO = create_spool(path) if file is None else file
        self._encryptor = crypto.StreamEncryptor(key, aad=recording_aad(recording_id))
        # The audio as it will be served: a download can be checked against it.
        self._audio_sha256 = hashlib.sha256()

    @property
    def plaintext_size(self) -> int:
        return self._encryptor.plaintext_size

    @property
    def audio_sha256(self) -> str:
        """Hex SHA-256 of the audio written so far (the plaintext)."""
        return self._audio_sha256.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` into the spool; start uploading each part as it completes."""
        view = memoryview(data).cast("B")
        self._audio_sha256.update(view)
        for start in range(0, len(view), _FEED):
            self._file.write(self._encryptor.update(view[start : start + _FEED]))
        spooled = self._encryptor.ciphertext_size
        if self.upload is not None and self.upload.due(spooled):
            self._file.flush()  # the upload reads the part back from the file
            self.upload.extend(spooled)

    def seal(self) -> tuple[Path, int, str]:
        """Finish the ciphertext and mark the spool whole; return (path, size, sha256).

        The lock stays held (see ``release``): recovery must not upload a sealed spool
        that its writer is still uploading. No fsync here: ``Vault.finish`` makes the
        spool durable only if the upload did not make it durable in S3, and
        ``Vault.recover`` authenticates a sealed spool before trusting it.
        """
        self._file.write(self._encryptor.finalize())
        self._file.flush()
        sealed = self.path.with_suffix(SEALED_SUFFIX)
        os.replace(self.path, sealed)  # an upload in flight reads on through the rename
        return sealed, self._encryptor.ciphertext_size, self._encryptor.ciphertext_sha256

    def release(self) -> None:
        """Give the spool up: close it and drop its lock; what is left is recovery's.

        Safe to call twice.
        """
        self._file.close()

    def close(self) -> None:
        """Drop an unsealed spool file and abort its upload (the capture is discarded)."""
        if self.upload is not None:
            self.upload.abort()  # waits for parts in flight: no orphan part stays in S3
        self.path.unlink(missing_ok=True)  # before the lock goes: recovery never sees it
        self.release()


def create_spool(path: Path) -> BinaryIO:
    """Create a spool file, locked before any recovery can list it; closing unlocks it."""
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_SH)  # recovery lists under LOCK_EX
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(directory)  # drops the shared lock
    return os.fdopen(fd, "wb")


def ownerless_spools(spool_dir: Path) -> list[Path]:
    """The spool files whose writer is gone (crashed, or done and left them behind).

    Listed under the directory's exclusive lock, so a writer is never caught between
    creating its file and locking it. A spool found ownerless stays so: writers only
    lock the files they create.
    """
    found: list[Path] = []
    directory = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        for path in sorted(spool_dir.iterdir()):
            with claim_spool(path) as claimed:
                if claimed:
                    found.append(path)
    finally:
        os.close(directory)
    return found


@contextmanager
def claim_spool(path: Path) -> Iterator[bool]:
    """Hold ``path``'s lock for the block if nobody else does, and say whether we got it.

    False when a living writer (or another recovery) holds it, or the file is gone.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            claimed = False
        else:
            claimed = os.fstat(fd).st_nlink > 0  # not removed by its writer meanwhile
        yield claimed
    finally:
        os.close(fd)


def recording_aad(recording_id: str) -> bytes:
    """Associated data binding a ciphertext to its recording."""
    # Two objects swapped in the bucket then fail authentication.
    return f"callrec-recording:{recording_id}".encode()


def fsync_spool(path: Path) -> None:
    """Flush a spool file and its directory entry (after the rename that sealed it)."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

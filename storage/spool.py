"""The spool: a recording's ciphertext on local disk, the copy that survives a crash.

Audio is encrypted before it touches the disk. A ``.part`` file is a capture in
progress; sealing it (final chunk written) renames it ``.sealed``. Only the vault
decides when a spool may go: once the catalog says the recording is stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from storage import crypto
from storage.multipart import PartUploader

PART_SUFFIX, SEALED_SUFFIX = ".part", ".sealed"
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
        self, recording_id: str, path: Path, key: bytes, upload: PartUploader | None = None
    ) -> None:
        self.recording_id = recording_id
        self.path = path
        self.upload = upload
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed by seal/close)
        self._encryptor = crypto.StreamEncryptor(key, aad=recording_aad(recording_id))

    @property
    def plaintext_size(self) -> int:
        return self._encryptor.plaintext_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` into the spool; start uploading each part as it completes."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _FEED):
            self._file.write(self._encryptor.update(view[start : start + _FEED]))
        spooled = self._encryptor.ciphertext_size
        if self.upload is not None and self.upload.due(spooled):
            self._file.flush()  # the upload reads the part back from the file
            self.upload.extend(spooled)

    def seal(self) -> tuple[Path, int, str]:
        """Finish the ciphertext and mark the spool whole; return (path, size, sha256).

        No fsync here: ``Vault.finish`` makes the spool durable only if the upload did
        not make it durable in S3, and ``Vault.recover`` authenticates a sealed spool
        before trusting it.
        """
        self._file.write(self._encryptor.finalize())
        self._file.close()
        sealed = self.path.with_suffix(SEALED_SUFFIX)
        os.replace(self.path, sealed)  # an upload in flight reads on through the rename
        return sealed, self._encryptor.ciphertext_size, self._encryptor.ciphertext_sha256

    def close(self) -> None:
        """Drop an unsealed spool file and abort its upload (the capture is discarded)."""
        if self.upload is not None:
            self.upload.abort()  # waits for parts in flight: no orphan part stays in S3
        self._file.close()
        self.path.unlink(missing_ok=True)


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

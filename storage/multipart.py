"""A multipart upload fed part by part while the file it uploads is still growing.

The vault's spool file grows as a call is encrypted. Each time a whole part's worth of
ciphertext is in the file, ``extend`` hands that byte range to a worker, which reads
it back with ``os.pread`` and uploads it: the upload runs alongside the capture rather
than after it, and ``complete`` only has the short last part left to send. The same
class uploads a finished file (``ObjectStore.put_file``).

Memory stays bounded whatever the file size: a queued part is an offset, not bytes; a
part is read only by the worker about to send it, into one of ``PartBuffers`` (which
several uploads can share, to cap the parts in memory across all of them).
Nothing touches S3 until the first whole part is there, so a file that never grows
past one part never starts a multipart upload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from storage.errors import ObjectStoreError

if TYPE_CHECKING:
    from storage.objectstore import ObjectStore, PutResult

log = logging.getLogger(__name__)

MIN_PART = 5 * 1024 * 1024  # S3 rejects smaller parts, except the last
MAX_PARTS = 10_000  # S3's limit on parts per upload


class PartBuffers:
    """At most ``count`` part buffers in use at once, kept for reuse between parts.

    Reuse matters beyond the allocation: every page of a fresh multi-MiB buffer faults
    on first touch, which here costs about as much CPU as encrypting it. Buffers are
    ``bytearray`` because botocore copies a ``bytes`` body into one string with the
    headers before sending it, doubling the memory of each part in flight.
    """

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(count)
        self._free: deque[bytearray] = deque()  # append and pop are thread-safe

    @contextmanager
    def take(self, length: int) -> Iterator[bytearray]:
        """A buffer of exactly ``length`` bytes; waits while ``count`` are in use."""
        with self._slots:
            reusable = length == self.size
            buf = self._free.pop() if reusable and self._free else bytearray(length)
            try:
                yield buf
            finally:
                if reusable:
                    self._free.append(buf)


class PartUploader:
    """Uploads ``path`` to ``key`` as an S3 multipart upload while the file grows."""

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        path: Path,
        tags: Mapping[str, str],
        part_size: int,
        concurrency: int,
        buffers: PartBuffers | None = None,
    ) -> None:
        if part_size < MIN_PART or concurrency < 1:
            raise ValueError(f"part_size must be >= {MIN_PART} and concurrency >= 1")
        self.key, self.path, self.tags = key, path, dict(tags)
        self._store, self._part_size, self._concurrency = store, part_size, concurrency
        if buffers is None or buffers.size != part_size:
            buffers = PartBuffers(concurrency, part_size)
        self._buffers = buffers
        self._sent = 0  # bytes handed to parts so far
        self._parts: list[Future[str]] = []
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._stopped = False
        # Set up by the first whole part: a small file never opens any of these.
        self._fd = -1
        self._pool: ThreadPoolExecutor | None = None
        self._upload_id: Future[str] | None = None

    @property
    def started(self) -> bool:
        """True once the multipart upload was started in S3 (or tried to be)."""
        return self._pool is not None

    def due(self, available: int) -> bool:
        """Whether ``available`` bytes in the file make at least one more whole part."""
        return not self._stopped and available - self._sent >= self._part_size

    def extend(self, available: int) -> None:
        """The file now holds ``available`` bytes (written, flushed): send each whole part.

        Never blocks on S3: parts queue as offsets, and a failure only shows in
        ``complete``, so a live capture carries on into the spool whatever S3 does.
        """
        while self.due(available):
            self._submit(self._part_size)

    def complete(self, size: int) -> PutResult:
        """Send the rest of the file (``size`` bytes in all) as the last part and finish.

        Any failure stops the upload, aborts it in S3 once the parts in flight are
        back (so no orphan part is left behind) and is raised.
        """
        try:
            if size > self._sent:
                self._submit(size - self._sent)
            if self._upload_id is None:
                raise ValueError(f"upload {self.key}: nothing to upload")
            wait(self._parts)
            if self._error is not None:
                raise self._error
            etags = [part.result() for part in self._parts]
            result = self._store.complete_upload(
                self.key, self._upload_id.result(), etags, size=size
            )
        except BaseException:
            self.abort()
            raise
        self._upload_id = None  # completed: nothing left to abort
        self._close()
        return result

    def abort(self) -> None:
        """Stop sending, wait for the parts in flight, and abort the upload in S3.

        Safe to call twice; an abort S3 refuses is logged, not raised.
        """
        self._stopped = True
        if self._pool is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        started = self._upload_id
        if started is not None and not started.cancelled() and started.exception() is None:
            self._store.abort_upload(self.key, started.result())
            self._upload_id = None  # aborted once is enough
        self._close()

    def _start(self) -> None:
        self._fd = os.open(self.path, os.O_RDONLY)  # follows the file through a rename
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="s3-part")
        # The start is the first job of the pool: parts queued behind it wait for its id.
        self._upload_id = self._pool.submit(self._store.create_upload, self.key, tags=self.tags)

    def _submit(self, length: int) -> None:
        if self._pool is None:
            self._start()
        assert self._pool is not None
        number, offset = len(self._parts) + 1, self._sent
        if number > MAX_PARTS:
            self._fail(ObjectStoreError(f"upload {self.key}: more than {MAX_PARTS} parts"))
            return
        self._parts.append(self._pool.submit(self._send, number, offset, length))
        self._sent += length

    def _send(self, number: int, offset: int, length: int) -> str:
        assert self._upload_id is not None
        try:
            upload_id = self._upload_id.result()
            if self._error is not None:
                return ""  # an earlier part failed: the upload is doomed, spare the bytes
            with self._buffers.take(length) as data:
                if os.preadv(self._fd, [data], offset) != length:
                    raise ObjectStoreError(f"upload_part {self.key}: file shrank during upload")
                return self._store.upload_part(self.key, upload_id, number, data)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException) -> None:
        self._stopped = True
        with self._error_lock:
            if self._error is None:
                self._error = exc

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

"""Scratch files that never hold plaintext: for bodies too big to keep in memory.

An upload must be on disk before it is decoded (demuxers seek), and an export is
built before it is sent. A ``Scratch`` encrypts what is written to it with the
chunked AES-256-GCM stream under a key made for it alone and kept only in memory,
and reads it back with random access. The file has no name (``O_TMPFILE``), so a
crash leaves nothing to find; were a file to survive anyway, its key died with the
process that wrote it. ``clear_leftovers`` removes what older versions left behind.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from storage import crypto

log = logging.getLogger(__name__)

_AAD = b"callrec-scratch"
# Plaintext handed out per piece when a scratch is streamed to a client.
_PIECE = 4 * crypto.DEFAULT_CHUNK_SIZE


class Scratch:
    """A write-once, then read-many, encrypted temporary file.

    Write with ``write`` (it also serves as a non-seekable output file: ``tell``,
    ``flush``), ``seal`` once, then ``open`` a seekable reader or iterate ``pieces``.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close)
        self._key = crypto.generate_key()
        self._encryptor: crypto.StreamEncryptor | None = crypto.StreamEncryptor(self._key, aad=_AAD)
        self._opener: crypto.ChunkOpener | None = None

    def __enter__(self) -> Scratch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt ``data`` onto the end of the file."""
        if self._encryptor is None:
            raise ValueError("write() after seal()")
        self._file.write(self._encryptor.update(data))
        return len(data)

    def tell(self) -> int:
        """Plaintext bytes written so far (what ``zipfile`` asks of an output file)."""
        return self._encryptor.plaintext_size if self._encryptor is not None else self.size

    def flush(self) -> None:
        """Nothing to do: ``seal`` writes the end."""

    @property
    def size(self) -> int:
        """Plaintext size; only once sealed."""
        if self._opener is None:
            raise ValueError("size before seal()")
        return self._opener.plaintext_size

    def seal(self) -> None:
        """Write the final chunk; from now on the scratch is read-only."""
        if self._encryptor is None:
            raise ValueError("seal() called twice")
        self._file.write(self._encryptor.finalize())
        self._file.flush()
        self._encryptor = None
        size = os.fstat(self._file.fileno()).st_size
        header = os.pread(self._file.fileno(), crypto.HEADER_SIZE, 0)
        self._opener = crypto.ChunkOpener(self._key, header, aad=_AAD, size=size)

    def open(self) -> io.BufferedReader:
        """A seekable reader of the plaintext (several may be open at once)."""
        if self._opener is None:
            raise ValueError("open() before seal()")
        return io.BufferedReader(_Reader(self._file.fileno(), self._opener))

    def pieces(self) -> Iterator[bytes]:
        """The plaintext from start to end, in pieces."""
        with self.open() as reader:
            while piece := reader.read(_PIECE):
                yield piece

    def close(self) -> None:
        self._file.close()
        self._key = b""


class _Reader(io.RawIOBase):
    """Decrypts the chunks a read touches; keeps the last one opened."""

    def __init__(self, fd: int, opener: crypto.ChunkOpener) -> None:
        super().__init__()
        self._fd, self._opener, self._pos = fd, opener, 0
        self._cached: tuple[int, bytes] = (-1, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._opener.plaintext_size}
        position = base[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._pos = position
        return position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._pos >= self._opener.plaintext_size:
            return 0
        index, start = divmod(self._pos, self._opener.chunk_size)
        if self._cached[0] != index:
            offset, length = self._opener.span(index)
            self._cached = (index, self._opener.open(index, os.pread(self._fd, length, offset)))
        chunk = self._cached[1][start:]
        count = min(len(chunk), len(buffer))
        buffer[:count] = chunk[:count]
        self._pos += count
        return count


def clear_leftovers(directory: Path) -> int:
    """Remove every file left in a scratch directory; return how many.

    Live scratch files have no name, so whatever has one was left by a crash of an
    older version (which wrote uploads and downloads there in the clear).
    """
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("removed %d leftover temporary files from %s", removed, directory)
    return removed

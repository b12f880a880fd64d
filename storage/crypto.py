"""Envelope-encryption primitives: key wrapping and chunked AES-256-GCM streams.

Keys: the master key wraps each client key, which wraps each recording's data key
(``wrap_key`` / ``unwrap_key``; the keyring decides who wraps what). A wrapped key is
``version (1) ‖ nonce (12) ‖ AES-256-GCM ciphertext and tag (48)``, 61 bytes, made with
``version ‖ context`` as associated data, so it only unwraps for the owner it was made for.

Stream format (integers big-endian)::

    header  = magic b"CREC" (4) ‖ version 0x01 (1) ‖ chunk_size u32 (4) ‖ nonce_prefix (7)
    chunk i = AES-256-GCM(data key, nonce_i, plaintext_i, associated data = header ‖ aad)
    nonce_i = nonce_prefix (7) ‖ i u32 (4) ‖ last-chunk flag 0x00 / 0x01 (1)

This is the STREAM construction ("Online Authenticated-Encryption and its Nonce-Reuse
Misuse-Resistance", CRYPTO 2015): the counter pins each chunk to its position and the
flag marks the end, so reordered, dropped, duplicated or truncated chunks fail
authentication. Every non-final chunk holds exactly ``chunk_size`` plaintext bytes and
the final one 0..chunk_size-1, so a chunk of ``chunk_size + 16`` bytes is never the
last: the decryptor releases it as soon as it is authenticated, and a stream cut at a
chunk boundary lacks its final chunk. The header is in every chunk's associated data,
so tampering with it, or moving the stream under another recording's ``aad``, fails too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import string
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import ConfigError, IntegrityError

KEY_BYTES = 32
DEFAULT_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024  # caps what a forged header can make the decryptor buffer

_Bytes = bytes | bytearray | memoryview
_Use = Callable[[_Bytes], bytes]
_MAGIC, _STREAM_VERSION, _WRAP_VERSION = b"CREC", 1, 1
_HEADER = struct.Struct(">4sBI7s")
_NONCE_TAIL = struct.Struct(">IB")  # chunk counter, last-chunk flag
_TAG, _NONCE, _PREFIX = 16, 12, 7
# The 32-bit counter allows 2**32 chunks per stream, each under a distinct nonce
# (NIST SP 800-38D §8.2.1, deterministic construction); each recording has its own key.
_MAX_CHUNKS = 2**32


def generate_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


def _check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes, got {len(key)}")


def _check_chunk_size(chunk_size: int) -> None:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}, got {chunk_size}")


def wrap_key(kek: bytes, key: bytes, *, context: bytes) -> bytes:
    """Encrypt ``key`` under ``kek``, bound to ``context`` (e.g. ``b"client:acme"``)."""
    _check_key(kek, "kek")
    _check_key(key, "key")
    # Random 96-bit nonces are fine: a key-encryption key wraps far fewer keys than the
    # 2**32 invocations NIST SP 800-38D §8.3 allows with random nonces.
    nonce, version = os.urandom(_NONCE), bytes([_WRAP_VERSION])
    return version + nonce + AESGCM(kek).encrypt(nonce, key, version + context)


def unwrap_key(kek: bytes, wrapped: bytes, *, context: bytes) -> bytes:
    """Recover a key made by ``wrap_key``; raise IntegrityError if anything does not match."""
    _check_key(kek, "kek")
    if len(wrapped) != 1 + _NONCE + KEY_BYTES + _TAG:
        raise IntegrityError("wrapped key has the wrong length")
    if wrapped[0] != _WRAP_VERSION:
        raise IntegrityError(f"wrapped key has unknown version {wrapped[0]}")
    nonce, body = wrapped[1 : 1 + _NONCE], wrapped[1 + _NONCE :]
    try:
        return AESGCM(kek).decrypt(nonce, body, wrapped[:1] + context)
    except InvalidTag:
        raise IntegrityError("wrapped key failed authentication") from None


def parse_master_key(text: str) -> bytes:
    """Decode a 32-byte master key written as base64 (standard or urlsafe) or 64 hex digits."""
    # Messages describe the problem, never the value: they end up in logs.
    value = text.strip()
    if not value:
        raise ConfigError("master key is empty")
    if len(value) == 2 * KEY_BYTES and all(c in string.hexdigits for c in value):
        return bytes.fromhex(value)
    padded = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        raise ConfigError("master key is neither base64 nor 64 hex digits") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"master key must be {KEY_BYTES} bytes, it decodes to {len(key)}")
    return key


def format_master_key(key: bytes) -> str:
    """Encode a master key as urlsafe base64, a form ``parse_master_key`` reads back."""
    _check_key(key, "master key")
    return base64.urlsafe_b64encode(key).decode("ascii")


def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Exact size of the stream that encrypts ``plaintext_size`` bytes."""
    _check_chunk_size(chunk_size)
    if plaintext_size < 0:
        raise ValueError("plaintext_size must not be negative")
    chunks = plaintext_size // chunk_size + 1  # the final chunk is always there
    return _HEADER.size + plaintext_size + chunks * _TAG


def _split(pending: bytearray, view: memoryview, size: int, use: _Use) -> list[bytes]:
    """Pass each whole ``size``-byte frame of ``pending ‖ view`` to ``use``; keep the rest.

    Frames inside ``view`` go as views, not copies; only a frame straddling two calls is
    gathered in ``pending``, so memory stays within one frame plus the caller's piece.
    """
    if len(pending) + len(view) < size:  # no whole frame yet: the usual case for small pieces
        pending += view
        return []
    out = []
    if pending:
        take = size - len(pending)
        pending += view[:take]
        view = view[take:]
        out.append(use(pending))
        pending.clear()
    while len(view) >= size:
        out.append(use(view[:size]))
        view = view[size:]
    pending += view
    return out


class StreamEncryptor:
    """Encrypt a stream piece by piece; memory stays within one chunk plus the piece given."""

    def __init__(self, key: bytes, *, aad: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        _check_key(key, "key")
        _check_chunk_size(chunk_size)
        self._aead, self._chunk_size = AESGCM(key), chunk_size
        self._prefix = os.urandom(_PREFIX)
        self._unsent = _HEADER.pack(_MAGIC, _STREAM_VERSION, chunk_size, self._prefix)
        self._ad = self._unsent + aad
        self._pending = bytearray()
        self._counter = self._plaintext_size = self._ciphertext_size = 0
        self._sha256 = hashlib.sha256()
        self._done = False

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes taken so far."""
        return self._plaintext_size

    @property
    def ciphertext_size(self) -> int:
        """Ciphertext bytes returned so far."""
        return self._ciphertext_size

    @property
    def ciphertext_sha256(self) -> str:
        """Hex SHA-256 of the ciphertext returned so far: the stored object's, once finalized."""
        return self._sha256.hexdigest()

    def _seal(self, chunk: _Bytes, last: bool = False) -> bytes:
        if self._counter >= _MAX_CHUNKS:
            raise ValueError("stream too long for the chunk counter")
        nonce = self._prefix + _NONCE_TAIL.pack(self._counter, last)
        self._counter += 1
        return self._aead.encrypt(nonce, chunk, self._ad)

    def _emit(self, out: list[bytes]) -> bytes:
        data = b"".join(out)
        self._unsent = b""
        self._sha256.update(data)
        self._ciphertext_size += len(data)
        return data

    def update(self, data: _Bytes) -> bytes:
        """Take more plaintext; return the ciphertext ready so far (the header comes first)."""
        if self._done:
            raise ValueError("update() after finalize()")
        view = memoryview(data).cast("B")
        self._plaintext_size += len(view)
        # A full chunk is never the final one, so it can be sealed right away.
        sealed = _split(self._pending, view, self._chunk_size, self._seal)
        return self._emit([self._unsent, *sealed]) if sealed or self._unsent else b""

    def finalize(self) -> bytes:
        """Return the final chunk (after the header, if nothing was returned yet)."""
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        return self._emit([self._unsent, self._seal(self._pending, True)])


class StreamDecryptor:
    """Decrypt a stream piece by piece, releasing only authenticated plaintext."""

    def __init__(self, key: bytes, *, aad: bytes) -> None:
        _check_key(key, "key")
        self._aead, self._aad = AESGCM(key), aad
        self._ad = self._prefix = b""  # both known once the header is read
        self._frame = 0  # chunk_size + tag, likewise
        self._pending = bytearray()
        self._counter = 0
        self._state = "header"  # then "chunks", then "done" or "failed"

    def _fail(self, message: str) -> IntegrityError:
        self._state = "failed"
        return IntegrityError(message)

    def _open(self, frame: _Bytes, last: bool = False) -> bytes:
        if self._counter >= _MAX_CHUNKS:
            raise self._fail("stream too long for the chunk counter")
        nonce = self._prefix + _NONCE_TAIL.pack(self._counter, last)
        try:
            plaintext = self._aead.decrypt(nonce, frame, self._ad)
        except InvalidTag:
            what = "final chunk" if last else "chunk"
            raise self._fail(f"{what} {self._counter} failed authentication") from None
        self._counter += 1
        return plaintext

    def update(self, data: _Bytes) -> bytes:
        """Take more ciphertext; return the plaintext of the chunks authenticated by it."""
        if self._state in ("done", "failed"):
            raise ValueError(f"update() on a {self._state} stream")
        view = memoryview(data).cast("B")
        if self._state == "header":
            take = _HEADER.size - len(self._pending)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < _HEADER.size:
                return b""
            header = bytes(self._pending)
            self._pending.clear()
            magic, version, size, self._prefix = _HEADER.unpack(header)
            if magic != _MAGIC or version != _STREAM_VERSION or not 0 < size <= MAX_CHUNK_SIZE:
                raise self._fail("bad header")
            self._ad, self._frame, self._state = header + self._aad, size + _TAG, "chunks"
        # A full-size frame is never the final chunk, so it is opened as soon as it is here.
        return b"".join(_split(self._pending, view, self._frame, self._open))

    @property
    def chunk_size(self) -> int:
        """The stream's chunk size, once its header is read (0 before)."""
        return self._frame - _TAG if self._frame else 0

    def finalize_torn(self) -> tuple[bytes | None, int]:
        """End a stream that may be cut: (the final chunk's plaintext, 0) if it is there,
        else (None, the length of the torn tail left after the last whole chunk).

        Only for recovering a stream whose writer died: every whole chunk it released
        authenticated, and a tail that is not the final chunk is no chunk at all.
        """
        if self._state != "chunks":
            raise ValueError(f"finalize_torn() on a stream in state {self._state}")
        tail = bytes(self._pending)
        self._pending.clear()
        self._state = "done"
        if len(tail) >= _TAG:
            nonce = self._prefix + _NONCE_TAIL.pack(self._counter, True)
            try:
                return self._aead.decrypt(nonce, tail, self._ad), 0
            except InvalidTag:
                pass  # cut inside the chunk: its tag is gone
        return None, len(tail)

    def finalize(self) -> bytes:
        """Authenticate the final chunk and return its plaintext; raise if the stream is cut."""
        if self._state in ("done", "failed"):
            raise ValueError(f"finalize() on a {self._state} stream")
        if self._state == "header":
            raise self._fail("stream truncated in the header")
        if len(self._pending) < _TAG:
            raise self._fail(f"stream truncated: final chunk {self._counter} missing")
        plaintext = self._open(self._pending, True)
        self._state = "done"
        return plaintext


class ChunkOpener:
    """Random access to a whole stream of known size: any chunk opened on its own.

    For a stream this process wrote and now reads back out of order (a decoder that
    seeks). The stream's size says which chunk is the last, so a cut stream still
    fails: its new last chunk was sealed without the last-chunk flag.
    """

    def __init__(self, key: bytes, header: bytes, *, aad: bytes, size: int) -> None:
        _check_key(key, "key")
        if len(header) != _HEADER.size or size < _HEADER.size + _TAG:
            raise IntegrityError("stream truncated in the header")
        magic, version, chunk_size, self._prefix = _HEADER.unpack(header)
        if magic != _MAGIC or version != _STREAM_VERSION or not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise IntegrityError("bad header")
        self._aead, self._ad = AESGCM(key), header + aad
        self.chunk_size: int = chunk_size
        self._frame = self.chunk_size + _TAG
        body = size - _HEADER.size
        self.chunks: int = body // self._frame + 1
        if body % self._frame < _TAG:
            raise IntegrityError("stream truncated: final chunk missing")
        self.plaintext_size: int = body - self.chunks * _TAG

    def span(self, index: int) -> tuple[int, int]:
        """Where chunk ``index`` lies in the stream: (offset, length)."""
        offset = _HEADER.size + index * self._frame
        last = index == self.chunks - 1
        return offset, (
            self.plaintext_size - index * self.chunk_size + _TAG if last else self._frame
        )

    def open(self, index: int, frame: _Bytes) -> bytes:
        """The plaintext of chunk ``index``; raise IntegrityError if it does not authenticate."""
        if not 0 <= index < self.chunks:
            raise ValueError(f"no chunk {index} in a stream of {self.chunks}")
        nonce = self._prefix + _NONCE_TAIL.pack(index, index == self.chunks - 1)
        try:
            return self._aead.decrypt(nonce, frame, self._ad)
        except InvalidTag:
            raise IntegrityError(f"chunk {index} failed authentication") from None


HEADER_SIZE = _HEADER.size


@dataclass(frozen=True)
class TornSeal:
    """What ``seal_torn_stream`` kept of a stream whose writer died before sealing it."""

    kept: int  # plaintext bytes kept: every whole chunk, and the final one if it was there
    dropped: int  # ciphertext bytes of the torn tail left out
    whole: bool  # the stream already ended with its final chunk: nothing was lost


def seal_torn_stream(
    key: bytes, pieces: Iterable[_Bytes], *, aad: bytes, write: Callable[[bytes], object]
) -> TornSeal:
    """Re-seal a stream cut anywhere after its header, keeping every whole chunk.

    Each full-size frame must authenticate as the chunk of its position, or
    IntegrityError is raised and nothing is kept: a stream that was tampered with is
    refused, never salvaged. What follows the last full frame is either the final
    chunk (kept: the stream was whole) or a chunk torn by the crash (dropped). The
    plaintext kept is written, as a new stream ending with its final chunk, to
    ``write``; a stream cut in its header raises IntegrityError.

    The new stream is encrypted afresh, under a new nonce prefix, rather than given a
    final chunk in place: the torn tail may be the writer's own final chunk, and
    sealing another one under that chunk's nonce would reuse a GCM nonce.
    """
    decryptor = StreamDecryptor(key, aad=aad)
    encryptor: StreamEncryptor | None = None
    for piece in pieces:
        plaintext = decryptor.update(piece)
        if encryptor is None and decryptor.chunk_size:
            encryptor = StreamEncryptor(key, aad=aad, chunk_size=decryptor.chunk_size)
        if plaintext and encryptor is not None:
            write(encryptor.update(plaintext))
    if encryptor is None:
        raise IntegrityError("stream truncated in the header")
    tail, dropped = decryptor.finalize_torn()
    if tail is not None:
        write(encryptor.update(tail))
    write(encryptor.finalize())
    return TornSeal(kept=encryptor.plaintext_size, dropped=dropped, whole=tail is not None)


def encrypt_chunks(
    key: bytes, chunks: Iterable[_Bytes], *, aad: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield the encrypted stream of ``chunks`` (pieces of any size) as it is produced."""
    encryptor = StreamEncryptor(key, aad=aad, chunk_size=chunk_size)
    for piece in chunks:
        if out := encryptor.update(piece):
            yield out
    yield encryptor.finalize()


def decrypt_chunks(key: bytes, chunks: Iterable[_Bytes], *, aad: bytes) -> Iterator[bytes]:
    """Yield the authenticated plaintext of an encrypted stream; raise IntegrityError if bad."""
    decryptor = StreamDecryptor(key, aad=aad)
    for piece in chunks:
        if out := decryptor.update(piece):
            yield out
    if out := decryptor.finalize():
        yield out

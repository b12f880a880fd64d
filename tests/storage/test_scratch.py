"""Encrypted scratch files: nothing readable on disk, random access back."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from storage import crypto
from storage.errors import IntegrityError
from storage.scratch import Scratch, clear_leftovers


def test_what_is_written_reads_back_with_seeks_and_is_not_on_disk(tmp_path: Path) -> None:
    data = os.urandom(3 * crypto.DEFAULT_CHUNK_SIZE + 1234)
    marker = b"RIFF\x00\x00\x00\x00WAVE" * 100
    with Scratch(tmp_path) as scratch:
        for start in range(0, len(data), 1000):
            scratch.write(data[start : start + 1000])
        scratch.write(marker)
        assert scratch.tell() == len(data) + len(marker)
        scratch.seal()
        assert scratch.size == len(data) + len(marker)
        assert list(tmp_path.iterdir()) == []  # the file has no name
        with open(f"/proc/self/fd/{scratch._file.fileno()}", "rb") as raw:
            assert marker[:12] not in raw.read()
        assert b"".join(scratch.pieces()) == data + marker
        with scratch.open() as reader:
            reader.seek(crypto.DEFAULT_CHUNK_SIZE - 10)
            assert reader.read(20) == data[crypto.DEFAULT_CHUNK_SIZE - 10 :][:20]
            reader.seek(-len(marker), io.SEEK_END)
            assert reader.read() == marker
            assert reader.read(10) == b""


@pytest.mark.parametrize("plaintext", [0, 1, crypto.DEFAULT_CHUNK_SIZE, 70_000])
def test_chunk_opener_sizes_and_a_cut_stream(plaintext: int) -> None:
    key = crypto.generate_key()
    stream = b"".join(crypto.encrypt_chunks(key, [b"x" * plaintext], aad=b"a"))
    header = stream[: crypto.HEADER_SIZE]
    opener = crypto.ChunkOpener(key, header, aad=b"a", size=len(stream))
    assert opener.plaintext_size == plaintext
    out = b""
    for index in range(opener.chunks):
        offset, length = opener.span(index)
        out += opener.open(index, stream[offset : offset + length])
    assert out == b"x" * plaintext
    if opener.chunks > 1:  # cut at a chunk boundary: no final chunk
        with pytest.raises(IntegrityError, match="final chunk missing"):
            crypto.ChunkOpener(key, header, aad=b"a", size=opener.span(opener.chunks - 1)[0])
    # Cut inside the last chunk: too short to be one, or it no longer authenticates.
    with pytest.raises(IntegrityError):
        _open_all(key, stream[:-1])


def _open_all(key: bytes, stream: bytes) -> bytes:
    opener = crypto.ChunkOpener(key, stream[: crypto.HEADER_SIZE], aad=b"a", size=len(stream))
    spans = [opener.span(index) for index in range(opener.chunks)]
    return b"".join(opener.open(i, stream[o : o + n]) for i, (o, n) in enumerate(spans))


def test_leftovers_are_cleared(tmp_path: Path) -> None:
    (tmp_path / "tmpabc.upload").write_bytes(b"RIFF")
    (tmp_path / "tmpdef.read").write_bytes(b"OggS")
    assert clear_leftovers(tmp_path) == 2
    assert list(tmp_path.iterdir()) == []
    assert clear_leftovers(tmp_path / "missing") == 0

"""Envelope-encryption primitives: round trips, every tampering case, key handling."""

from __future__ import annotations

import base64
import hashlib
import os
import random
from collections.abc import Callable

import pytest

from storage.crypto import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    StreamDecryptor,
    StreamEncryptor,
    TornSeal,
    ciphertext_size,
    decrypt_chunks,
    encrypt_chunks,
    format_master_key,
    generate_key,
    parse_master_key,
    seal_torn_stream,
    unwrap_key,
    wrap_key,
)
from storage.errors import ConfigError, IntegrityError

KEY = bytes(range(32))
AAD = b"recording:rec_0001"
CS = 1024  # small chunks keep the exhaustive loops fast
HEADER = 16
TAG = 16

# Tampering uses a tiny stream: 3 full chunks of 64 bytes and a final chunk of 10.
SMALL_CS = 64
SMALL_PT = random.Random(7).randbytes(3 * SMALL_CS + 10)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def encrypt(
    plaintext: bytes, *, piece: int = 1 << 20, chunk_size: int = CS, aad: bytes = AAD
) -> bytes:
    return b"".join(encrypt_chunks(KEY, pieces(plaintext, piece), aad=aad, chunk_size=chunk_size))


def decrypt(
    ciphertext: bytes, *, piece: int = 1 << 20, key: bytes = KEY, aad: bytes = AAD
) -> bytes:
    return b"".join(decrypt_chunks(key, pieces(ciphertext, piece), aad=aad))


def drain(decryptor: StreamDecryptor, parts: list[bytes], released: bytearray) -> None:
    for part in parts:
        released += decryptor.update(part)
    released += decryptor.finalize()


def decrypt_until_error(
    ciphertext: bytes, *, piece: int = 1, aad: bytes = AAD
) -> tuple[bytes, str]:
    """Feed the stream; return the plaintext released before the IntegrityError and its text."""
    released = bytearray()
    decryptor = StreamDecryptor(KEY, aad=aad)
    with pytest.raises(IntegrityError) as failure:
        drain(decryptor, pieces(ciphertext, piece), released)
    return bytes(released), str(failure.value)


def frames(ciphertext: bytes, chunk_size: int = SMALL_CS) -> tuple[bytes, list[bytes]]:
    """Split a stream into its header and its chunks."""
    body = ciphertext[HEADER:]
    return ciphertext[:HEADER], pieces(body, chunk_size + TAG)


@pytest.fixture(scope="module")
def small_stream() -> bytes:
    return encrypt(SMALL_PT, chunk_size=SMALL_CS)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 17])
@pytest.mark.parametrize("piece", [1, 7, CS + 3, 1 << 20])
def test_round_trip_sizes_and_pieces(size: int, piece: int) -> None:
    plaintext = os.urandom(size)
    ciphertext = encrypt(plaintext, piece=piece)
    assert len(ciphertext) == ciphertext_size(size, CS)
    assert decrypt(ciphertext, piece=piece) == plaintext
    assert decrypt(ciphertext, piece=1) == plaintext


def test_round_trip_random_sizes_and_splits() -> None:
    rng = random.Random(2026)
    for _ in range(40):
        plaintext = rng.randbytes(rng.randrange(10 * CS))
        chunk_size = rng.choice([1, 16, 100, CS])
        cuts = sorted(rng.randrange(len(plaintext) + 1) for _ in range(rng.randrange(8)))
        parts = [plaintext[a:b] for a, b in zip([0, *cuts], [*cuts, len(plaintext)], strict=True)]
        ciphertext = b"".join(encrypt_chunks(KEY, parts, aad=AAD, chunk_size=chunk_size))
        assert len(ciphertext) == ciphertext_size(len(plaintext), chunk_size)
        assert decrypt(ciphertext, piece=rng.randrange(1, 3 * chunk_size + 40)) == plaintext


def test_round_trip_8_mib_with_default_chunk_size() -> None:
    plaintext = os.urandom(8 * 1024 * 1024)
    encryptor = StreamEncryptor(KEY, aad=AAD)
    out = [encryptor.update(part) for part in pieces(plaintext, 100_003)]
    ciphertext = b"".join([*out, encryptor.finalize()])
    assert len(ciphertext) == ciphertext_size(len(plaintext)) == encryptor.ciphertext_size
    assert encryptor.plaintext_size == len(plaintext)
    assert encryptor.ciphertext_sha256 == hashlib.sha256(ciphertext).hexdigest()
    assert decrypt(ciphertext, piece=3 * 1024 * 1024 + 1) == plaintext


def test_accepts_bytearray_and_memoryview_pieces() -> None:
    plaintext = os.urandom(3 * CS + 5)
    encryptor = StreamEncryptor(KEY, aad=AAD, chunk_size=CS)
    ciphertext = encryptor.update(bytearray(plaintext[:100])) + encryptor.update(
        memoryview(plaintext)[100:]
    )
    ciphertext += encryptor.finalize()
    decryptor = StreamDecryptor(KEY, aad=AAD)
    assert decryptor.update(memoryview(ciphertext)) + decryptor.finalize() == plaintext


def test_empty_stream_is_a_header_and_an_empty_final_chunk() -> None:
    encryptor = StreamEncryptor(KEY, aad=AAD, chunk_size=CS)
    ciphertext = encryptor.finalize()
    assert len(ciphertext) == HEADER + TAG == ciphertext_size(0, CS)
    assert decrypt(ciphertext) == b""


def test_encryptor_releases_every_whole_chunk_at_once() -> None:
    # Memory stays bounded: a big piece comes straight back, less than one chunk held over.
    encryptor = StreamEncryptor(KEY, aad=AAD, chunk_size=CS)
    out = encryptor.update(os.urandom(10 * CS + 5))
    assert len(out) == HEADER + 10 * (CS + TAG)
    assert len(encryptor.finalize()) == 5 + TAG


def test_decryptor_releases_every_whole_chunk_before_the_end() -> None:
    plaintext = os.urandom(10 * CS + 5)
    ciphertext = encrypt(plaintext)
    decryptor = StreamDecryptor(KEY, aad=AAD)
    assert decryptor.update(ciphertext[:-1]) == plaintext[: 10 * CS]
    assert decryptor.update(ciphertext[-1:]) == b""
    assert decryptor.finalize() == plaintext[10 * CS :]


def test_same_plaintext_encrypts_differently_each_time() -> None:
    plaintext = b"same audio" * 300
    assert encrypt(plaintext) != encrypt(plaintext)


def test_sizes_and_sha256_track_the_output() -> None:
    plaintext = os.urandom(5 * CS + 3)
    encryptor = StreamEncryptor(KEY, aad=AAD, chunk_size=CS)
    out = b""
    for part in pieces(plaintext, 333):
        out += encryptor.update(part)
        assert encryptor.ciphertext_size == len(out)
        assert encryptor.ciphertext_sha256 == hashlib.sha256(out).hexdigest()
    out += encryptor.finalize()
    assert encryptor.plaintext_size == len(plaintext)
    assert encryptor.ciphertext_size == len(out) == ciphertext_size(len(plaintext), CS)
    assert encryptor.ciphertext_sha256 == hashlib.sha256(out).hexdigest()


@pytest.mark.parametrize("chunk_size", [1, 2, 64, 1000, DEFAULT_CHUNK_SIZE])
def test_ciphertext_size_is_exact(chunk_size: int) -> None:
    for size in [0, 1, chunk_size - 1, chunk_size, chunk_size + 1, 3 * chunk_size, 5000]:
        assert len(encrypt(os.urandom(size), chunk_size=chunk_size)) == ciphertext_size(
            size, chunk_size
        )
    assert ciphertext_size(10) == HEADER + 10 + TAG


def test_misuse_raises_value_error() -> None:
    encryptor = StreamEncryptor(KEY, aad=AAD)
    encryptor.finalize()
    with pytest.raises(ValueError, match="after finalize"):
        encryptor.update(b"late")
    with pytest.raises(ValueError, match="twice"):
        encryptor.finalize()
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        StreamEncryptor(KEY[:16], aad=AAD)
    with pytest.raises(ValueError, match="chunk_size"):
        StreamEncryptor(KEY, aad=AAD, chunk_size=0)
    with pytest.raises(ValueError, match="negative"):
        ciphertext_size(-1)


# --- tampering ---------------------------------------------------------------------------


def test_flipped_bit_in_header(small_stream: bytes) -> None:
    for offset in range(HEADER):
        for bit in (0x01, 0x80):
            tampered = bytearray(small_stream)
            tampered[offset] ^= bit
            released, message = decrypt_until_error(bytes(tampered))
            assert released == b""
            # Magic, version or an absurd chunk size fail at once; any other change fails
            # chunk 0, whose associated data holds the header.
            assert message == "bad header" or message.endswith("chunk 0 failed authentication")


@pytest.mark.parametrize(
    "header",
    [
        b"CRED" + bytes([1]) + (64).to_bytes(4, "big"),
        b"CREC" + bytes([2]) + (64).to_bytes(4, "big"),
        b"CREC" + bytes([1]) + (0).to_bytes(4, "big"),
        b"CREC" + bytes([1]) + (16 * 1024 * 1024 + 1).to_bytes(4, "big"),
    ],
    ids=["magic", "version", "chunk-size-0", "chunk-size-too-big"],
)
def test_bad_header_fields(small_stream: bytes, header: bytes) -> None:
    assert decrypt_until_error(header + small_stream[9:]) == (b"", "bad header")


def test_flipped_bit_anywhere_in_a_chunk_body_or_tag(small_stream: bytes) -> None:
    for offset in range(HEADER, len(small_stream)):
        index = (offset - HEADER) // (SMALL_CS + TAG)
        for bit in (0x01, 0x80):
            tampered = bytearray(small_stream)
            tampered[offset] ^= bit
            released, message = decrypt_until_error(bytes(tampered))
            # Nothing from the bad chunk or after it; the chunks before it were authentic.
            assert released == SMALL_PT[: index * SMALL_CS]
            assert message.endswith(f"chunk {index} failed authentication")
            # Fed in one piece, a bad non-final chunk lets nothing at all out.
            if index < 3:
                assert decrypt_until_error(bytes(tampered), piece=1 << 20)[0] == b""


def test_flipped_byte_in_chunk_0_yields_no_plaintext(small_stream: bytes) -> None:
    tampered = bytearray(small_stream)
    tampered[HEADER + 5] ^= 0xFF
    for piece in (1, 7, SMALL_CS + TAG, 1 << 20):
        assert decrypt_until_error(bytes(tampered), piece=piece) == (
            b"",
            "chunk 0 failed authentication",
        )


def test_truncated_at_every_offset(small_stream: bytes) -> None:
    for length in range(len(small_stream)):
        released, message = decrypt_until_error(small_stream[:length])
        assert SMALL_PT.startswith(released)
        assert len(released) < len(SMALL_PT)
        assert "truncated" in message or "final chunk" in message


def test_truncated_exactly_at_a_chunk_boundary() -> None:
    plaintext = os.urandom(3 * SMALL_CS)  # ends with an empty final chunk
    ciphertext = encrypt(plaintext, chunk_size=SMALL_CS)
    for chunks in range(4):
        released, message = decrypt_until_error(ciphertext[: HEADER + chunks * (SMALL_CS + TAG)])
        assert released == plaintext[: chunks * SMALL_CS]
        assert message == f"stream truncated: final chunk {chunks} missing"
    assert decrypt(ciphertext) == plaintext


def test_truncated_in_the_header() -> None:
    assert decrypt_until_error(b"") == (b"", "stream truncated in the header")


Reshape = Callable[[list[bytes]], list[bytes]]


@pytest.mark.parametrize(
    ("reshape", "authentic", "message"),
    [
        pytest.param(lambda c: [c[0], c[2], c[3]], 1, "chunk 1 failed", id="dropped-chunk"),
        pytest.param(lambda c: [c[1], c[0], c[2], c[3]], 0, "chunk 0 failed", id="swapped"),
        pytest.param(lambda c: [c[0], c[0], *c[1:]], 1, "chunk 1 failed", id="duplicated"),
        pytest.param(lambda c: [c[0], c[1], c[3], c[2]], 2, "chunk 2 failed", id="final-moved"),
        pytest.param(lambda c: c[:3], 3, "final chunk 3 missing", id="final-dropped"),
    ],
)
def test_rearranged_chunks(
    small_stream: bytes, reshape: Reshape, authentic: int, message: str
) -> None:
    header, chunks = frames(small_stream)
    assert len(chunks) == 4
    tampered = header + b"".join(reshape(chunks))
    released, error = decrypt_until_error(tampered)
    assert released == SMALL_PT[: authentic * SMALL_CS]
    assert message in error


@pytest.mark.parametrize(
    "garbage",
    [b"\x00", os.urandom(15), os.urandom(16), os.urandom(SMALL_CS + TAG), os.urandom(500)],
    ids=["1-byte", "15-bytes", "16-bytes", "one-chunk", "500-bytes"],
)
def test_appended_garbage(small_stream: bytes, garbage: bytes) -> None:
    released, message = decrypt_until_error(small_stream + garbage)
    assert released == SMALL_PT[: 3 * SMALL_CS]
    assert "chunk 3 failed authentication" in message


def test_a_second_stream_appended(small_stream: bytes) -> None:
    released, _ = decrypt_until_error(small_stream + small_stream)
    assert released == SMALL_PT[: 3 * SMALL_CS]


def test_wrong_key(small_stream: bytes) -> None:
    decryptor = StreamDecryptor(generate_key(), aad=AAD)
    with pytest.raises(IntegrityError, match="chunk 0 failed authentication"):
        decryptor.update(small_stream)
    with pytest.raises(IntegrityError):
        decrypt(encrypt(b"short"), key=generate_key())


def test_wrong_aad_rejects_a_stream_moved_to_another_recording(small_stream: bytes) -> None:
    assert decrypt_until_error(small_stream, aad=b"recording:rec_0002") == (
        b"",
        "chunk 0 failed authentication",
    )
    with pytest.raises(IntegrityError, match="final chunk 0 failed authentication"):
        decrypt(encrypt(b"short"), aad=b"recording:rec_0002")


def test_decryptor_stays_failed(small_stream: bytes) -> None:
    decryptor = StreamDecryptor(KEY, aad=AAD)
    with pytest.raises(IntegrityError):
        decryptor.update(b"XXXX" + small_stream[4:])
    with pytest.raises(ValueError, match="failed"):
        decryptor.update(small_stream)
    with pytest.raises(ValueError, match="failed"):
        decryptor.finalize()


def test_decrypt_chunks_raises_after_yielding_only_authentic_plaintext(small_stream: bytes) -> None:
    tampered = bytearray(small_stream)
    tampered[HEADER + 2 * (SMALL_CS + TAG)] ^= 1
    plaintext = decrypt_chunks(KEY, pieces(bytes(tampered), SMALL_CS + TAG), aad=AAD)
    assert next(plaintext) + next(plaintext) == SMALL_PT[: 2 * SMALL_CS]
    with pytest.raises(IntegrityError, match="chunk 2 failed authentication"):
        next(plaintext)


# --- key wrapping ------------------------------------------------------------------------

KEK = generate_key()
CONTEXT = b"client:acme"


def test_wrap_round_trip_and_fresh_nonces() -> None:
    key = generate_key()
    wrapped = wrap_key(KEK, key, context=CONTEXT)
    assert len(wrapped) == 1 + 12 + KEY_BYTES + TAG
    assert unwrap_key(KEK, wrapped, context=CONTEXT) == key
    assert wrap_key(KEK, key, context=CONTEXT) != wrapped


def test_unwrap_with_wrong_kek_or_context() -> None:
    wrapped = wrap_key(KEK, generate_key(), context=CONTEXT)
    with pytest.raises(IntegrityError, match="failed authentication"):
        unwrap_key(generate_key(), wrapped, context=CONTEXT)
    for other in (b"client:acme2", b"client:acm", b"recording:acme", b""):
        with pytest.raises(IntegrityError, match="failed authentication"):
            unwrap_key(KEK, wrapped, context=other)


def test_unwrap_flipped_byte_anywhere() -> None:
    wrapped = wrap_key(KEK, generate_key(), context=CONTEXT)
    for offset in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[offset] ^= 0x01
        with pytest.raises(IntegrityError):
            unwrap_key(KEK, bytes(tampered), context=CONTEXT)


def test_unwrap_truncated_or_extended() -> None:
    wrapped = wrap_key(KEK, generate_key(), context=CONTEXT)
    for length in range(len(wrapped)):
        with pytest.raises(IntegrityError, match="wrong length"):
            unwrap_key(KEK, wrapped[:length], context=CONTEXT)
    with pytest.raises(IntegrityError, match="wrong length"):
        unwrap_key(KEK, wrapped + b"\x00", context=CONTEXT)


def test_unwrap_bad_version() -> None:
    wrapped = wrap_key(KEK, generate_key(), context=CONTEXT)
    with pytest.raises(IntegrityError, match="unknown version 2"):
        unwrap_key(KEK, b"\x02" + wrapped[1:], context=CONTEXT)


def test_wrap_rejects_keys_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="kek must be 32 bytes"):
        wrap_key(KEK[:31], generate_key(), context=CONTEXT)
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        wrap_key(KEK, b"k" * 16, context=CONTEXT)


def test_generate_key() -> None:
    assert len(generate_key()) == KEY_BYTES == 32
    assert generate_key() != generate_key()
    assert DEFAULT_CHUNK_SIZE == 64 * 1024


# --- master key --------------------------------------------------------------------------

# 0xfb 0xff encodes to "+/" in standard base64 and "-_" in urlsafe, so both alphabets show.
MASTER = bytes([0xFB, 0xFF, 0xBF] * 10 + [1, 2])


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(MASTER).decode(),
        base64.b64encode(MASTER).decode().rstrip("="),
        base64.urlsafe_b64encode(MASTER).decode(),
        base64.urlsafe_b64encode(MASTER).decode().rstrip("="),
        MASTER.hex(),
        MASTER.hex().upper(),
        f"  {MASTER.hex()}\n",
        base64.b64encode(MASTER).decode() + "\n",
    ],
    ids=["b64", "b64-unpadded", "urlsafe", "urlsafe-unpadded", "hex", "HEX", "hex-ws", "b64-nl"],
)
def test_parse_master_key_accepts(text: str) -> None:
    assert parse_master_key(text) == MASTER


def test_master_key_sample_uses_both_alphabets() -> None:
    assert "+/" in base64.b64encode(MASTER).decode()
    assert "-_" in format_master_key(MASTER)


def test_format_master_key_round_trips() -> None:
    key = generate_key()
    assert parse_master_key(format_master_key(key)) == key
    with pytest.raises(ValueError, match="32 bytes"):
        format_master_key(b"short")


SECRET_HEX = "9f3c" * 16


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(b"s3cr3t-master-key-31-bytes-long").decode(),
        base64.b64encode(b"s3cr3t-master-key-33-bytes-long!!").decode(),
        base64.b64encode(b"s3cr3t" * 20).decode(),
        SECRET_HEX[:-1],
        SECRET_HEX + "a",
        SECRET_HEX[:-1] + "g",
        "9f 3c" * 12 + "9f3c",
        "this is definitely not a master key!",
        "s3cr3t\u00e9" * 7,
    ],
    ids=[
        "31-bytes",
        "33-bytes",
        "long",
        "63-hex",
        "65-hex",
        "bad-hex",
        "spaced-hex",
        "garbage",
        "nonascii",
    ],
)
def test_parse_master_key_rejects_without_echoing(text: str) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_master_key(text)
    message = str(failure.value)
    assert "master key" in message
    assert text.strip() not in message
    assert text[:8] not in message
    # A chained decoding error would show up in the traceback; the edge logs only ours.
    assert failure.value.__context__ is None or failure.value.__suppress_context__


@pytest.mark.parametrize("text", ["", "   \n"])
def test_parse_master_key_rejects_empty(text: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_master_key(text)


# A stream whose writer died before sealing it: re-sealed at its last whole chunk.


def reseal(ciphertext: bytes, *, piece: int = 100) -> tuple[TornSeal, bytes]:
    out: list[bytes] = []
    sealed = seal_torn_stream(KEY, pieces(ciphertext, piece), aad=AAD, write=out.append)
    return sealed, b"".join(out)


def unsealed(plaintext: bytes) -> bytes:
    """What a writer leaves on disk before ``finalize``: header and whole chunks only."""
    encryptor = StreamEncryptor(KEY, aad=AAD, chunk_size=CS)
    return encryptor.update(plaintext)


@pytest.mark.parametrize("cut", [1, 17, CS + TAG - 1])
def test_a_torn_stream_is_sealed_at_its_last_whole_chunk(cut: int) -> None:
    plaintext = random.Random(3).randbytes(6 * CS)
    torn = unsealed(plaintext)[: HEADER + 5 * (CS + TAG) + cut]  # the 6th chunk cut short
    sealed, stream = reseal(torn)
    assert sealed == TornSeal(kept=5 * CS, dropped=cut, whole=False)
    assert decrypt(stream) == plaintext[: 5 * CS]
    assert len(stream) == ciphertext_size(5 * CS, CS)


def test_a_stream_cut_at_a_chunk_boundary_keeps_every_chunk() -> None:
    plaintext = random.Random(4).randbytes(3 * CS)
    sealed, stream = reseal(unsealed(plaintext))
    assert sealed == TornSeal(kept=3 * CS, dropped=0, whole=False)
    assert decrypt(stream) == plaintext


def test_a_stream_with_its_final_chunk_is_kept_whole() -> None:
    plaintext = random.Random(5).randbytes(2 * CS + 7)
    original = encrypt(plaintext)
    sealed, stream = reseal(original)
    assert sealed == TornSeal(kept=len(plaintext), dropped=0, whole=True)
    assert decrypt(stream) == plaintext
    assert stream[:HEADER] != original[:HEADER]  # a fresh nonce prefix: no nonce is used twice


@pytest.mark.parametrize("cut", [0, 1, HEADER - 1])
def test_a_stream_cut_inside_its_header_is_refused(cut: int) -> None:
    out: list[bytes] = []
    with pytest.raises(IntegrityError, match="header"):
        seal_torn_stream(KEY, [unsealed(b"x" * CS)[:cut]], aad=AAD, write=out.append)
    assert out == []


@pytest.mark.parametrize("chunk", [0, 2, 4])
def test_a_flipped_byte_in_a_whole_chunk_is_refused_not_salvaged(chunk: int) -> None:
    plaintext = random.Random(6).randbytes(5 * CS + 300)
    torn = bytearray(unsealed(plaintext) + b"torn tail")
    torn[HEADER + chunk * (CS + TAG) + 5] ^= 0x01
    with pytest.raises(IntegrityError, match=f"chunk {chunk} failed"):
        reseal(bytes(torn))


def test_a_torn_stream_under_another_recording_is_refused() -> None:
    torn = unsealed(b"y" * 2 * CS) + b"tail"
    with pytest.raises(IntegrityError):
        seal_torn_stream(KEY, [torn], aad=b"recording:rec_other", write=lambda data: None)

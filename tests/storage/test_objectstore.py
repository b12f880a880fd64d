"""ObjectStore contract, against a real SeaweedFS."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from storage.bucket_cleanup import VersionRef
from storage.embedded_s3 import EmbeddedS3
from storage.errors import ObjectNotFound, ObjectStoreError, StoreUnavailable
from storage.objectstore import MIB, ObjectStore
from storage.s3_client import S3Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ROOT = Path(__file__).resolve().parents[2]


def http_get(url: str) -> tuple[int, bytes]:
    """A plain GET: status and body, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - http URL we built
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def write_random(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` pseudo-random bytes; return their SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as fh:
        for n in range(0, size, MIB):
            # Vary each block cheaply so that misplaced parts would change the hash.
            piece = (n.to_bytes(8, "big") + block[8:])[: size - n]
            fh.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def read_all(store: ObjectStore, key: str, version_id: str | None = None) -> bytes:
    return b"".join(store.get_stream(key, version_id=version_id))


def test_put_and_get_bytes(object_store: ObjectStore) -> None:
    result = object_store.put_bytes("acme/2026/11/28/r1.ogg", b"audio", tags={"client": "acme"})
    assert result.size == 5
    assert result.version_id
    assert result.etag == hashlib.md5(b"audio", usedforsecurity=False).hexdigest()

    info = object_store.head("acme/2026/11/28/r1.ogg")
    assert (info.size, info.etag, info.version_id) == (5, result.etag, result.version_id)
    assert info.last_modified.tzinfo is not None
    assert read_all(object_store, "acme/2026/11/28/r1.ogg") == b"audio"


def test_get_stream_yields_chunks(object_store: ObjectStore) -> None:
    object_store.put_bytes("chunks", b"x" * 2500, tags={})
    assert [len(c) for c in object_store.get_stream("chunks", chunk_size=1000)] == [1000, 1000, 500]


def test_multipart_put_file_round_trips(object_store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "big.wav"
    digest = write_random(path, 40 * MIB + 123)
    tags = {"client": "acme", "purpose:research": "2027-05-01"}

    result = object_store.put_file("big.wav", path, tags=tags, part_size=8 * MIB, concurrency=3)

    assert result.size == 40 * MIB + 123
    assert result.etag.endswith("-6")  # an S3 multipart ETag names its part count
    assert object_store.head("big.wav").size == result.size
    assert object_store.get_tags("big.wav") == tags
    streamed = hashlib.sha256()
    for chunk in object_store.get_stream("big.wav", version_id=result.version_id):
        streamed.update(chunk)
    assert streamed.hexdigest() == digest


def test_small_put_file_is_one_request(object_store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "small.wav"
    path.write_bytes(b"RIFF....WAVE")
    result = object_store.put_file("small.wav", path, tags={"client": "acme"})
    assert "-" not in result.etag
    assert read_all(object_store, "small.wav") == b"RIFF....WAVE"
    assert object_store.get_tags("small.wav") == {"client": "acme"}


def test_failed_multipart_upload_is_aborted(
    object_store: ObjectStore, s3_admin: S3Client, tmp_path: Path
) -> None:
    path = tmp_path / "shrinking.wav"
    write_random(path, 64 * MIB)
    bucket = object_store.bucket

    def shrink_once_started() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads"):
                os.truncate(path, 6 * MIB)  # later parts now read short
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=shrink_once_started)
    watcher.start()
    with pytest.raises(ObjectStoreError, match="file shrank during upload"):
        object_store.put_file("shrinking.wav", path, tags={}, part_size=5 * MIB, concurrency=1)
    watcher.join()
    assert not s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert object_store.list_versions("shrinking.wav") == []


def test_tags_are_read_and_replaced(object_store: ObjectStore) -> None:
    object_store.put_bytes("t", b"x", tags={"client": "acme", "purpose:research": "2027-01-01"})
    object_store.put_tags("t", {"client": "acme", "legal-hold": "true"})
    assert object_store.get_tags("t") == {"client": "acme", "legal-hold": "true"}
    object_store.put_tags("t", {})
    assert object_store.get_tags("t") == {}


def test_versions_are_listed_for_the_exact_key(object_store: ObjectStore) -> None:
    first = object_store.put_bytes("k", b"one", tags={})
    second = object_store.put_bytes("k", b"two", tags={})
    object_store.put_bytes("k/longer", b"other", tags={})
    object_store.put_bytes("k2", b"other", tags={})

    refs = object_store.list_versions("k")

    assert {r.version_id for r in refs} == {first.version_id, second.version_id}
    assert all(r.key == "k" and not r.is_delete_marker for r in refs)
    assert read_all(object_store, "k") == b"two"
    assert read_all(object_store, "k", first.version_id) == b"one"


def test_versions_of_lists_ranges_and_skips_the_neighbours(object_store: ObjectStore) -> None:
    # Two folders; in the first, keys of the batch sit among keys that are not, and
    # there are more versions than one listing page of the batch's size holds.
    batch = [f"a/2026/01/01/rec_{i:03d}.ogg" for i in range(0, 40, 3)]
    for i in range(40):
        object_store.put_bytes(f"a/2026/01/01/rec_{i:03d}.ogg", b"v1", tags={})
    object_store.put_bytes("a/2026/01/01/rec_009.ogg", b"v2", tags={})
    marker = object_store.delete("a/2026/01/01/rec_012.ogg")
    object_store.put_bytes("b/2026/01/02/rec_000.ogg", b"v1", tags={})
    object_store.put_bytes("b/2026/01/02/rec_000.ogg.keep", b"neighbour", tags={})
    batch += ["b/2026/01/02/rec_000.ogg", "b/2026/01/02/rec_missing.ogg"]

    found = object_store.versions_of(batch)

    assert set(found) == set(batch)
    assert {key: len(refs) for key, refs in found.items() if len(refs) != 1} == {
        "a/2026/01/01/rec_009.ogg": 2,
        "a/2026/01/01/rec_012.ogg": 2,
        "b/2026/01/02/rec_missing.ogg": 0,
    }
    assert [r.version_id for r in found["a/2026/01/01/rec_012.ogg"] if r.is_delete_marker] == [
        marker
    ]
    for key, refs in found.items():
        assert refs == object_store.list_versions(key)


def test_purge_deletes_known_and_unknown_versions(object_store: ObjectStore) -> None:
    stored = {
        f"c/2026/02/0{i}/rec.ogg": object_store.put_bytes(f"c/2026/02/0{i}/rec.ogg", b"a", tags={})
        for i in range(1, 4)
    }
    # Versions the caller does not know of: an older upload and a delete marker.
    object_store.put_bytes("c/2026/02/01/rec.ogg", b"b", tags={})
    object_store.delete("c/2026/02/02/rec.ogg")
    object_store.put_bytes("c/2026/02/01/rec.ogg.keep", b"neighbour", tags={})

    reports = object_store.purge({key: [put.version_id or ""] for key, put in stored.items()})

    assert {key: (r.versions_removed, r.gone) for key, r in reports.items()} == {
        "c/2026/02/01/rec.ogg": (2, True),
        "c/2026/02/02/rec.ogg": (2, True),
        "c/2026/02/03/rec.ogg": (1, True),
    }
    assert all(object_store.list_versions(key) == [] for key in stored)
    assert read_all(object_store, "c/2026/02/01/rec.ogg.keep") == b"neighbour"


def test_delete_all_versions_leaves_nothing(object_store: ObjectStore) -> None:
    old = object_store.put_bytes("r.ogg", b"v1", tags={"client": "acme"})
    object_store.put_bytes("r.ogg", b"v2", tags={"client": "acme"})
    marker = object_store.delete("r.ogg")
    object_store.put_bytes("r.ogg", b"v3", tags={"client": "acme"})
    object_store.put_bytes("r.ogg.keep", b"neighbour", tags={})
    refs = object_store.list_versions("r.ogg")
    assert len(refs) == 4
    assert [r.version_id for r in refs if r.is_delete_marker] == [marker]

    report = object_store.delete_all_versions("r.ogg")

    assert (report.versions_removed, report.gone) == (4, True)
    assert object_store.list_versions("r.ogg") == []
    with pytest.raises(ObjectNotFound):
        object_store.head("r.ogg")
    with pytest.raises(ObjectNotFound):
        object_store.get_stream("r.ogg")
    with pytest.raises(ObjectNotFound):
        object_store.get_stream("r.ogg", version_id=old.version_id)
    assert read_all(object_store, "r.ogg.keep") == b"neighbour"


def test_unfinished_uploads_are_listed_page_by_page(object_store: ObjectStore) -> None:
    started = {
        object_store.create_upload(key, tags={})
        for key in ["a/1.ogg", "a/2.ogg", "a/2.ogg", "b/3.ogg", "b/4.ogg"]
    }
    listed = list(object_store.list_uploads(page_size=2))  # three pages
    assert {u.upload_id for u in listed} == started and len(listed) == len(started)
    assert {u.key for u in object_store.list_uploads("b/")} == {"b/3.ogg", "b/4.ogg"}
    assert all(u.initiated.tzinfo is not None for u in listed)
    for upload in listed:
        object_store.abort_upload(upload.key, upload.upload_id, quiet=False)
    object_store.abort_upload("a/1.ogg", listed[0].upload_id, quiet=False)  # gone: no error
    assert list(object_store.list_uploads()) == []


def test_every_version_and_delete_marker_is_listed(object_store: ObjectStore) -> None:
    first = object_store.put_bytes("k/x.ogg", b"1", tags={}).version_id
    second = object_store.put_bytes("k/x.ogg", b"2", tags={}).version_id
    marker = object_store.delete("k/y.ogg")
    listed = {(v.key, v.version_id): v for v in object_store.list_all_versions("k/")}
    assert set(listed) == {("k/x.ogg", first), ("k/x.ogg", second), ("k/y.ogg", marker)}
    assert listed["k/x.ogg", second].is_latest and not listed["k/x.ogg", first].is_latest
    assert listed["k/y.ogg", marker].is_delete_marker


def test_missing_key_raises_object_not_found(object_store: ObjectStore) -> None:
    for call in (
        lambda: object_store.head("nope"),
        lambda: object_store.get_stream("nope"),
        lambda: object_store.get_tags("nope"),
        lambda: object_store.put_tags("nope", {"a": "b"}),
    ):
        with pytest.raises(ObjectNotFound):
            call()


def test_batch_delete_of_more_than_a_thousand(object_store: ObjectStore) -> None:
    def put(n: int) -> VersionRef:
        key = f"many/{n:04d}"
        result = object_store.put_bytes(key, b"x", tags={})
        assert result.version_id
        return VersionRef(key, result.version_id, False)

    with ThreadPoolExecutor(8) as pool:
        refs = list(pool.map(put, range(1100)))
    assert sum(1 for _ in object_store.list_keys("many/")) == 1100  # pages of 1,000

    assert object_store.delete_versions(refs) == []
    assert list(object_store.list_keys("many/")) == []


def test_list_keys_by_prefix(object_store: ObjectStore) -> None:
    for key in ("acme/a", "acme/b", "globex/c"):
        object_store.put_bytes(key, b"x", tags={})
    assert sorted(object_store.list_keys("acme/")) == ["acme/a", "acme/b"]
    assert sorted(object_store.list_keys()) == ["acme/a", "acme/b", "globex/c"]


def test_presigned_get(object_store: ObjectStore) -> None:
    object_store.put_bytes("shared.ogg", b"audio bytes", tags={})
    url = object_store.presign_get("shared.ogg", expires_s=60)
    assert http_get(url) == (200, b"audio bytes")

    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    for tampered in (
        url.replace(signature, flipped),
        url.replace("shared.ogg", "other.ogg"),
        url.replace("X-Amz-Expires=60", "X-Amz-Expires=604800"),
    ):
        status, body = http_get(tampered)
        assert status == 403, body


def test_unreachable_endpoint_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: connections are refused.
    cfg = S3Config(f"http://127.0.0.1:{port}", "key", "secret", bucket="callrec-recordings")
    started = time.monotonic()
    with ObjectStore.from_config(cfg) as store, pytest.raises(StoreUnavailable):
        store.ping()
    assert time.monotonic() - started < 5


def test_put_file_memory_stays_bounded(
    s3_server: EmbeddedS3, s3_admin: S3Client, tmp_path: Path
) -> None:
    """Run the upload in a fresh interpreter and compare its peak RSS with the file."""
    path = tmp_path / "large.wav"
    write_random(path, 96 * MIB)
    cfg = s3_server.config(f"memory-check-{os.getpid()}")
    code = textwrap.dedent(
        f"""
        import json, resource
        from pathlib import Path
        from storage.objectstore import ObjectStore
        from storage.s3_client import S3Config
        store = ObjectStore.from_config(S3Config(*{
            json.dumps([cfg.endpoint_url, cfg.access_key_id, cfg.secret_access_key, cfg.bucket])
        }))
        store.ensure_bucket()
        store.put_bytes("warm-up", b"x", tags={{}})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        store.put_file("large.wav", Path({str(path)!r}), tags={{}},
                       part_size={8 * MIB}, concurrency=2)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        store.delete_all_versions("large.wav")
        store.delete_all_versions("warm-up")
        print(json.dumps({{"grew_kib": after - before}}))
        """
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
    finally:
        s3_admin.delete_bucket(Bucket=cfg.bucket)
    grew_mib = json.loads(out.stdout)["grew_kib"] / 1024
    # Two 8 MiB parts in flight plus buffers; reading the file whole would add 96 MiB.
    assert grew_mib < 48, f"peak RSS grew by {grew_mib:.0f} MiB"

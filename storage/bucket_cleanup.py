"""What the bucket holds beyond current objects, listed and removed: every version and
delete marker of a key or of the whole bucket, deletions in parallel batches, purges read
back, and unfinished multipart uploads. Purges and reconciliation work through these.

The functions take the boto3 client and the bucket; ``ObjectStore`` delegates to them.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storage.errors import ObjectStoreError, StoreAccessDenied
from storage.s3_client import ACCESS_CODES, translate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

_DELETE_BATCH = 1000  # DeleteObjects limit
_DELETE_REQUESTS = 8  # DeleteObjects requests in flight at once
LIST_PAGE = 1000  # ListObjectVersions limit
_PURGE_ROUNDS = 3


@dataclass(frozen=True)
class VersionRef:
    """One version, or one delete marker, of a key."""

    key: str
    version_id: str
    is_delete_marker: bool


@dataclass(frozen=True)
class ObjectVersion:
    """One version, or one delete marker, as a listing of the bucket shows it."""

    key: str
    version_id: str
    is_delete_marker: bool
    is_latest: bool
    last_modified: datetime


@dataclass(frozen=True)
class UnfinishedUpload:
    """A multipart upload started and never completed nor aborted."""

    key: str
    upload_id: str
    initiated: datetime


@dataclass(frozen=True)
class DeleteReport:
    """Outcome of deleting every version of a key.

    ``versions_removed`` counts delete markers too, and a known version that an
    interrupted earlier purge had already removed; ``gone`` is the read-back check.
    """

    versions_removed: int
    gone: bool


# One DeleteObjects request: the refs it refused and the error codes.
DeleteBatch = Callable[[Sequence[VersionRef]], tuple[list[VersionRef], set[str]]]


def versions_of(
    client: S3Client, bucket: str, keys: Collection[str]
) -> dict[str, list[VersionRef]]:
    """Every version and delete marker of each of ``keys``.

    Keys are grouped by folder and each folder is listed once, from the first key
    to the last: recordings purged together were mostly stored together, so a
    batch costs about a page per thousand versions instead of a request per key.
    """
    found: dict[str, list[VersionRef]] = {key: [] for key in keys}
    folders: dict[str, list[str]] = defaultdict(list)
    for key in found:
        folders[key[: key.rfind("/") + 1]].append(key)
    for folder, group in folders.items():
        _list_range(client, bucket, folder, sorted(group), found)
    return found


def _list_range(
    client: S3Client,
    bucket: str,
    folder: str,
    keys: list[str],
    found: dict[str, list[VersionRef]],
) -> None:
    first, last = keys[0], keys[-1]
    # KeyMarker lists what sorts after it: a proper prefix of the first key does.
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Prefix": folder,
        "KeyMarker": first[:-1],
        "MaxKeys": min(LIST_PAGE, 2 * len(keys) + 2),
    }
    with translate("list_object_versions", first):
        while True:
            page = client.list_object_versions(**params)
            beyond = False
            for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
                for item in page.get(kind, []):  # type: ignore[attr-defined]
                    key = item["Key"]
                    beyond |= key > last
                    if key in found:
                        found[key].append(VersionRef(key, item["VersionId"], marker))
            if beyond or not page.get("IsTruncated"):
                return
            params["KeyMarker"] = page["NextKeyMarker"]
            params["VersionIdMarker"] = page.get("NextVersionIdMarker", "")
            # Keys not in the batch lie between: larger pages, fewer requests.
            params["MaxKeys"] = min(LIST_PAGE, 2 * params["MaxKeys"])


def list_all_versions(client: S3Client, bucket: str, prefix: str) -> Iterator[ObjectVersion]:
    """Every version and delete marker under ``prefix``, page by page."""
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    with translate("list_object_versions", prefix):
        for page in pages:
            for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
                for item in page.get(kind, []):  # type: ignore[attr-defined]
                    yield ObjectVersion(
                        item["Key"],
                        item["VersionId"],
                        marker,
                        bool(item.get("IsLatest")),
                        item["LastModified"],
                    )


def delete_versions(refs: Sequence[VersionRef], delete_batch: DeleteBatch) -> list[VersionRef]:
    """Delete these versions; return the ones that could not be deleted.

    The refs are spread over up to ``_DELETE_REQUESTS`` DeleteObjects requests sent
    at once: SeaweedFS deletes several smaller batches in parallel about twice as
    fast as one large batch.
    """
    size = min(_DELETE_BATCH, -(-len(refs) // _DELETE_REQUESTS)) or 1
    batches = [refs[start : start + size] for start in range(0, len(refs), size)]
    if len(batches) > 1:
        with ThreadPoolExecutor(min(len(batches), _DELETE_REQUESTS)) as pool:
            answers = list(pool.map(delete_batch, batches))
    else:
        answers = [delete_batch(batch) for batch in batches]
    failed = [ref for batch_failed, _ in answers for ref in batch_failed]
    codes = {code for _, batch_codes in answers for code in batch_codes}
    if refs and len(failed) == len(refs) and codes <= ACCESS_CODES:
        raise StoreAccessDenied(f"delete_objects: every deletion refused ({sorted(codes)})")
    return failed


def delete_batch(
    client: S3Client, bucket: str, batch: Sequence[VersionRef]
) -> tuple[list[VersionRef], set[str]]:
    """One DeleteObjects request: the refs it refused and the error codes."""
    objects: list[ObjectIdentifierTypeDef] = [
        {"Key": r.key, "VersionId": r.version_id} for r in batch
    ]
    with translate("delete_objects", batch[0].key):
        resp = client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    codes: set[str] = set()
    refused: set[tuple[str, str | None]] = set()
    for err in resp.get("Errors", []):
        codes.add(err.get("Code", "?"))
        refused.add((err.get("Key", ""), err.get("VersionId")))
        log.warning("could not delete a version of %s: %s", err.get("Key"), err.get("Code"))
    # An error that names no version counts against every version of its key.
    failed = [r for r in batch if {(r.key, r.version_id), (r.key, None)} & refused]
    return failed, codes


def purge(
    known: Mapping[str, Collection[str]],
    *,
    delete: Callable[[Sequence[VersionRef]], list[VersionRef]],
    list_versions: Callable[[Collection[str]], dict[str, list[VersionRef]]],
) -> dict[str, DeleteReport]:
    """Delete every version and delete marker of each key, and read the keys back.

    ``known`` maps each key to the version ids the caller already knows (the
    catalog's): those go in the first DeleteObjects with no listing before it.
    Whatever a read-back still lists is deleted next, for a few rounds at most.
    ``delete`` and ``list_versions`` are the store's ``delete_versions`` and
    ``versions_of``.
    """
    removed: Counter[str] = Counter()
    refs = [VersionRef(key, v, False) for key, versions in known.items() for v in versions]
    left: dict[str, list[VersionRef]] = {}
    for _ in range(_PURGE_ROUNDS):
        if refs:
            failed = set(delete(refs))
            removed.update(r.key for r in refs if r not in failed)
        left = {key: refs for key, refs in list_versions(known).items() if refs}
        refs = [ref for key_refs in left.values() for ref in key_refs]
        if not refs:
            break
    return {key: DeleteReport(versions_removed=removed[key], gone=key not in left) for key in known}


def list_uploads(
    client: S3Client, bucket: str, prefix: str, *, page_size: int
) -> Iterator[UnfinishedUpload]:
    """Every unfinished multipart upload under ``prefix``, page by page."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxUploads": page_size}
    seen: set[str] = set()
    with translate("list_multipart_uploads", prefix):
        while True:
            page = client.list_multipart_uploads(**params)
            for item in page.get("Uploads", []):
                if item["UploadId"] not in seen:
                    seen.add(item["UploadId"])
                    yield UnfinishedUpload(item["Key"], item["UploadId"], item["Initiated"])
            markers = {
                "KeyMarker": page.get("NextKeyMarker"),
                "UploadIdMarker": page.get("NextUploadIdMarker"),
            }
            # AWS sorts by key and pages on both markers; SeaweedFS sorts by upload
            # id and answers only the second (its key marker filters, not pages).
            markers = {name: value for name, value in markers.items() if value}
            if not page.get("IsTruncated") or not markers:
                return
            if all(params.get(name) == value for name, value in markers.items()):
                raise ObjectStoreError("list_multipart_uploads: the listing does not advance")
            params = {
                **{k: v for k, v in params.items() if not k.endswith("Marker")},
                **markers,
            }

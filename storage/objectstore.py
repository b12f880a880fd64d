"""The object store: a thin adapter over boto3's S3 client, and the only module that uses it.

Every botocore error is translated in ``_translate`` into the storage exception tree,
so callers never see a boto type.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from storage.errors import ObjectNotFound, ObjectStoreError, StoreAccessDenied, StoreUnavailable
from storage.multipart import MAX_PARTS, MIN_PART, PartUploader

if TYPE_CHECKING:
    from botocore.config import _S3Dict
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_DELETE_BATCH = 1000  # DeleteObjects limit
_DELETE_REQUESTS = 8  # DeleteObjects requests in flight at once
_LIST_PAGE = 1000  # ListObjectVersions limit
_PURGE_ROUNDS = 3
_ACCESS_CODES = {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403"}
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NotFound", "404"}


@dataclass(frozen=True)
class S3Config:
    """Where and as whom to reach S3; ``endpoint_url`` None means AWS itself."""

    endpoint_url: str | None
    access_key_id: str
    secret_access_key: str
    bucket: str
    region: str = "us-east-1"
    # SigV4 hashes every request body over plain HTTP. Only a link nobody can alter
    # (the embedded S3's loopback) goes without: there it costs both ends a SHA-256 of
    # every byte for nothing. None leaves the choice to botocore.
    sign_payload: bool | None = None


@dataclass(frozen=True)
class PutResult:
    """What S3 answered to an upload."""

    version_id: str | None
    size: int
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of the current version of an object."""

    size: int
    etag: str
    version_id: str | None
    last_modified: datetime


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


@contextmanager
def _translate(action: str, key: str = "") -> Iterator[None]:
    """Turn botocore errors into storage errors; the one place that does."""
    what = f"{action} {key}".rstrip()
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "?"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{what}: {code} {err.get('Message', '')}".rstrip()
        if code in _MISSING_CODES or status == 404:
            raise ObjectNotFound(text) from exc
        if code in _ACCESS_CODES or status == 403:
            raise StoreAccessDenied(
                f"S3 refused {text} (wrong credentials or no permission)"
            ) from exc
        if status == 503:
            raise StoreUnavailable(f"S3 unavailable on {text}") from exc
        raise ObjectStoreError(text) from exc
    except (BotoConnectionError, HTTPClientError) as exc:  # refused, timed out, dropped
        raise StoreUnavailable(f"S3 unreachable on {what}: {exc}") from exc
    except BotoCoreError as exc:
        raise ObjectStoreError(f"{what}: {exc}") from exc


def _strip(etag: str) -> str:
    return etag.strip('"')


class _BodyStream:
    """Iterates an object's body in chunks and closes it when done or closed."""

    def __init__(self, body: Any, key: str, chunk_size: int) -> None:
        self._body = body
        self._key = key
        self._chunk_size = chunk_size

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        with _translate("get_object", self._key):
            chunk: bytes = self._body.read(self._chunk_size)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Release the connection; safe to call twice."""
        self._body.close()


def _s3_options(cfg: S3Config) -> _S3Dict:
    options: _S3Dict = {"addressing_style": "path"}
    if cfg.sign_payload is not None:
        options["payload_signing_enabled"] = cfg.sign_payload
    return options


class ObjectStore:
    """One bucket of an S3-compatible store, with the operations callrec needs."""

    def __init__(self, client: S3Client, bucket: str, *, region: str = "us-east-1") -> None:
        self._s3 = client
        self.bucket = bucket
        self._region = region
        self._errors: Counter[str] = Counter()
        self._errors_lock = threading.Lock()
        # Counted per request once botocore is done retrying, by S3 error code or by
        # exception (refused, timed out); a 404 is an answer, not an error.
        events = client.meta.events
        events.register("after-call.s3", self._count_answer)
        events.register("after-call-error.s3", self._count_failure)

    @property
    def errors(self) -> dict[str, int]:
        """S3 requests that failed since this store was made, by error code."""
        with self._errors_lock:
            return dict(self._errors)

    def _count_answer(self, http_response: Any = None, parsed: Any = None, **_: Any) -> None:
        status = getattr(http_response, "status_code", 200)
        if status >= 400 and status != 404:
            code = (parsed or {}).get("Error", {}).get("Code") or str(status)
            with self._errors_lock:
                self._errors[str(code)] += 1

    def _count_failure(self, exception: BaseException | None = None, **_: Any) -> None:
        with self._errors_lock:
            self._errors[type(exception).__name__] += 1

    @classmethod
    def from_config(
        cls,
        cfg: S3Config,
        *,
        max_pool_connections: int = 16,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> ObjectStore:
        """Build a client: path-style, bounded timeouts and retries so outages fail fast."""
        config = Config(
            region_name=cfg.region,
            signature_version="s3v4",
            s3=_s3_options(cfg),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=max_pool_connections,
            # Checksums only where S3 demands them: several S3-compatible stores reject
            # the default streaming trailers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of our own: the default one is shared global state.
        session = boto3.session.Session()
        client = session.client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            # Empty credentials fall through to the default chain (instance roles, env).
            aws_access_key_id=cfg.access_key_id or None,
            aws_secret_access_key=cfg.secret_access_key or None,
            config=config,
        )
        return cls(client, cfg.bucket, region=cfg.region)

    @property
    def client(self) -> S3Client:
        """The boto3 client underneath, for baselines in benchmarks and test set-up."""
        return self._s3

    def close(self) -> None:
        """Close the client's pooled connections."""
        self._s3.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing and switch versioning on."""
        try:
            with _translate("head_bucket"):
                self._s3.head_bucket(Bucket=self.bucket)
        except ObjectNotFound:
            self._create_bucket()
        status = self.versioning_status()
        if status != "Enabled":
            log.info("enabling versioning on bucket %s (was %s)", self.bucket, status)
            with _translate("put_bucket_versioning"):
                self._s3.put_bucket_versioning(
                    Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
                )

    def _create_bucket(self) -> None:
        with _translate("create_bucket"):
            try:
                if self._region == "us-east-1":  # the one region that refuses a constraint
                    self._s3.create_bucket(Bucket=self.bucket)
                else:
                    self._s3.create_bucket(
                        Bucket=self.bucket,
                        CreateBucketConfiguration={"LocationConstraint": self._region},  # type: ignore[typeddict-item]
                    )
                log.info("created bucket %s", self.bucket)
            except self._s3.exceptions.BucketAlreadyOwnedByYou:
                pass  # another replica won the race

    def versioning_status(self) -> str | None:
        """The bucket's versioning status: ``Enabled``, ``Suspended`` or None (never set)."""
        with _translate("get_bucket_versioning"):
            return self._s3.get_bucket_versioning(Bucket=self.bucket).get("Status")

    def ping(self) -> None:
        """A cheap signed request: raises unless the bucket is reachable and ours."""
        with _translate("head_bucket"):
            self._s3.head_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes, *, tags: Mapping[str, str]) -> PutResult:
        """Store ``data`` under ``key`` in one request, with ``tags``."""
        with _translate("put_object", key):
            resp = self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, **_tagging(tags))
        return PutResult(resp.get("VersionId"), len(data), _strip(resp["ETag"]))

    def put_file(
        self,
        key: str,
        path: Path,
        *,
        tags: Mapping[str, str],
        part_size: int = 16 * MIB,
        concurrency: int = 4,
    ) -> PutResult:
        """Upload a file; above ``part_size`` as a parallel multipart upload.

        At most ``concurrency`` parts are in memory at once, so memory stays bounded
        whatever the file size. A failed multipart upload is aborted.
        """
        if part_size < MIN_PART or concurrency < 1:
            raise ValueError(f"part_size must be >= {MIN_PART} and concurrency >= 1")
        size = path.stat().st_size
        if size <= part_size:
            return self.put_bytes(key, path.read_bytes(), tags=tags)
        uploader = PartUploader(
            self,
            key,
            path=path,
            tags=tags,
            part_size=max(part_size, -(-size // MAX_PARTS)),
            concurrency=concurrency,
        )
        uploader.extend(size)
        return uploader.complete(size)

    def create_upload(self, key: str, *, tags: Mapping[str, str]) -> str:
        """Start a multipart upload of ``key`` carrying ``tags``; return its upload id."""
        with _translate("create_multipart_upload", key):
            resp = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, **_tagging(tags))
        return resp["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray) -> str:
        """Send part ``number`` (from 1) of an upload; return its ETag.

        A ``bytearray`` is sent as it is; a ``bytes`` body is first copied whole into
        one string with the request headers.
        """
        with _translate("upload_part", key):
            resp = self._s3.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,  # type: ignore[arg-type]  # botocore takes bytearray; stubs omit it
            )
        return resp["ETag"]

    def complete_upload(
        self, key: str, upload_id: str, etags: Sequence[str], *, size: int
    ) -> PutResult:
        """Join the parts (ETags in part order) into the object; ``size`` is its length."""
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, 1)
        ]
        with _translate("complete_multipart_upload", key):
            resp = self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        return PutResult(resp.get("VersionId"), size, _strip(resp.get("ETag", "")))

    def abort_upload(self, key: str, upload_id: str, *, quiet: bool = True) -> None:
        """Abort an upload and drop its parts; a refusal is logged, or raised if not ``quiet``.

        An upload that is already gone counts as aborted.
        """
        try:
            with _translate("abort_multipart_upload", key):
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ObjectNotFound:
            pass
        except ObjectStoreError as exc:
            if not quiet:
                raise
            log.warning("could not abort multipart upload of %s: %s", key, exc)

    def list_uploads(
        self, prefix: str = "", *, page_size: int = _LIST_PAGE
    ) -> Iterator[UnfinishedUpload]:
        """Every unfinished multipart upload under ``prefix``, page by page."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxUploads": page_size}
        seen: set[str] = set()
        with _translate("list_multipart_uploads", prefix):
            while True:
                page = self._s3.list_multipart_uploads(**params)
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

    def abort_uploads(self, key: str) -> int:
        """Abort every unfinished upload of exactly ``key``; return how many there were.

        A crash, or an outage that also kept the abort from S3, leaves them behind.
        """
        with _translate("list_multipart_uploads", key):
            resp = self._s3.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        stale = [u["UploadId"] for u in resp.get("Uploads", []) if u.get("Key") == key]
        for upload_id in stale:
            self.abort_upload(key, upload_id)
        return len(stale)

    def get_stream(
        self, key: str, *, version_id: str | None = None, chunk_size: int = MIB
    ) -> Iterator[bytes]:
        """Stream an object's body; a missing key raises here, not on first read.

        Consume the iterator or call its ``close()`` to release the connection.
        """
        extra: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        with _translate("get_object", key):
            resp = self._s3.get_object(Bucket=self.bucket, Key=key, **extra)
        return _BodyStream(resp["Body"], key, chunk_size)

    def head(self, key: str) -> ObjectInfo:
        """Metadata of the current version; ObjectNotFound if none or a delete marker."""
        with _translate("head_object", key):
            resp = self._s3.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            resp["ContentLength"], _strip(resp["ETag"]), resp.get("VersionId"), resp["LastModified"]
        )

    def get_tags(self, key: str) -> dict[str, str]:
        """Tags of the current version."""
        with _translate("get_object_tagging", key):
            tag_set = self._s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        return {t["Key"]: t["Value"] for t in tag_set}

    def put_tags(self, key: str, tags: Mapping[str, str]) -> None:
        """Replace the whole tag set of the current version."""
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        with _translate("put_object_tagging", key):
            self._s3.put_object_tagging(
                Bucket=self.bucket,
                Key=key,
                Tagging={"TagSet": tag_set},  # type: ignore[typeddict-item]
            )

    def list_versions(self, key: str) -> list[VersionRef]:
        """Every version and delete marker of exactly ``key``."""
        return self.versions_of([key])[key]

    def versions_of(self, keys: Collection[str]) -> dict[str, list[VersionRef]]:
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
            self._list_range(folder, sorted(group), found)
        return found

    def _list_range(self, folder: str, keys: list[str], found: dict[str, list[VersionRef]]) -> None:
        first, last = keys[0], keys[-1]
        # KeyMarker lists what sorts after it: a proper prefix of the first key does.
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": folder,
            "KeyMarker": first[:-1],
            "MaxKeys": min(_LIST_PAGE, 2 * len(keys) + 2),
        }
        with _translate("list_object_versions", first):
            while True:
                page = self._s3.list_object_versions(**params)
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
                params["MaxKeys"] = min(_LIST_PAGE, 2 * params["MaxKeys"])

    def delete(self, key: str) -> str | None:
        """Hide the current version behind a delete marker; older versions stay.

        Not a purge (see ``delete_all_versions``); returns the marker's version id.
        """
        with _translate("delete_object", key):
            return self._s3.delete_object(Bucket=self.bucket, Key=key).get("VersionId")

    def delete_versions(self, refs: Sequence[VersionRef]) -> list[VersionRef]:
        """Delete these versions; return the ones that could not be deleted.

        The refs are spread over up to ``_DELETE_REQUESTS`` DeleteObjects requests sent
        at once: SeaweedFS deletes several smaller batches in parallel about twice as
        fast as one large batch.
        """
        size = min(_DELETE_BATCH, -(-len(refs) // _DELETE_REQUESTS)) or 1
        batches = [refs[start : start + size] for start in range(0, len(refs), size)]
        if len(batches) > 1:
            with ThreadPoolExecutor(min(len(batches), _DELETE_REQUESTS)) as pool:
                answers = list(pool.map(self._delete_batch, batches))
        else:
            answers = [self._delete_batch(batch) for batch in batches]
        failed = [ref for batch_failed, _ in answers for ref in batch_failed]
        codes = {code for _, batch_codes in answers for code in batch_codes}
        if refs and len(failed) == len(refs) and codes <= _ACCESS_CODES:
            raise StoreAccessDenied(f"delete_objects: every deletion refused ({sorted(codes)})")
        return failed

    def _delete_batch(self, batch: Sequence[VersionRef]) -> tuple[list[VersionRef], set[str]]:
        """One DeleteObjects request: the refs it refused and the error codes."""
        objects: list[ObjectIdentifierTypeDef] = [
            {"Key": r.key, "VersionId": r.version_id} for r in batch
        ]
        with _translate("delete_objects", batch[0].key):
            resp = self._s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            )
        codes: set[str] = set()
        refused: set[tuple[str, str | None]] = set()
        for err in resp.get("Errors", []):
            codes.add(err.get("Code", "?"))
            refused.add((err.get("Key", ""), err.get("VersionId")))
            log.warning("could not delete a version of %s: %s", err.get("Key"), err.get("Code"))
        # An error that names no version counts against every version of its key.
        failed = [r for r in batch if {(r.key, r.version_id), (r.key, None)} & refused]
        return failed, codes

    def delete_all_versions(self, key: str) -> DeleteReport:
        """Delete every version and delete marker of ``key``, then check none is left."""
        return self.purge({key: ()})[key]

    def purge(self, known: Mapping[str, Collection[str]]) -> dict[str, DeleteReport]:
        """Delete every version and delete marker of each key, and read the keys back.

        ``known`` maps each key to the version ids the caller already knows (the
        catalog's): those go in the first DeleteObjects with no listing before it.
        Whatever a read-back still lists is deleted next, for a few rounds at most.
        """
        removed: Counter[str] = Counter()
        refs = [VersionRef(key, v, False) for key, versions in known.items() for v in versions]
        left: dict[str, list[VersionRef]] = {}
        for _ in range(_PURGE_ROUNDS):
            if refs:
                failed = set(self.delete_versions(refs))
                removed.update(r.key for r in refs if r not in failed)
            left = {key: refs for key, refs in self.versions_of(known).items() if refs}
            refs = [ref for key_refs in left.values() for ref in key_refs]
            if not refs:
                break
        return {
            key: DeleteReport(versions_removed=removed[key], gone=key not in left) for key in known
        }

    def presign_get(self, key: str, *, expires_s: int = 300) -> str:
        """A URL that lets its bearer GET the current version for ``expires_s`` seconds."""
        with _translate("generate_presigned_url", key):
            return self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )

    def list_all_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker under ``prefix``, page by page."""
        pages = self._s3.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        with _translate("list_object_versions", prefix):
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

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every current key under ``prefix``, page by page."""
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        with _translate("list_objects_v2", prefix):
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"]


def _tagging(tags: Mapping[str, str]) -> dict[str, Any]:
    """The ``Tagging`` argument of an upload: URL-encoded, omitted when empty."""
    return {"Tagging": urlencode(dict(tags))} if tags else {}

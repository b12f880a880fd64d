"""The object store: one bucket of an S3-compatible store, with the operations callrec needs.

It and the modules it delegates to are the only ones that use boto3: ``s3_client``
builds the client and translates every botocore error into the storage exception tree
(so callers never see a boto type); ``bucket_cleanup`` lists and removes versions and
unfinished uploads.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode

from storage import bucket_cleanup
from storage.bucket_cleanup import (
    LIST_PAGE,
    DeleteReport,
    ObjectVersion,
    UnfinishedUpload,
    VersionRef,
)
from storage.errors import ObjectNotFound, ObjectStoreError
from storage.multipart import MAX_PARTS, MIN_PART, PartUploader
from storage.s3_client import RequestErrors, S3Config, make_client, translate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

MIB = 1024 * 1024


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
        with translate("get_object", self._key):
            chunk: bytes = self._body.read(self._chunk_size)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Release the connection; safe to call twice."""
        self._body.close()


class ObjectStore:
    """One bucket of an S3-compatible store, with the operations callrec needs."""

    def __init__(self, client: S3Client, bucket: str, *, region: str = "us-east-1") -> None:
        self._s3 = client
        self.bucket = bucket
        self._region = region
        self._errors = RequestErrors(client)

    @property
    def errors(self) -> dict[str, int]:
        """S3 requests that failed since this store was made, by error code."""
        return self._errors.counts()

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
        client = make_client(
            cfg,
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
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
            with translate("head_bucket"):
                self._s3.head_bucket(Bucket=self.bucket)
        except ObjectNotFound:
            self._create_bucket()
        status = self.versioning_status()
        if status != "Enabled":
            log.info("enabling versioning on bucket %s (was %s)", self.bucket, status)
            with translate("put_bucket_versioning"):
                self._s3.put_bucket_versioning(
                    Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
                )

    def _create_bucket(self) -> None:
        with translate("create_bucket"):
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
        with translate("get_bucket_versioning"):
            return self._s3.get_bucket_versioning(Bucket=self.bucket).get("Status")

    def ping(self) -> None:
        """A cheap signed request: raises unless the bucket is reachable and ours."""
        with translate("head_bucket"):
            self._s3.head_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes, *, tags: Mapping[str, str]) -> PutResult:
        """Store ``data`` under ``key`` in one request, with ``tags``."""
        with translate("put_object", key):
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
        with translate("create_multipart_upload", key):
            resp = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, **_tagging(tags))
        return resp["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray) -> str:
        """Send part ``number`` (from 1) of an upload; return its ETag.

        A ``bytearray`` is sent as it is; a ``bytes`` body is first copied whole into
        one string with the request headers.
        """
        with translate("upload_part", key):
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
        with translate("complete_multipart_upload", key):
            resp = self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        return PutResult(resp.get("VersionId"), size, _strip(resp.get("ETag", "")))

    def abort_upload(self, key: str, upload_id: str, *, quiet: bool = True) -> None:
        """Abort an upload and drop its parts; a refusal is logged, or raised if not ``quiet``.

        An upload that is already gone counts as aborted.
        """
        try:
            with translate("abort_multipart_upload", key):
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ObjectNotFound:
            pass
        except ObjectStoreError as exc:
            if not quiet:
                raise
            log.warning("could not abort multipart upload of %s: %s", key, exc)

    def list_uploads(
        self, prefix: str = "", *, page_size: int = LIST_PAGE
    ) -> Iterator[UnfinishedUpload]:
        """Every unfinished multipart upload under ``prefix``, page by page."""
        return bucket_cleanup.list_uploads(self._s3, self.bucket, prefix, page_size=page_size)

    def abort_uploads(self, key: str) -> int:
        """Abort every unfinished upload of exactly ``key``; return how many there were.

        A crash, or an outage that also kept the abort from S3, leaves them behind.
        """
        with translate("list_multipart_uploads", key):
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
        with translate("get_object", key):
            resp = self._s3.get_object(Bucket=self.bucket, Key=key, **extra)
        return _BodyStream(resp["Body"], key, chunk_size)

    def head(self, key: str) -> ObjectInfo:
        """Metadata of the current version; ObjectNotFound if none or a delete marker."""
        with translate("head_object", key):
            resp = self._s3.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            resp["ContentLength"], _strip(resp["ETag"]), resp.get("VersionId"), resp["LastModified"]
        )

    def get_tags(self, key: str) -> dict[str, str]:
        """Tags of the current version."""
        with translate("get_object_tagging", key):
            tag_set = self._s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        return {t["Key"]: t["Value"] for t in tag_set}

    def put_tags(self, key: str, tags: Mapping[str, str]) -> None:
        """Replace the whole tag set of the current version."""
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        with translate("put_object_tagging", key):
            self._s3.put_object_tagging(
                Bucket=self.bucket,
                Key=key,
                Tagging={"TagSet": tag_set},  # type: ignore[typeddict-item]
            )

    def list_versions(self, key: str) -> list[VersionRef]:
        """Every version and delete marker of exactly ``key``."""
        return self.versions_of([key])[key]

    def versions_of(self, keys: Collection[str]) -> dict[str, list[VersionRef]]:
        """Every version and delete marker of each of ``keys``, a listing per folder."""
        return bucket_cleanup.versions_of(self._s3, self.bucket, keys)

    def delete(self, key: str) -> str | None:
        """Hide the current version behind a delete marker; older versions stay.

        Not a purge (see ``delete_all_versions``); returns the marker's version id.
        """
        with translate("delete_object", key):
            return self._s3.delete_object(Bucket=self.bucket, Key=key).get("VersionId")

    def delete_versions(self, refs: Sequence[VersionRef]) -> list[VersionRef]:
        """Delete these versions, in parallel batches; return the ones that could not be deleted."""
        return bucket_cleanup.delete_versions(refs, self._delete_batch)

    def _delete_batch(self, batch: Sequence[VersionRef]) -> tuple[list[VersionRef], set[str]]:
        return bucket_cleanup.delete_batch(self._s3, self.bucket, batch)

    def delete_all_versions(self, key: str) -> DeleteReport:
        """Delete every version and delete marker of ``key``, then check none is left."""
        return self.purge({key: ()})[key]

    def purge(self, known: Mapping[str, Collection[str]]) -> dict[str, DeleteReport]:
        """Delete every version and delete marker of each key, and read the keys back.

        ``known`` maps each key to the version ids the caller already knows (the
        catalog's): those go in the first DeleteObjects with no listing before it.
        """
        return bucket_cleanup.purge(
            known, delete=self.delete_versions, list_versions=self.versions_of
        )

    def presign_get(self, key: str, *, expires_s: int = 300) -> str:
        """A URL that lets its bearer GET the current version for ``expires_s`` seconds."""
        with translate("generate_presigned_url", key):
            return self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
            )

    def list_all_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker under ``prefix``, page by page."""
        return bucket_cleanup.list_all_versions(self._s3, self.bucket, prefix)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every current key under ``prefix``, page by page."""
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        with translate("list_objects_v2", prefix):
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"]


def _tagging(tags: Mapping[str, str]) -> dict[str, Any]:
    """The ``Tagging`` argument of an upload: URL-encoded, omitted when empty."""
    return {"Tagging": urlencode(dict(tags))} if tags else {}

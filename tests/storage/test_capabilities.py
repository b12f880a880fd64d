"""The start-up backend check, against a real SeaweedFS."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from storage.capabilities import check_backend
from storage.embedded_s3 import EmbeddedS3
from storage.errors import BackendUnsupported, StoreAccessDenied, StoreUnavailable
from storage.objectstore import ObjectStore
from storage.s3_client import S3Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def test_passes_on_seaweedfs_and_leaves_nothing(
    object_store: ObjectStore, s3_admin: S3Client
) -> None:
    check_backend(object_store, probe_id="t1")

    listed = s3_admin.list_object_versions(Bucket=object_store.bucket, Prefix="_callrec/")
    assert not listed.get("Versions")
    assert not listed.get("DeleteMarkers")


def test_refuses_a_bucket_without_versioning(unversioned_store: ObjectStore) -> None:
    with pytest.raises(BackendUnsupported, match=r"bucket versioning: .* never enabled"):
        check_backend(unversioned_store)


def test_refuses_suspended_versioning(object_store: ObjectStore, s3_admin: S3Client) -> None:
    s3_admin.put_bucket_versioning(
        Bucket=object_store.bucket, VersioningConfiguration={"Status": "Suspended"}
    )
    with pytest.raises(BackendUnsupported, match=r"bucket versioning: .* Suspended"):
        check_backend(object_store)


def test_ensure_bucket_turns_versioning_back_on(unversioned_store: ObjectStore) -> None:
    unversioned_store.ensure_bucket()
    assert unversioned_store.versioning_status() == "Enabled"
    check_backend(unversioned_store)


def test_wrong_credentials_are_not_reported_as_unsupported(
    s3_server: EmbeddedS3, object_store: ObjectStore
) -> None:
    good = s3_server.config(object_store.bucket)
    bad = S3Config(good.endpoint_url, good.access_key_id, "wrong secret", good.bucket)
    with ObjectStore.from_config(bad) as store, pytest.raises(StoreAccessDenied):
        check_backend(store)


def test_unreachable_endpoint_is_not_reported_as_unsupported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = S3Config(f"http://127.0.0.1:{port}", "key", "secret", "callrec-recordings")
    with ObjectStore.from_config(cfg, max_attempts=1) as store, pytest.raises(StoreUnavailable):
        check_backend(store)

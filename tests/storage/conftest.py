"""Object-store fixtures: one real SeaweedFS per session, a fresh bucket per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

from storage.embedded_s3 import EmbeddedS3
from storage.objectstore import ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    """A running embedded S3 with random credentials, stopped at the end of the session."""
    server = EmbeddedS3(
        tmp_path_factory.mktemp("s3"),
        access_key_id=f"test{secrets.token_hex(8)}",
        secret_access_key=secrets.token_urlsafe(30),
        stop_timeout=5.0,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_admin(s3_server: EmbeddedS3) -> Iterator[S3Client]:
    """A raw client on the test server, to set up what ObjectStore deliberately cannot."""
    cfg = s3_server.config("unused")
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        region_name=cfg.region,
        config=Config(s3={"addressing_style": "path"}),
    )
    yield client
    client.close()


def unique_bucket() -> str:
    return f"test-{secrets.token_hex(6)}"


def drop_bucket(client: S3Client, bucket: str) -> None:
    """Delete every version and delete marker, then the bucket."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        objects = [{"Key": i["Key"], "VersionId": i["VersionId"]} for i in items]
        for start in range(0, len(objects), 1000):
            client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": objects[start : start + 1000], "Quiet": True},  # type: ignore[typeddict-item]
            )
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def object_store(s3_server: EmbeddedS3, s3_admin: S3Client) -> Iterator[ObjectStore]:
    """An ObjectStore on a fresh versioned bucket, emptied and deleted afterwards."""
    bucket = unique_bucket()
    with ObjectStore.from_config(s3_server.config(bucket)) as store:
        store.ensure_bucket()
        yield store
    drop_bucket(s3_admin, bucket)


@pytest.fixture
def unversioned_store(s3_server: EmbeddedS3, s3_admin: S3Client) -> Iterator[ObjectStore]:
    """An ObjectStore on a fresh bucket whose versioning was never enabled."""
    bucket = unique_bucket()
    s3_admin.create_bucket(Bucket=bucket)
    with ObjectStore.from_config(s3_server.config(bucket)) as store:
        yield store
    drop_bucket(s3_admin, bucket)

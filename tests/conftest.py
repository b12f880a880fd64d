"""Shared fixtures: a real SeaweedFS, real databases (SQLite and PostgreSQL), a fixed clock."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
import sqlalchemy as sa
from botocore.config import Config
from sqlalchemy.engine import Engine

from storage.db import create_db_engine, migrate
from storage.embedded_s3 import EmbeddedS3
from storage.objectstore import ObjectStore
from tests.rss_log import pytest_runtest_teardown, pytest_sessionstart

# Hooks of the opt-in memory log (CALLREC_TEST_RSS_LOG), found here by pytest.
__all__ = ["pytest_runtest_teardown", "pytest_sessionstart"]

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

POSTGRES_URL = os.environ.get(
    "CALLREC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("CALLREC_TEST_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


class PostgresDatabases:
    """Creates a throw-away database per test from one migrated template."""

    def __init__(self, admin_url: str) -> None:
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.url = sa.engine.make_url(admin_url)
        self.template = f"callrec_tpl_{secrets.token_hex(4)}"
        self._execute(f'CREATE DATABASE "{self.template}"')
        engine = create_db_engine(self._url_of(self.template))
        migrate(engine)
        engine.dispose()

    def _url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def _execute(self, statement: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(sa.text(statement))

    def create(self) -> tuple[str, str]:
        name = f"callrec_t_{secrets.token_hex(4)}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name, self._url_of(name)

    def create_empty(self) -> tuple[str, str]:
        """A database with no schema at all (for migrating step by step)."""
        name = f"callrec_t_{secrets.token_hex(4)}"
        self._execute(f'CREATE DATABASE "{name}"')
        return name, self._url_of(name)

    def drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.drop(self.template)
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    try:
        databases = PostgresDatabases(POSTGRES_URL)
    except sa.exc.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {POSTGRES_URL}: {str(exc.orig).splitlines()[0]}"
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    yield databases
    databases.close()


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path / 'callrec.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path)
        engine = create_db_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name, url = databases.create()
    yield url
    databases.drop(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


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

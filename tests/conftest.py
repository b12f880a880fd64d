"""Shared fixtures: real databases (SQLite and PostgreSQL) and a fixed clock."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.db import create_db_engine, migrate

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

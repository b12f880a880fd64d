"""Database engine, sessions and schema migrations (SQLite or PostgreSQL).

SQLite is the embedded default: WAL so readers never block the writer, a busy timeout
instead of immediate "database is locked" errors, ``secure_delete`` so destroyed keys
are overwritten on disk, and ``BEGIN IMMEDIATE`` so a transaction meant to write takes
the write lock up front (a deferred one that reads, then writes, fails when another
writer got in between); read-only sessions do not block. Writers of one process take
turns on a lock of their own before they ask SQLite (see ``_writer_turn``).
PostgreSQL is for scale.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage.errors import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Ignored by every dialect; our SQLite "begin" hook reads it.
_WRITE_OPTION = "callrec_writes"
_BUSY_TIMEOUT_S = 10
# One per SQLite engine (see _writer_turn); re-entrant, so that a nested write scope
# in one thread meets SQLite's lock as it always did instead of deadlocking here.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    """Create the engine for ``url``; a SQLite file's folder is created if missing."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, echo=echo)
    return sa.create_engine(
        url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20, future=True
    )


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, echo=echo, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN; pysqlite's own would be deferred.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"busy_timeout={_BUSY_TIMEOUT_S * 1000}",
            "secure_delete=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    _WRITE_LOCKS[engine] = threading.RLock()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work that writes: commit on success, roll back on any error.

    On SQLite it takes the write lock up front; plain ``Session`` reads do not.
    """
    with _writer_turn(engine), Session(engine, expire_on_commit=False) as session:
        session.connection(execution_options={_WRITE_OPTION: True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def connection_scope(engine: Engine) -> Iterator[sa.Connection]:
    """Like ``session_scope``, on a bare connection: for hot paths of Core statements.

    A ``Session`` costs about a third of a short transaction's time on its own.
    """
    with _writer_turn(engine), engine.connect() as connection:
        connection.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            yield connection


def connection_of(executor: Session | sa.Connection) -> sa.Connection:
    """The connection to run Core statements on, in the caller's transaction."""
    return executor if isinstance(executor, sa.Connection) else executor.connection()


@contextmanager
def _writer_turn(engine: Engine) -> Iterator[None]:
    """Queue this process's SQLite writers on a lock of their own.

    SQLite has one writer at a time, and a writer that finds the database locked
    sleeps in its busy handler (1, 2, 5, 10… ms) however soon the lock is free, so
    concurrent requests spend most of their time asleep. Waiting here hands the turn
    over at once. Past the busy timeout the transaction goes ahead anyway and SQLite
    decides as before: this lock only orders writers, it never refuses one. Other
    processes (the CLI) still meet at SQLite's lock. PostgreSQL needs none of this.
    """
    lock = _WRITE_LOCKS.get(engine)
    if lock is None:
        yield
        return
    acquired = lock.acquire(timeout=_BUSY_TIMEOUT_S)
    try:
        yield
    finally:
        if acquired:
            lock.release()


def check_database(engine: Engine) -> None:
    """Raise DatabaseUnavailable unless the database answers a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseUnavailable(_describe(engine, exc)) from exc


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic migrations under storage/."""
    try:
        connection = engine.connect().execution_options(**{_WRITE_OPTION: True})
        with connection, connection.begin():
            command.upgrade(_alembic_config(connection), revision)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(_describe(engine, exc)) from exc


def generate_migration(engine: Engine, *, message: str, metadata: sa.MetaData) -> None:
    """Write a new migration from the difference between ``metadata`` and the database."""
    with engine.begin() as connection:
        config = _alembic_config(connection)
        config.attributes["target_metadata"] = metadata
        command.revision(config, message=message, autogenerate=True)


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


def _describe(engine: Engine, exc: sa.exc.SQLAlchemyError) -> str:
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    url = engine.url.render_as_string(hide_password=True)
    return f"database {url} unavailable: {reason}"

"""The migrations build exactly the schema the models describe, on each backend."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import consent.models
import retention.models
import storage.models
from storage.db import create_db_engine, migrate
from storage.errors import StorageError
from tests.conftest import PostgresDatabases


def test_migrations_match_the_models(engine: Engine) -> None:
    assert storage.models.__all__ and consent.models.__all__ and retention.models.__all__
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def test_reference_data_is_seeded(engine: Engine) -> None:
    from sqlmodel import Session

    from consent import registry

    with Session(engine) as session:
        assert set(registry.purposes(session)) == {"research", "improvement", "optimization"}
        book = registry.rule_book(session)
        assert book.rule_for(["MA"])[0] == "all_party"
        assert book.rule_for(["US-NY"])[0] == "one_party"


def test_one_recording_per_call_is_not_forced_on_existing_duplicates(tmp_path: Path) -> None:
    """Two stored recordings of one call are a person's to sort out: the migration says which."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate(engine, "0005")
        with engine.begin() as connection:
            for rid, state in (("rec_a", "stored"), ("rec_b", "stored"), ("rec_c", "failed")):
                connection.execute(
                    sa.text(
                        "INSERT INTO recordings (id, client_id, call_id, channel, codec, "
                        "container, channels, object_key, state, legal_hold, purpose_names, "
                        "created_at, updated_at) VALUES (:id, 'acme', 'c-dup', 'upload', "
                        "'opus', 'ogg', 1, :id, :state, 0, '', :at, :at)"
                    ),
                    {"id": rid, "state": state, "at": "2026-11-28 12:00:00.000000"},
                )
        with pytest.raises(StorageError, match="acme/c-dup"):
            migrate(engine)
        with engine.begin() as connection:  # a person set the extra one aside
            connection.execute(sa.text("UPDATE recordings SET state='failed' WHERE id='rec_b'"))
        migrate(engine)
    finally:
        engine.dispose()


def test_clients_from_before_siprec_settings_take_loopback_only(tmp_path: Path) -> None:
    from consent.siprec import SiprecSettings, admits, siprec_settings

    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate(engine, "0008")
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO clients (id, name, country, status, created_at) "
                    "VALUES ('acme', 'Acme', 'MA', 'active', '2026-11-28 12:00:00.000000')"
                )
            )
        migrate(engine)
        with engine.connect() as connection:
            settings = siprec_settings(connection, "acme")
        assert settings == SiprecSettings(client_id="acme", networks=(), jurisdiction=None)
        assert admits(settings, "127.0.0.1") and not admits(settings, "192.0.2.1")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name, url = databases.create_empty()
    yield url
    databases.drop(name)


def test_an_outbox_from_before_the_fan_out_keeps_its_rows_and_sends_nothing_twice(
    empty_database_url: str,
) -> None:
    """At 0011 an event's rows were written with it: after 0012 they stay pending, and the
    fan-out starts after them."""
    from storage import webhook_fanout
    from storage.audit import AuditEntry, AuditLog
    from storage.db import connection_scope

    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    audit = AuditLog(secrets.token_bytes(32))
    engine = create_db_engine(empty_database_url)
    try:
        migrate(engine, "0011")
        with connection_scope(engine) as connection:
            [created] = audit.append_many(
                connection, [AuditEntry("webhook.created", "t", "acme", "whk_old")], now=at
            )
            [revoked] = audit.append_many(
                connection, [AuditEntry("consent.revoked", "t", "acme", "g1")], now=at
            )
            connection.execute(
                sa.text(
                    "INSERT INTO webhook_endpoints (id, client_id, url, events, created_by, "
                    "created_at) VALUES ('whk_old', 'acme', 'http://192.0.2.1:9/h', "
                    "'consent.revoked', 't', :at)"
                ),
                {"at": at},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO webhook_outbox (id, endpoint_id, client_id, type, body, "
                    "audit_seq, created_at, status, attempts, next_attempt_at) VALUES "
                    "('msg_old', 'whk_old', 'acme', 'consent.revoked', '{}', :seq, :at, "
                    "'pending', 0, :at)"
                ),
                {"seq": revoked.seq, "at": at},
            )
        migrate(engine)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT seq FROM webhook_fanout")).scalar() == (
                revoked.seq
            )
            since = "SELECT since_seq FROM webhook_endpoints WHERE id = 'whk_old'"
            assert connection.execute(sa.text(since)).scalar() == created.seq
            assert webhook_fanout.backlog(connection).pending == 1
        with connection_scope(engine) as connection:
            assert webhook_fanout.fan_out(connection, now=at) == (0, False)
            audit.append_many(
                connection, [AuditEntry("consent.revoked", "t", "acme", "g2")], now=at
            )
        with connection_scope(engine) as connection:
            assert webhook_fanout.fan_out(connection, now=at) == (1, False)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, status FROM webhook_outbox"))
            assert sorted(r.status for r in rows) == ["pending", "pending"]
            assert webhook_fanout.backlog(connection).pending == 2
    finally:
        engine.dispose()

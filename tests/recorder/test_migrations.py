"""The migrations build exactly the schema the models describe, on each backend."""

from __future__ import annotations

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

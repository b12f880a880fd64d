"""The migrations build exactly the schema the models describe, on each backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import consent.models
import retention.models
import storage.models


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

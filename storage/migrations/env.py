"""Alembic environment: runs on the connection that ``storage.db.migrate`` hands over."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

_MIGRATION_LOCK_ID = 0x63616C6D  # one replica migrates at a time


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through storage.db.migrate (or `callrec migrate`)")
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    context.configure(
        connection=connection,
        # Only autogeneration compares against models; the caller passes the metadata
        # of every package (storage cannot import the packages above it).
        target_metadata=context.config.attributes.get("target_metadata"),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()

"""Consent: each client's SIPREC settings (source networks allowed, default jurisdiction).

A client without a row takes SIPREC only from loopback and has no default jurisdiction.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "siprec_settings",
        sa.Column("client_id", sa.String(length=63), nullable=False),
        sa.Column("networks", sa.Text(), nullable=False),
        sa.Column("jurisdiction", sa.String(length=10), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"]),
        sa.PrimaryKeyConstraint("client_id"),
    )


def downgrade() -> None:
    op.drop_table("siprec_settings")

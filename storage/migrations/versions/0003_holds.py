"""Retention: legal hold cases and what they cover.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=True),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("released_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "legal_hold_targets",
        sa.Column("hold_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["legal_holds.id"],
        ),
        sa.PrimaryKeyConstraint("hold_id", "kind", "target"),
    )
    with op.batch_alter_table("legal_hold_targets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_legal_hold_targets_target"), ["target"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("legal_hold_targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_legal_hold_targets_target"))

    op.drop_table("legal_hold_targets")
    op.drop_table("legal_holds")

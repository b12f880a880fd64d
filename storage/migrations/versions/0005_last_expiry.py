"""Recordings: when the last purpose expires, kept in step with the purposes.

The retention report's expiry forecast needs, per recording, the week its last
purpose expires; with the maximum kept on the row, an index range answers it instead
of a pass over every purpose.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_expiry", UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_recordings_last_expiry"), ["last_expiry"])
    # One grouped pass over the purposes, not a subquery per recording.
    op.execute(
        "UPDATE recordings SET last_expiry = m.last FROM (SELECT recording_id,"
        " max(expires_at) AS last FROM recording_purposes GROUP BY recording_id) AS m"
        " WHERE m.recording_id = recordings.id"
    )


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_last_expiry"))
        batch_op.drop_column("last_expiry")

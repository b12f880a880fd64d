"""Recordings: a summary of their purposes, kept in step with the purpose rows.

The retention report groups recordings by the names of their live purposes and
forecasts the week their last purpose expires; with both kept on the row, it reads
the recordings table alone (and the forecast an index range) instead of joining
every purpose.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence
from itertools import groupby

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose_names", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("last_expiry", UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_recordings_last_expiry"), ["last_expiry"])
    # Purged and discarded recordings keep no purpose (purges of erased recordings
    # used to leave their unexpired ones).
    op.execute(
        "DELETE FROM recording_purposes WHERE recording_id IN"
        " (SELECT id FROM recordings WHERE state IN ('purged', 'failed'))"
    )
    # One grouped pass over the purposes, not a subquery per recording.
    op.execute(
        "UPDATE recordings SET last_expiry = m.last FROM (SELECT recording_id,"
        " max(expires_at) AS last FROM recording_purposes GROUP BY recording_id) AS m"
        " WHERE m.recording_id = recordings.id"
    )
    # Names joined here: the two databases order string aggregates differently.
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT recording_id, purpose FROM recording_purposes ORDER BY recording_id")
    )
    names = [
        {"id": rid, "names": ",".join(sorted(purpose for _, purpose in group))}
        for rid, group in groupby(rows, key=lambda row: row[0])
    ]
    if names:
        bind.execute(sa.text("UPDATE recordings SET purpose_names = :names WHERE id = :id"), names)


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_last_expiry"))
        batch_op.drop_column("last_expiry")
        batch_op.drop_column("purpose_names")

"""Recordings: at most one per call that is not a failed attempt, kept by the database.

Concurrent uploads for one call were all stored; a check before the insert cannot stop
two requests that check at the same moment, a unique index can. Failed attempts stay
out of it so that a call whose upload failed can be uploaded again.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.errors import StorageError

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("state != 'failed'")


def upgrade() -> None:
    duplicates = op.get_bind().execute(
        sa.text(
            "SELECT client_id, call_id FROM recordings WHERE state != 'failed' "
            "GROUP BY client_id, call_id HAVING COUNT(*) > 1"
        )
    )
    found = [f"{client}/{call}" for client, call in duplicates]
    if found:
        # Each is a real recording: which to keep is a person's decision, not ours.
        raise StorageError(
            "calls with more than one recording (keep one per call: mark the others' "
            "catalog rows failed, or remove them, then migrate again): " + ", ".join(found[:20])
        )
    op.create_index(
        "uq_recordings_one_per_call",
        "recordings",
        ["client_id", "call_id"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_recordings_one_per_call", table_name="recordings")

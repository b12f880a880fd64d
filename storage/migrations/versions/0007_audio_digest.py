"""Recordings: the size and SHA-256 of the audio as served, beside the stored object's.

``size`` and ``sha256`` describe the encrypted object in S3; nobody outside can check
a downloaded file against them. These two describe the decrypted audio. Recordings
stored before stay without (null).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audio_size", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("audio_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_column("audio_sha256")
        batch_op.drop_column("audio_size")

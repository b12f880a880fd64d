"""Webhooks fanned out from the audit log: a cursor, and when each endpoint starts hearing.

An event's transaction no longer writes outbox rows: the dispatcher writes them from
the audit log later (storage.webhook_fanout). The rows already written stay as they
are and are delivered as before; the cursor starts at the audit log's current head,
since every event up to it had its rows written with it. An existing endpoint starts
after its own ``webhook.created`` event.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_fanout",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(
        "INSERT INTO webhook_fanout (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events"
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("since_seq", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE webhook_endpoints SET since_seq = COALESCE(("
        "SELECT MAX(a.seq) FROM audit_events a WHERE a.kind = 'webhook.created' "
        "AND a.subject = webhook_endpoints.id), 0)"
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.alter_column("since_seq", existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    # Events not yet fanned out then get no rows: the code before 0012 wrote them with
    # the event. Let the dispatcher catch up before going back.
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_column("since_seq")
    op.drop_table("webhook_fanout")

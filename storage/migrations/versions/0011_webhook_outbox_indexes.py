"""Webhook outbox: no index on endpoint or client, only on (status, next attempt).

Each index costs an insert in every event's transaction that has a webhook; what
reads by endpoint or client reads pending and dead rows only, which the
(status, next_attempt_at) index finds.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_outbox_endpoint_id"))
        batch_op.drop_index(batch_op.f("ix_webhook_outbox_client_id"))


def downgrade() -> None:
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_outbox_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_outbox_endpoint_id"), ["endpoint_id"], unique=False
        )

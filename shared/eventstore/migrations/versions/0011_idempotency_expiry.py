"""Idempotency records are forgotten after their keeping period: an index on their age,
so the job that deletes the old ones does not read the whole table.

Revision ID: 0011_idempotency_expiry
Revises: 0010_read_log_append_only
Create Date: 2026-11-29
"""

from alembic import op

revision = "0011_idempotency_expiry"
down_revision = "0010_read_log_append_only"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")

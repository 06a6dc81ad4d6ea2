"""Intake: per-day ticket number counters.

Revision ID: 0101_intake
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0101_intake"
down_revision = None
branch_labels = ("intake",)
depends_on = "0002_ticket_state"


def upgrade() -> None:
    op.create_table(
        "intake_ticket_number_counters",
        sa.Column("day", sa.String(8), nullable=False),
        sa.Column("last_number", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_intake_ticket_number_counters"),
    )


def downgrade() -> None:
    op.drop_table("intake_ticket_number_counters")

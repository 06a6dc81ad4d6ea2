"""Dispatch: SLA clocks per ticket, and the calendars and SLA policies as they stand.

Revision ID: 0202_dispatch_sla
Revises: 0201_dispatch
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0202_dispatch_sla"
down_revision = "0201_dispatch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatch_sla_clocks",
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("policy_id", sa.String(48), nullable=True),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("pause_reason", sa.String(50), nullable=True),
        sa.Column("paused_since", UtcDateTime, nullable=True),
        sa.Column("response_status", sa.String(10), nullable=False),
        sa.Column("response_due_at", UtcDateTime, nullable=True),
        sa.Column("resolution_status", sa.String(10), nullable=True),
        sa.Column("resolution_due_at", UtcDateTime, nullable=True),
        sa.Column("due_at", UtcDateTime, nullable=True),
        sa.Column("next_check_at", UtcDateTime, nullable=True),
        sa.Column("warning_level", sa.String(20), nullable=True),
        sa.Column("warning_percent", sa.Float, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_dispatch_sla_clocks"),
    )
    op.create_index(
        "ix_dispatch_sla_clocks_next_check_at", "dispatch_sla_clocks", ["next_check_at"]
    )
    op.create_table(
        "dispatch_sla_terms",
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("id", sa.String(48), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("description", sa.JSON, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("kind", "id", name="pk_dispatch_sla_terms"),
    )


def downgrade() -> None:
    op.drop_table("dispatch_sla_terms")
    op.drop_index("ix_dispatch_sla_clocks_next_check_at", "dispatch_sla_clocks")
    op.drop_table("dispatch_sla_clocks")

"""Dispatch: service network read model and ticket flags.

Revision ID: 0201_dispatch
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0201_dispatch"
down_revision = None
branch_labels = ("dispatch",)
depends_on = "0002_ticket_state"


def upgrade() -> None:
    op.create_table(
        "dispatch_service_points",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(20), nullable=True),
        sa.Column("parent_id", sa.String(100), nullable=True),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("postcodes", sa.JSON, nullable=False),
        sa.Column("address", sa.String(200), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("registered_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dispatch_service_points"),
    )
    op.create_index("ix_dispatch_service_points_region", "dispatch_service_points", ["region"])
    op.create_table(
        "dispatch_technicians",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("service_point_id", sa.String(100), nullable=False),
        sa.Column("skills", sa.JSON, nullable=False),
        sa.Column("working_hours", sa.JSON, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("registered_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dispatch_technicians"),
    )
    op.create_index(
        "ix_dispatch_technicians_service_point_id", "dispatch_technicians", ["service_point_id"]
    )
    op.create_table(
        "dispatch_ticket_flags",
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("escalated", sa.Boolean, nullable=False),
        sa.Column("escalation_level", sa.String(20), nullable=True),
        sa.Column("escalation_cause", sa.String(20), nullable=True),
        sa.Column("response_breached_at", UtcDateTime, nullable=True),
        sa.Column("resolution_breached_at", UtcDateTime, nullable=True),
        sa.Column("repeat_of_ticket_id", sa.String(100), nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_dispatch_ticket_flags"),
    )


def downgrade() -> None:
    op.drop_table("dispatch_ticket_flags")
    op.drop_index("ix_dispatch_technicians_service_point_id", "dispatch_technicians")
    op.drop_table("dispatch_technicians")
    op.drop_index("ix_dispatch_service_points_region", "dispatch_service_points")
    op.drop_table("dispatch_service_points")

"""Ticket-state read model.

Revision ID: 0002_ticket_state
Revises: 0001_ledger
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0002_ticket_state"
down_revision = "0001_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticket_state",
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("ticket_number", sa.String(32), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("urgency", sa.String(10), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("warranty_status", sa.String(20), nullable=False),
        sa.Column("customer_name", sa.String(200), nullable=False),
        sa.Column("customer_phone", sa.String(32), nullable=False),
        sa.Column("address_line", sa.String(200), nullable=False),
        sa.Column("product_model", sa.String(200), nullable=False),
        sa.Column("product_line", sa.String(200), nullable=True),
        sa.Column("serial_number", sa.String(200), nullable=True),
        sa.Column("category", sa.String(20), nullable=True),
        sa.Column("complexity", sa.String(10), nullable=True),
        sa.Column("resolution_path", sa.String(20), nullable=True),
        sa.Column("service_point_id", sa.String(200), nullable=True),
        sa.Column("technician_id", sa.String(200), nullable=True),
        sa.Column("appointment_start", UtcDateTime, nullable=True),
        sa.Column("appointment_end", UtcDateTime, nullable=True),
        sa.Column("repair_outcome", sa.String(20), nullable=True),
        sa.Column("satisfaction_score", sa.Integer, nullable=True),
        sa.Column("possible_duplicate_of", sa.String(36), nullable=True),
        sa.Column("reopen_count", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("responded_at", UtcDateTime, nullable=True),
        sa.Column("diagnosed_at", UtcDateTime, nullable=True),
        sa.Column("dispatched_at", UtcDateTime, nullable=True),
        sa.Column("visited_at", UtcDateTime, nullable=True),
        sa.Column("repaired_at", UtcDateTime, nullable=True),
        sa.Column("followed_up_at", UtcDateTime, nullable=True),
        sa.Column("closed_at", UtcDateTime, nullable=True),
        sa.Column("response_due_at", UtcDateTime, nullable=False),
        sa.Column("resolution_due_at", UtcDateTime, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_ticket_state"),
        sa.UniqueConstraint("ticket_number", name="uq_ticket_state_ticket_number"),
    )
    op.create_index(
        "ix_ticket_state_created_at_ticket_id", "ticket_state", ["created_at", "ticket_id"]
    )
    op.create_index("ix_ticket_state_region_status", "ticket_state", ["region", "status"])
    op.create_index("ix_ticket_state_customer_phone", "ticket_state", ["customer_phone"])
    op.create_index("ix_ticket_state_serial_number", "ticket_state", ["serial_number"])


def downgrade() -> None:
    op.drop_table("ticket_state")

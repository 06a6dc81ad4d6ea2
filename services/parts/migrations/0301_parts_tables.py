"""Parts: catalogue, locations, stock, monthly usage, requisitions, old-part returns.

Revision ID: 0301_parts
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0301_parts"
down_revision = None
branch_labels = ("parts",)
depends_on = "0002_ticket_state"


def upgrade() -> None:
    _catalogue_and_locations()
    _stock()
    _requisitions()
    _returns()
    op.create_table(
        "parts_reactor_triggers",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("handled_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_parts_reactor_triggers"),
    )


def _catalogue_and_locations() -> None:
    op.create_table(
        "parts_catalogue",
        sa.Column("part_number", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("fits_models", sa.Text, nullable=False),
        sa.Column("unit_cost", sa.Float, nullable=False),
        sa.Column("return_required", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("part_number", name="pk_parts_catalogue"),
    )
    op.create_table(
        "parts_locations",
        sa.Column("location_id", sa.String(24), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("parent_id", sa.String(24), nullable=True),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("registered_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("location_id", name="pk_parts_locations"),
    )


def _stock() -> None:
    op.create_table(
        "parts_stock",
        sa.Column("location_id", sa.String(24), nullable=False),
        sa.Column("part_number", sa.String(32), nullable=False),
        sa.Column("on_hand", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False),
        sa.Column("issued", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("location_id", "part_number", name="pk_parts_stock"),
        sa.CheckConstraint("on_hand >= 0", name="ck_parts_stock_on_hand_not_negative"),
        sa.CheckConstraint(
            "reserved >= 0 AND reserved <= on_hand", name="ck_parts_stock_reserved_within_on_hand"
        ),
        sa.CheckConstraint("issued >= 0", name="ck_parts_stock_issued_not_negative"),
    )
    op.create_table(
        "parts_monthly_usage",
        sa.Column("location_id", sa.String(24), nullable=False),
        sa.Column("part_number", sa.String(32), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "location_id", "part_number", "month", name="pk_parts_monthly_usage"
        ),
    )


def _requisitions() -> None:
    op.create_table(
        "parts_requisitions",
        sa.Column("requisition_id", sa.String(36), nullable=False),
        sa.Column("ticket_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("part_number", sa.String(32), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("requesting_location_id", sa.String(24), nullable=False),
        sa.Column("source_location_id", sa.String(24), nullable=True),
        sa.Column("technician_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("issued_quantity", sa.Integer, nullable=False),
        sa.Column("consumed_quantity", sa.Integer, nullable=False),
        sa.Column("returned_quantity", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("requisition_id", name="pk_parts_requisitions"),
    )
    op.create_index("ix_parts_requisitions_ticket_id", "parts_requisitions", ["ticket_id"])
    op.create_index(
        "ix_parts_requisitions_requesting_location_id",
        "parts_requisitions",
        ["requesting_location_id"],
    )


def _returns() -> None:
    op.create_table(
        "parts_returns",
        sa.Column("return_id", sa.String(80), nullable=False),
        sa.Column("ticket_id", sa.String(200), nullable=False),
        sa.Column("part_number", sa.String(200), nullable=False),
        sa.Column("old_serial", sa.String(200), nullable=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("returned_quantity", sa.Integer, nullable=False),
        sa.Column("service_point_id", sa.String(200), nullable=True),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("due_at", UtcDateTime, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("returned_at", UtcDateTime, nullable=True),
        sa.Column("returned_location_id", sa.String(200), nullable=True),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("grade", sa.String(10), nullable=True),
        sa.Column("overdue_detected_at", UtcDateTime, nullable=True),
        sa.Column("expected_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("return_id", name="pk_parts_returns"),
    )
    op.create_index("ix_parts_returns_ticket_id", "parts_returns", ["ticket_id"])
    op.create_index(
        "ix_parts_returns_service_point_id_status", "parts_returns", ["service_point_id", "status"]
    )
    op.create_index("ix_parts_returns_status_due_at", "parts_returns", ["status", "due_at"])


def downgrade() -> None:
    for table in (
        "parts_reactor_triggers",
        "parts_returns",
        "parts_requisitions",
        "parts_monthly_usage",
        "parts_stock",
        "parts_locations",
        "parts_catalogue",
    ):
        op.drop_table(table)

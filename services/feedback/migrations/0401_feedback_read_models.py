"""Feedback: compliance rows, scorecard deductions and items, repairs, quality alerts.

Revision ID: 0401_feedback
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0401_feedback"
down_revision = None
branch_labels = ("feedback",)
depends_on = "0002_ticket_state"

ITEM = sa.String(8)
ITEMS = (
    "compliant",
    "responded_within_sla",
    "resolved_within_sla",
    "visited_before_repair",
    "follow_up_done",
    "satisfied",
    "parts_returned",
    "steps_in_order",
    "first_time_fix",
)


def upgrade() -> None:
    _create_ticket_tables()
    _create_scorecard_and_quality_tables()


def _create_ticket_tables() -> None:
    """Compliance rows, scorecard deductions and repairs (one ticket's rows each)."""
    op.create_table(
        "feedback_compliance_tickets",
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("ticket_number", sa.String(32), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("product_model", sa.String(200), nullable=False),
        sa.Column("fault_category", sa.String(20), nullable=True),
        sa.Column("agent_id", sa.String(200), nullable=True),
        sa.Column("service_point_id", sa.String(200), nullable=True),
        sa.Column("technician_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        *[sa.Column(name, ITEM, nullable=False) for name in ITEMS],
        sa.Column("checklist", sa.Text, nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_feedback_compliance_tickets"),
    )
    op.create_index(
        "ix_feedback_compliance_tickets_month_region",
        "feedback_compliance_tickets",
        ["month", "region"],
    )
    op.create_index(
        "ix_feedback_compliance_tickets_ticket_number",
        "feedback_compliance_tickets",
        ["ticket_number"],
    )
    op.create_table(
        "feedback_scorecard_deductions",
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("service_point_id", sa.String(200), nullable=True),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("earlier_ticket_id", sa.String(200), nullable=True),
        sa.Column("event_ids", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "seq", name="pk_feedback_scorecard_deductions"),
    )
    op.create_index(
        "ix_feedback_scorecard_deductions_month", "feedback_scorecard_deductions", ["month"]
    )
    op.create_table(
        "feedback_repairs",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("product_model", sa.String(200), nullable=False),
        sa.Column("fault_category", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_feedback_repairs"),
    )
    op.create_index("ix_feedback_repairs_day", "feedback_repairs", ["day"])
    op.create_index("ix_feedback_repairs_ticket_id", "feedback_repairs", ["ticket_id"])


def _create_scorecard_and_quality_tables() -> None:
    op.create_table(
        "feedback_scorecard_items",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("service_point_id", sa.String(200), nullable=False),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("item", sa.String(32), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("occurred_on", sa.String(10), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("ticket_ids", sa.Text, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_feedback_scorecard_items"),
    )
    op.create_index("ix_feedback_scorecard_items_month", "feedback_scorecard_items", ["month"])
    op.create_table(
        "feedback_quality_alerts",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("product_model", sa.String(200), nullable=False),
        sa.Column("fault_category", sa.String(20), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Integer, nullable=False),
        sa.Column("ticket_ids", sa.Text, nullable=False),
        sa.Column("raised_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_feedback_quality_alerts"),
    )
    op.create_index("ix_feedback_quality_alerts_day", "feedback_quality_alerts", ["day"])


def downgrade() -> None:
    for table in (
        "feedback_quality_alerts",
        "feedback_scorecard_items",
        "feedback_repairs",
        "feedback_scorecard_deductions",
        "feedback_compliance_tickets",
    ):
        op.drop_table(table)

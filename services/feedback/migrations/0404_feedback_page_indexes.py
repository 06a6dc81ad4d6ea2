"""Feedback: pages of ``GET /compliance/tickets`` walk an index in ticket-number order,
whole or by month or region, with the verdicts in the index (a ``compliant`` or
``failing`` filter skips rows without reading them); by service point or technician too.
A month's page no longer sorts the month, nor does a filter that matches nothing read
the table.

``ix_feedback_compliance_tickets_number`` (ticket number, verdicts) replaces
``…_ticket_number``, its prefix.

Revision ID: 0404_feedback_page_indexes
Revises: 0403_feedback_staff_counts
Create Date: 2026-11-28
"""

from alembic import op

revision = "0404_feedback_page_indexes"
down_revision = "0403_feedback_staff_counts"
branch_labels = None
depends_on = None

TABLE = "feedback_compliance_tickets"
VERDICTS = [
    "compliant",
    "responded_within_sla",
    "resolved_within_sla",
    "visited_before_repair",
    "follow_up_done",
    "satisfied",
    "parts_returned",
    "steps_in_order",
]
INDEXES = {
    "ix_feedback_compliance_tickets_number": ["ticket_number", *VERDICTS],
    "ix_feedback_compliance_tickets_month_number": ["month", "ticket_number", *VERDICTS],
    "ix_feedback_compliance_tickets_region_number": ["region", "ticket_number", *VERDICTS],
    "ix_feedback_compliance_tickets_point_number": ["service_point_id", "ticket_number"],
    "ix_feedback_compliance_tickets_technician_number": ["technician_id", "ticket_number"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, TABLE, columns)
    op.drop_index("ix_feedback_compliance_tickets_ticket_number", table_name=TABLE)


def downgrade() -> None:
    op.create_index("ix_feedback_compliance_tickets_ticket_number", TABLE, ["ticket_number"])
    for name in INDEXES:
        op.drop_index(name, table_name=TABLE)

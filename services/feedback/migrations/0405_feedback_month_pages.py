"""Feedback: a page of ``GET /compliance/tickets`` (or the console's) asked for a month
*and* a region, service point or technician walks an index led by both, not the region's,
point's or technician's whole history (0404 alone made a regional center's month page
read every ticket its region ever had, on SQLite).

Revision ID: 0405_feedback_month_pages
Revises: 0404_feedback_page_indexes
Create Date: 2026-11-28
"""

from alembic import op

revision = "0405_feedback_month_pages"
down_revision = "0404_feedback_page_indexes"
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
    "ix_feedback_compliance_tickets_month_region_number": [
        "month",
        "region",
        "ticket_number",
        *VERDICTS,
    ],
    "ix_feedback_compliance_tickets_point_month_number": [
        "service_point_id",
        "month",
        "ticket_number",
    ],
    "ix_feedback_compliance_tickets_technician_month_number": [
        "technician_id",
        "month",
        "ticket_number",
    ],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, TABLE, columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name=TABLE)

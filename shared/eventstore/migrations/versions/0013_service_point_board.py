"""A service point's open tickets (the console's board and SLA lists filtered by one):
an index on (service point, status) finds them, rather than walking every open ticket
of the status in the region (of every region, for headquarters) in deadline order.

Revision ID: 0013_service_point_board
Revises: 0012_technician_load
Create Date: 2026-11-29
"""

from alembic import op

revision = "0013_service_point_board"
down_revision = "0012_technician_load"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_ticket_state_service_point_id_status",
        "ticket_state",
        ["service_point_id", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_ticket_state_service_point_id_status", table_name="ticket_state")

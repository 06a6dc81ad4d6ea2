"""The console's board and SLA lists: a status and region's tickets in deadline order,
so a page is an index walk (keyset) and a count reads the index alone.

Revision ID: 0007_console_indexes
Revises: 0006_personal_data_keys
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007_console_indexes"
down_revision = "0006_personal_data_keys"
branch_labels = None
depends_on = None

DEADLINES = ("response_due_at", "resolution_due_at", "repaired_at")


def upgrade() -> None:
    for deadline in DEADLINES:
        op.create_index(
            f"ix_ticket_state_status_region_{deadline}",
            "ticket_state",
            ["status", "region", deadline, "ticket_id"],
        )


def downgrade() -> None:
    for deadline in DEADLINES:
        op.drop_index(f"ix_ticket_state_status_region_{deadline}", table_name="ticket_state")

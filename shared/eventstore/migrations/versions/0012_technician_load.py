"""A technician's open tickets are counted at every assignment (the load the suggestion
and the capacity rule weigh): an index on (technician, status) finds them without walking
the technician's whole history.

Revision ID: 0012_technician_load
Revises: 0011_idempotency_expiry
Create Date: 2026-11-29
"""

from alembic import op

revision = "0012_technician_load"
down_revision = "0011_idempotency_expiry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_ticket_state_technician_id_status", "ticket_state", ["technician_id", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_ticket_state_technician_id_status", table_name="ticket_state")

"""Indexes for every filter of the ticket list, each ending in the list's order
(created_at, ticket_id), so a page is an index walk that stops at its limit whatever the
table's size.

Revision ID: 0004_ticket_list_indexes
Revises: 0003_lean_ledger
Create Date: 2026-11-26
"""

from alembic import op

revision = "0004_ticket_list_indexes"
down_revision = "0003_lean_ledger"
branch_labels = None
depends_on = None

ORDER = ["created_at", "ticket_id"]
INDEXES = {
    "ix_ticket_state_status_created_at_ticket_id": ["status", *ORDER],
    "ix_ticket_state_region_created_at_ticket_id": ["region", *ORDER],
    "ix_ticket_state_region_status_created_at_ticket_id": ["region", "status", *ORDER],
    "ix_ticket_state_urgency_created_at_ticket_id": ["urgency", *ORDER],
    "ix_ticket_state_technician_id_created_at_ticket_id": ["technician_id", *ORDER],
    "ix_ticket_state_customer_phone_created_at_ticket_id": ["customer_phone", *ORDER],
}


def upgrade() -> None:
    # Prefixes of the new ones: the new indexes answer their lookups too.
    op.drop_index("ix_ticket_state_region_status", table_name="ticket_state")
    op.drop_index("ix_ticket_state_customer_phone", table_name="ticket_state")
    for name, columns in INDEXES.items():
        op.create_index(name, "ticket_state", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="ticket_state")
    op.create_index("ix_ticket_state_region_status", "ticket_state", ["region", "status"])
    op.create_index("ix_ticket_state_customer_phone", "ticket_state", ["customer_phone"])

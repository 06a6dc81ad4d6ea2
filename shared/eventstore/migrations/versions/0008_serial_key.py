"""Serial numbers compare case-insensitively: ``sn-0001`` is a repeat of ``SN-0001``. The
repeat-repair lookup asks ``upper(serial_number)``, so the index holds that expression.

Revision ID: 0008_serial_key
Revises: 0007_console_indexes
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_serial_key"
down_revision = "0007_console_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_ticket_state_serial_number", table_name="ticket_state")
    op.create_index("ix_ticket_state_serial_key", "ticket_state", [sa.text("upper(serial_number)")])


def downgrade() -> None:
    op.drop_index("ix_ticket_state_serial_key", table_name="ticket_state")
    op.create_index("ix_ticket_state_serial_number", "ticket_state", ["serial_number"])

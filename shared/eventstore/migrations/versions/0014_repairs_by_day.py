"""The repairs of a day (the quality job, every minute; the weekly report): a partial
index over the repair events' times, rather than a walk of the whole ledger per pass.
Only ``TicketRepaired`` rows are in it, so other appends do not pay for it.

Revision ID: 0014_repairs_by_day
Revises: 0013_service_point_board
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_repairs_by_day"
down_revision = "0013_service_point_board"
branch_labels = None
depends_on = None

REPAIRED_ONLY = "event_type = 'TicketRepaired'"


def upgrade() -> None:
    op.create_index(
        "ix_events_repaired_occurred_at",
        "events",
        ["occurred_at"],
        sqlite_where=sa.text(REPAIRED_ONLY),
        postgresql_where=sa.text(REPAIRED_ONLY),
    )


def downgrade() -> None:
    op.drop_index("ix_events_repaired_occurred_at", table_name="events")

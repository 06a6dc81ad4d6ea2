"""How much of an expected return came back late: a return settled in two parts, one on
time and one late, counted wholly late in the summary's `returned_late`.

Rows recorded before keep the figure the summary showed for them (all they returned, when
any of it was late): the split of those few that came back in parts is not on the row.

Revision ID: 0304_returns_late_quantity
Revises: 0303_requisition_region
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0304_returns_late_quantity"
down_revision = "0303_requisition_region"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "parts_returns",
        sa.Column("late_quantity", sa.Integer(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE parts_returns SET late_quantity = returned_quantity WHERE late")


def downgrade() -> None:
    with op.batch_alter_table("parts_returns") as batch:
        batch.drop_column("late_quantity")

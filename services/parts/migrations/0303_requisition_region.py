"""A requisition's region (its requesting location's, the region its stream's events carry)
on its row: a regional center's pages walk one index instead of sorting every requisition
of the region's locations. Filled from the first event of each requisition's stream.

Revision ID: 0303_requisition_region
Revises: 0302_parts_list_indexes
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0303_requisition_region"
down_revision = "0302_parts_list_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("parts_requisitions", sa.Column("region", sa.String(32), nullable=True))
    op.execute(
        "UPDATE parts_requisitions SET region = (SELECT e.region FROM events e "
        "WHERE e.stream_id = 'req:' || parts_requisitions.requisition_id "
        "AND e.stream_version = 1)"
    )
    op.create_index(
        "ix_parts_requisitions_region_created_at",
        "parts_requisitions",
        ["region", "created_at", "requisition_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_parts_requisitions_region_created_at", table_name="parts_requisitions")
    with op.batch_alter_table("parts_requisitions") as batch:
        batch.drop_column("region")

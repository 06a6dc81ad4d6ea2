"""The requisitions' and returns' lists walk an index in their order for every filter, so
a page costs the same at a million rows as at ten thousand: location ids compare without
case, so those indexes hold ``lower(…)``; the old (status, due) and requesting-location
indexes gain the order's columns.

Revision ID: 0302_parts_list_indexes
Revises: 0301_parts
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0302_parts_list_indexes"
down_revision = "0301_parts"
branch_labels = None
depends_on = None

_REQUISITIONS = "parts_requisitions"
_RETURNS = "parts_returns"


def upgrade() -> None:
    op.drop_index("ix_parts_requisitions_requesting_location_id", table_name=_REQUISITIONS)
    op.drop_index("ix_parts_returns_status_due_at", table_name=_RETURNS)
    order = ["created_at", "requisition_id"]
    op.create_index("ix_parts_requisitions_created_at", _REQUISITIONS, order)
    op.create_index(
        "ix_parts_requisitions_requesting_location_id",
        _REQUISITIONS,
        ["requesting_location_id", *order],
    )
    for end in ("requesting", "source"):
        op.create_index(
            f"ix_parts_requisitions_{end}_key_created_at",
            _REQUISITIONS,
            [sa.text(f"lower({end}_location_id)"), *order],
        )
    op.create_index("ix_parts_requisitions_status_created_at", _REQUISITIONS, ["status", *order])
    due = ["due_at", "return_id"]
    op.create_index("ix_parts_returns_due_at", _RETURNS, due)
    op.create_index("ix_parts_returns_status_due_at", _RETURNS, ["status", *due])
    op.create_index("ix_parts_returns_region_due_at", _RETURNS, ["region", *due])
    op.create_index(
        "ix_parts_returns_service_point_key_due_at",
        _RETURNS,
        [sa.text("lower(service_point_id)"), *due],
    )


def downgrade() -> None:
    for name in (
        "ix_parts_returns_service_point_key_due_at",
        "ix_parts_returns_region_due_at",
        "ix_parts_returns_status_due_at",
        "ix_parts_returns_due_at",
    ):
        op.drop_index(name, table_name=_RETURNS)
    for name in (
        "ix_parts_requisitions_status_created_at",
        "ix_parts_requisitions_source_key_created_at",
        "ix_parts_requisitions_requesting_key_created_at",
        "ix_parts_requisitions_requesting_location_id",
        "ix_parts_requisitions_created_at",
    ):
        op.drop_index(name, table_name=_REQUISITIONS)
    op.create_index("ix_parts_returns_status_due_at", _RETURNS, ["status", "due_at"])
    op.create_index(
        "ix_parts_requisitions_requesting_location_id", _REQUISITIONS, ["requesting_location_id"]
    )

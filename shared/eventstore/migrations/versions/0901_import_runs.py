"""Imports of the replaced system's history: one row per import batch.

Revision ID: 0901_imports
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0901_imports"
down_revision = None
branch_labels = ("imports",)
depends_on = "0001_ledger"


def upgrade() -> None:
    op.create_table(
        "import_runs",
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("operator_role", sa.String(50), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("committed_line", sa.Integer, nullable=False),
        sa.Column("rows_imported", sa.Integer, nullable=False),
        sa.Column("rows_present", sa.Integer, nullable=False),
        sa.Column("rows_invalid", sa.Integer, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("finished_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("batch_id", name="pk_import_runs"),
    )
    op.create_index("ix_import_runs_kind_fingerprint", "import_runs", ["kind", "fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_import_runs_kind_fingerprint", table_name="import_runs")
    op.drop_table("import_runs")

"""Customers found by corrected contact details: ``personal_data_aliases`` holds the lookup
(keyed HMAC of name and phone) of every contact correction that names the customer, so
``POST /customers/lookup`` and a returning customer's next ticket find them by their
current details too. Corrections recorded before this revision have no alias.

Revision ID: 0009_customer_aliases
Revises: 0008_serial_key
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_customer_aliases"
down_revision = "0008_serial_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "personal_data_aliases",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_personal_data_aliases"),
    )
    op.create_index(
        "ix_personal_data_aliases_customer_id", "personal_data_aliases", ["customer_id"]
    )


def downgrade() -> None:
    op.drop_table("personal_data_aliases")

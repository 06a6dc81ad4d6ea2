"""Personal data: the key hierarchy, customers' blind indexes, the read log; ticket_state
holds the sealed form of its personal columns and names the customer.

- ``personal_data_master``: the key-encryption key and blind-index secret, wrapped by the
  master key (one row).
- ``personal_data_keys``: one data key per customer, wrapped; erasure destroys it.
- ``personal_data_phones``: blind index of the customers' phone numbers (search).
- ``personal_data_reads``: append-only log of responses that showed personal data.
- ``ticket_state``: ``customer_id`` (indexed in the list's order); the personal columns
  become TEXT (a sealed token is longer than the clear value); phone search goes through
  the blind index, so the index on the phone column goes.

Revision ID: 0006_personal_data_keys
Revises: 0005_ledger_guard
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0006_personal_data_keys"
down_revision = "0005_ledger_guard"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ORDER = ["created_at", "ticket_id"]
PERSONAL_COLUMNS = {"customer_name": 200, "customer_phone": 32, "address_line": 200}


def _keys() -> None:
    op.create_table(
        "personal_data_master",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("master_key_id", sa.String(100), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_personal_data_master"),
    )
    op.create_table(
        "personal_data_keys",
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("lookup", sa.String(64), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("erased_at", UtcDateTime, nullable=True),
        sa.Column("legal_hold", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("customer_id", name="pk_personal_data_keys"),
        sa.UniqueConstraint("lookup", name="uq_personal_data_keys_lookup"),
    )
    op.create_table(
        "personal_data_phones",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("digest", "customer_id", name="pk_personal_data_phones"),
    )
    op.create_index("ix_personal_data_phones_customer_id", "personal_data_phones", ["customer_id"])


def _reads() -> None:
    op.create_table(
        "personal_data_reads",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("read_at", UtcDateTime, nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("actor_subject", sa.String(200), nullable=False),
        sa.Column("actor_role", sa.String(50), nullable=False),
        sa.Column("service", sa.String(50), nullable=False),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("ticket_id", sa.String(64), nullable=True),
        sa.Column("correlation_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_personal_data_reads"),
    )
    op.create_index(
        "ix_personal_data_reads_customer_id_read_at",
        "personal_data_reads",
        ["customer_id", "read_at"],
    )
    op.create_index("ix_personal_data_reads_read_at", "personal_data_reads", ["read_at"])


def _ticket_state() -> None:
    op.add_column("ticket_state", sa.Column("customer_id", sa.String(36), nullable=True))
    op.drop_index("ix_ticket_state_customer_phone_created_at_ticket_id", table_name="ticket_state")
    op.create_index(
        "ix_ticket_state_customer_id_created_at_ticket_id",
        "ticket_state",
        ["customer_id", *ORDER],
    )
    if op.get_bind().dialect.name == "postgresql":  # SQLite does not enforce lengths
        for column, length in PERSONAL_COLUMNS.items():
            op.alter_column(
                "ticket_state", column, type_=sa.Text(), existing_type=sa.String(length)
            )


def upgrade() -> None:
    _keys()
    _reads()
    _ticket_state()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column, length in PERSONAL_COLUMNS.items():
            op.alter_column(
                "ticket_state", column, type_=sa.String(length), existing_type=sa.Text()
            )
    op.drop_index("ix_ticket_state_customer_id_created_at_ticket_id", table_name="ticket_state")
    op.create_index(
        "ix_ticket_state_customer_phone_created_at_ticket_id",
        "ticket_state",
        ["customer_phone", *ORDER],
    )
    with op.batch_alter_table("ticket_state") as batch:
        batch.drop_column("customer_id")
    for table in ("personal_data_reads", "personal_data_phones", "personal_data_keys"):
        op.drop_table(table)
    op.drop_table("personal_data_master")

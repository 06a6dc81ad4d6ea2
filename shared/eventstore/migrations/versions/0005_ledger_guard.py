"""Ledger guard: parked (poison) events, the stream a parked event blocks, and what the
relay last had acknowledged per topic partition.

- ``parked_events``: an event a projection or reactor could not apply after its
  retries, with the error; resolved by ``ticketline parked retry|skip``.
- ``projection_stream_versions.parked_version``: set while that stream has a parked
  event in that projection; the stream's later events wait (read from the ledger once it
  is resolved), so a stream is never applied out of order. Read with the versions, at no
  extra cost per batch.
- ``relay_offsets``: per partition, the offset and event id of the last message the
  relay had acknowledged; a later acknowledgement at or below that offset, or another
  message (or none) at that offset when the relay looks, means the broker lost messages
  (a rebuilt topic, a broker that came back empty), and the relay re-queues the history.

Revision ID: 0005_ledger_guard
Revises: 0004_ticket_list_indexes
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0005_ledger_guard"
down_revision = "0004_ticket_list_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "parked_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("projection", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("stream_version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parked_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_parked_events"),
        sa.UniqueConstraint("projection", "event_id", name="uq_parked_events_projection_event_id"),
    )
    op.create_index("ix_parked_events_status_projection", "parked_events", ["status", "projection"])
    op.add_column(
        "projection_stream_versions", sa.Column("parked_version", sa.Integer(), nullable=True)
    )
    op.create_table(
        "relay_offsets",
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("acked_offset", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name="pk_relay_offsets"),
    )


def downgrade() -> None:
    op.drop_table("relay_offsets")
    with op.batch_alter_table("projection_stream_versions") as batch:
        batch.drop_column("parked_version")
    op.drop_index("ix_parked_events_status_projection", table_name="parked_events")
    op.drop_table("parked_events")

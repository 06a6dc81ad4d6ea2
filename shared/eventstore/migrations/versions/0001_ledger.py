"""Ledger: events, sequence, outbox, leases, projection bookkeeping, idempotency keys.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0001_ledger"
down_revision = None
branch_labels = ("core",)
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    _create_events()
    _create_sequence_and_outbox()
    _create_bookkeeping()


def _create_events() -> None:
    op.create_table(
        "events",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("stream_type", sa.String(32), nullable=False),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("stream_version", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("actor_subject", sa.String(200), nullable=False),
        sa.Column("actor_role", sa.String(50), nullable=False),
        sa.Column("service", sa.String(50), nullable=False),
        sa.Column("correlation_id", sa.String(36), nullable=False),
        sa.Column("causation_id", sa.String(36), nullable=True),
        sa.Column("region", sa.String(32), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sa.UniqueConstraint(
            "stream_id", "stream_version", name="uq_events_stream_id_stream_version"
        ),
    )
    op.create_index("ix_events_stream_type_position", "events", ["stream_type", "position"])
    op.create_index("ix_events_region_position", "events", ["region", "position"])


def _create_sequence_and_outbox() -> None:
    op.create_table(
        "event_sequence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_sequence"),
    )
    op.execute("INSERT INTO event_sequence (id, last_position) VALUES (1, 0)")

    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("published_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("position", name="uq_outbox_position"),
        sa.ForeignKeyConstraint(
            ["position"], ["events.position"], name="fk_outbox_position_events"
        ),
    )
    op.create_index("ix_outbox_published_at_id", "outbox", ["published_at", "id"])


def _create_bookkeeping() -> None:
    """Leases, projection checkpoints and versions, idempotency records."""
    op.create_table(
        "leases",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.create_table(
        "projection_checkpoints",
        sa.Column("projection", sa.String(100), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("projection", name="pk_projection_checkpoints"),
    )
    op.create_table(
        "projection_stream_versions",
        sa.Column("projection", sa.String(100), nullable=False),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("projection", "stream_id", name="pk_projection_stream_versions"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("response_body", sa.Text, nullable=False),
        sa.Column("resource_location", sa.String(300), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    )


def downgrade() -> None:
    for table in (
        "idempotency_keys",
        "projection_stream_versions",
        "projection_checkpoints",
        "leases",
        "outbox",
        "event_sequence",
        "events",
    ):
        op.drop_table(table)

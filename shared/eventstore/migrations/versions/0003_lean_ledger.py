"""A lean ledger: fewer pages written per append.

- SQLite: ``events.position`` becomes the table's rowid (INTEGER PRIMARY KEY) instead of
  a separate index beside it.
- The outbox keeps only what is not yet published, keyed by the event's position; topic
  and key come from the event itself. Publishing deletes the rows (one statement a batch).

Revision ID: 0003_lean_ledger
Revises: 0002_ticket_state
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from shared.eventstore.db import UtcDateTime

revision = "0003_lean_ledger"
down_revision = "0002_ticket_state"
branch_labels = None
depends_on = None

_COLUMNS = (
    "position, event_id, stream_type, stream_id, stream_version, event_type, schema_version, "
    "occurred_at, recorded_at, actor_subject, actor_role, service, correlation_id, "
    "causation_id, region, payload, prev_hash, hash"
)


def _sqlite_events() -> None:
    op.execute(
        """CREATE TABLE events_lean (
    position INTEGER NOT NULL,
    event_id VARCHAR(36) NOT NULL,
    stream_type VARCHAR(32) NOT NULL,
    stream_id VARCHAR(64) NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type VARCHAR(64) NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at DATETIME NOT NULL,
    recorded_at DATETIME NOT NULL,
    actor_subject VARCHAR(200) NOT NULL,
    actor_role VARCHAR(50) NOT NULL,
    service VARCHAR(50) NOT NULL,
    correlation_id VARCHAR(36) NOT NULL,
    causation_id VARCHAR(36),
    region VARCHAR(32),
    payload TEXT NOT NULL,
    prev_hash VARCHAR(64) NOT NULL,
    hash VARCHAR(64) NOT NULL,
    CONSTRAINT pk_events PRIMARY KEY (position),
    CONSTRAINT uq_events_event_id UNIQUE (event_id),
    CONSTRAINT uq_events_stream_id_stream_version UNIQUE (stream_id, stream_version)
)"""
    )
    op.execute(f"INSERT INTO events_lean ({_COLUMNS}) SELECT {_COLUMNS} FROM events")
    op.execute("DROP TABLE events")
    op.execute("ALTER TABLE events_lean RENAME TO events")
    op.create_index("ix_events_stream_type_position", "events", ["stream_type", "position"])
    op.create_index("ix_events_region_position", "events", ["region", "position"])


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "outbox_pending",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_outbox_pending"),
    )
    op.execute(
        "INSERT INTO outbox_pending (position) "
        "SELECT position FROM outbox WHERE published_at IS NULL"
    )
    op.drop_table("outbox")
    op.rename_table("outbox_pending", "outbox")
    if sqlite:
        _sqlite_events()
    else:
        op.execute("ALTER TABLE outbox RENAME CONSTRAINT pk_outbox_pending TO pk_outbox")


def downgrade() -> None:
    raise NotImplementedError("the lean ledger is not downgraded; restore a backup instead")


_ = UtcDateTime  # the column types above are the ones tables.py declares

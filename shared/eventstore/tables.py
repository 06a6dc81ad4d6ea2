"""Tables of the ledger, the outbox and the runners' bookkeeping.

The schema itself is created by Alembic (``shared/eventstore/migrations``); these definitions are
what the code queries with and must stay in step with the migrations (a test checks).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.sql.expression import ColumnElement, FromClause

from shared.eventstore.db import UtcDateTime, metadata
from shared.kernel.events.customers import CustomerDataErased
from shared.kernel.events.ledger import LedgerCheckpointed
from shared.kernel.events.tickets import TicketRepaired

# SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

_REPAIRED_ONLY = f"event_type = '{TicketRepaired.event_type}'"

events = Table(
    "events",
    metadata,
    # Assigned from event_sequence inside the appending transaction: gap-free and in
    # commit order, so readers may safely resume from "position > checkpoint". On SQLite
    # it is the table's rowid.
    Column("position", BigId, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("stream_type", String(32), nullable=False),
    Column("stream_id", String(64), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("actor_subject", String(200), nullable=False),
    Column("actor_role", String(50), nullable=False),
    Column("service", String(50), nullable=False),
    Column("correlation_id", String(36), nullable=False),
    Column("causation_id", String(36), nullable=True),
    Column("region", String(32), nullable=True),
    # Canonical JSON text, never JSONB: the stored bytes are what the hash covers.
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("stream_id", "stream_version"),
    Index("ix_events_stream_type_position", "stream_type", "position"),
    Index("ix_events_region_position", "region", "position"),
    # The repairs of a day (the quality job, every minute): only the repair events are
    # in it, so other appends do not pay for it. A query must name the type as a literal
    # (``repairs_only``): neither planner proves the predicate from a bound parameter.
    Index(
        "ix_events_repaired_occurred_at",
        "occurred_at",
        sqlite_where=text(_REPAIRED_ONLY),
        postgresql_where=text(_REPAIRED_ONLY),
    ),
)


# Streams of no region that regions' callers receive: the signed ledger checkpoints
# (every center keeps them, docs/checkpoints.md) and the customers' erasures and legal
# holds (a center holding a customer's tickets must learn of them: which regions, and
# what of them, is ``shared.readmodels.ticket_state.seen_by_region`` and the streams').
LEDGER_STREAM = LedgerCheckpointed.stream_type
CUSTOMER_STREAM = CustomerDataErased.stream_type
EVERY_REGIONS_STREAMS = (LEDGER_STREAM, CUSTOMER_STREAM)


def repairs_only(table: FromClause) -> ColumnElement[bool]:
    """``table`` (``events`` or an alias of it) narrowed to the repair events, in the words
    the partial index ``ix_events_repaired_occurred_at`` is made of."""
    return table.c.event_type == literal_column(f"'{TicketRepaired.event_type}'")


event_sequence = Table(
    "event_sequence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_position", BigInteger, nullable=False),
)

# Events not yet published to Kafka, by position (topic and key come from the event):
# written with the events, deleted once the broker acknowledged them.
outbox = Table(
    "outbox",
    metadata,
    Column("position", BigId, primary_key=True, autoincrement=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("projection", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Last stream version each projection applied, per stream: makes every projection
# idempotent under duplicate delivery and lets a consumer detect gaps.
projection_stream_versions = Table(
    "projection_stream_versions",
    metadata,
    Column("projection", String(100), primary_key=True),
    Column("stream_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    # Set while the stream has a parked event in this projection (parked_events): the
    # stream's later events wait until it is resolved, so none is applied out of order.
    Column("parked_version", Integer, nullable=True),
)

# Events a projection or reactor could not apply after its retries (poison events):
# status "parked" until `ticketline parked retry|skip` resolves it ("retried", "skipped").
parked_events = Table(
    "parked_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("projection", String(100), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("stream_id", String(64), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("parked_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("resolved_by", String(200), nullable=True),
    UniqueConstraint("projection", "event_id"),
    Index("ix_parked_events_status_projection", "status", "projection"),
)

# Per topic partition, the last message the relay had acknowledged (offset, event id): a
# later acknowledgement at or below that offset, or another message (or none) at that
# offset when the relay looks, means the broker lost messages, and the relay re-queues
# the history. (Compared by content, not by end offsets: a rebuilt log may already be
# longer than the old one, and some brokers report ends short.)
relay_offsets = Table(
    "relay_offsets",
    metadata,
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("acked_offset", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(100), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("resource_location", String(300), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_idempotency_keys_created_at", "created_at"),
)


# The record of each import of another system's history (``ticketline import``): one row
# per import batch — the batch id every imported event carries as correlation and
# causation id (shared/kernel/imports.py), the file (its SHA-256: the same file resumes
# its unfinished run), its kind, who ran it, and how far it got: the last input line
# committed, updated in the transaction of each batch's events.
import_runs = Table(
    "import_runs",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("source", String(300), nullable=False),
    # SHA-256 of the file's bytes: the same file resumes its unfinished run.
    Column("fingerprint", String(64), nullable=False),
    Column("operator", String(200), nullable=False),
    Column("operator_role", String(50), nullable=False),
    Column("mode", String(20), nullable=False),
    # running (or interrupted while running) | completed | failed
    Column("status", String(20), nullable=False),
    Column("committed_line", Integer, nullable=False),
    Column("rows_imported", Integer, nullable=False),
    Column("rows_present", Integer, nullable=False),
    Column("rows_invalid", Integer, nullable=False),
    Column("events", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    Index("ix_import_runs_kind_fingerprint", "kind", "fingerprint"),
)

"""The parts service's own tables (the schema is created by its Alembic branch).

All but ``parts_reactor_triggers`` are read models written by the projections in
``projections.py`` (inline by the command handlers, so a caller reads its own writes).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)

from shared.eventstore.db import UtcDateTime, metadata

parts_catalogue = Table(
    "parts_catalogue",
    metadata,
    Column("part_number", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    # JSON list of product models; empty list = fits any model.
    Column("fits_models", Text, nullable=False),
    Column("unit_cost", Float, nullable=False),
    Column("return_required", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

parts_locations = Table(
    "parts_locations",
    metadata,
    Column("location_id", String(24), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("level", String(20), nullable=False),
    Column("parent_id", String(24), nullable=True),
    Column("region", String(32), nullable=True),
    Column("registered_at", UtcDateTime, nullable=False),
)

# The stock level per location and part. The decision is taken on the stock stream with
# its expected version; these CHECKs are the second line of defence against negatives.
parts_stock = Table(
    "parts_stock",
    metadata,
    Column("location_id", String(24), primary_key=True),
    Column("part_number", String(32), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("issued", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
    CheckConstraint("reserved >= 0 AND reserved <= on_hand", name="reserved_within_on_hand"),
    CheckConstraint("issued >= 0", name="issued_not_negative"),
)

# Consumption per calendar month (UTC), the input of the replenishment suggestion.
parts_monthly_usage = Table(
    "parts_monthly_usage",
    metadata,
    Column("location_id", String(24), primary_key=True),
    Column("part_number", String(32), primary_key=True),
    Column("month", String(7), primary_key=True),  # YYYY-MM
    Column("quantity", Integer, nullable=False),
)

parts_requisitions = Table(
    "parts_requisitions",
    metadata,
    Column("requisition_id", String(36), primary_key=True),
    Column("ticket_id", String(200), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("part_number", String(32), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("requesting_location_id", String(24), nullable=False),
    # The requesting location's region (None: headquarters'), a regional center's reach.
    Column("region", String(32), nullable=True),
    Column("source_location_id", String(24), nullable=True),
    Column("technician_id", String(200), nullable=True),
    Column("status", String(12), nullable=False),
    Column("issued_quantity", Integer, nullable=False),
    Column("consumed_quantity", Integer, nullable=False),
    Column("returned_quantity", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_parts_requisitions_ticket_id", "ticket_id"),
    # The list's pages, newest first, by each filter (migrations 0302, 0303): a location's
    # by either end (ids compare without case).
    Index("ix_parts_requisitions_created_at", "created_at", "requisition_id"),
    Index(
        "ix_parts_requisitions_requesting_location_id",
        "requesting_location_id",
        "created_at",
        "requisition_id",
    ),
    *(
        Index(
            f"ix_parts_requisitions_{end}_key_created_at",
            text(f"lower({end}_location_id)"),
            "created_at",
            "requisition_id",
        )
        for end in ("requesting", "source")
    ),
    Index("ix_parts_requisitions_status_created_at", "status", "created_at", "requisition_id"),
    Index("ix_parts_requisitions_region_created_at", "region", "created_at", "requisition_id"),
)

# Old-part returns: one row per expected return (event OldPartReturnExpected).
parts_returns = Table(
    "parts_returns",
    metadata,
    Column("return_id", String(80), primary_key=True),  # <stream id>:<stream version>
    Column("ticket_id", String(200), nullable=False),
    Column("part_number", String(200), nullable=False),
    Column("old_serial", String(200), nullable=True),
    Column("quantity", Integer, nullable=False),
    Column("returned_quantity", Integer, nullable=False),
    Column("service_point_id", String(200), nullable=True),
    Column("region", String(32), nullable=True),
    Column("due_at", UtcDateTime, nullable=False),
    Column("status", String(10), nullable=False),  # expected | overdue | returned
    Column("returned_at", UtcDateTime, nullable=True),
    Column("returned_location_id", String(200), nullable=True),
    Column("late", Boolean, nullable=False),  # some of it came back late
    Column("late_quantity", Integer, nullable=False),  # how much (migration 0304)
    Column("grade", String(10), nullable=True),
    Column("overdue_detected_at", UtcDateTime, nullable=True),
    Column("expected_at", UtcDateTime, nullable=False),
    Index("ix_parts_returns_ticket_id", "ticket_id"),
    Index("ix_parts_returns_service_point_id_status", "service_point_id", "status"),
    # The list's pages, earliest due first, by each filter (migration 0302).
    Index("ix_parts_returns_due_at", "due_at", "return_id"),
    Index("ix_parts_returns_status_due_at", "status", "due_at", "return_id"),
    Index("ix_parts_returns_region_due_at", "region", "due_at", "return_id"),
    Index(
        "ix_parts_returns_service_point_key_due_at",
        text("lower(service_point_id)"),
        "due_at",
        "return_id",
    ),
)

# The repair reactor's own record of the ticket events it has handled (repairs, closings;
# by event id), so that a redelivery — even under another stream version bookkeeping — is a no-op.
parts_reactor_triggers = Table(
    "parts_reactor_triggers",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("handled_at", UtcDateTime, nullable=False),
)

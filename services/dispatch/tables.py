"""Dispatch's own tables (the schema is created by its Alembic branch)."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, Index, Integer, String, Table

from shared.eventstore.db import UtcDateTime, metadata

# The service network as it stands (projection `dispatch_network`, also applied inline).
service_points = Table(
    "dispatch_service_points",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("level", String(20), nullable=False),
    Column("kind", String(20), nullable=True),
    Column("parent_id", String(100), nullable=True),
    Column("region", String(32), nullable=True),
    Column("postcodes", JSON, nullable=False),
    Column("address", String(200), nullable=True),
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_dispatch_service_points_region", "region"),
)

technicians = Table(
    "dispatch_technicians",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("service_point_id", String(100), nullable=False),
    Column("skills", JSON, nullable=False),
    Column("working_hours", JSON, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_dispatch_technicians_service_point_id", "service_point_id"),
)

# What the work lists flag on a ticket (projection `dispatch_ticket_flags`): escalations,
# SLA breaches, repeat repairs. A row exists once a ticket has any flag.
ticket_flags = Table(
    "dispatch_ticket_flags",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("escalated", Boolean, nullable=False),
    Column("escalation_level", String(20), nullable=True),
    Column("escalation_cause", String(20), nullable=True),
    Column("response_breached_at", UtcDateTime, nullable=True),
    Column("resolution_breached_at", UtcDateTime, nullable=True),
    Column("repeat_of_ticket_id", String(100), nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

# The SLA clock of every ticket as it stood at its latest event (projection
# `dispatch_sla_clocks`): pinned policy, pause, the deadlines moved by pauses, the
# highest warning recorded, and when the SLA job next has something to record.
sla_clocks = Table(
    "dispatch_sla_clocks",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("policy_id", String(48), nullable=True),
    Column("policy_version", Integer, nullable=True),
    Column("paused", Boolean, nullable=False),
    Column("pause_reason", String(50), nullable=True),
    Column("paused_since", UtcDateTime, nullable=True),
    Column("response_status", String(10), nullable=False),
    Column("response_due_at", UtcDateTime, nullable=True),
    Column("resolution_status", String(10), nullable=True),
    Column("resolution_due_at", UtcDateTime, nullable=True),
    Column("due_at", UtcDateTime, nullable=True),
    Column("next_check_at", UtcDateTime, nullable=True),
    Column("warning_level", String(20), nullable=True),
    Column("warning_percent", Float, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_dispatch_sla_clocks_next_check_at", "next_check_at"),
)

# The calendars and SLA policies as they stand (projection `dispatch_sla_terms`).
sla_terms = Table(
    "dispatch_sla_terms",
    metadata,
    Column("kind", String(20), primary_key=True),
    Column("id", String(48), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("description", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

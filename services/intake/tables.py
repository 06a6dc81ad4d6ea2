"""Intake's own tables (the schema is created by its Alembic branch)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table

from shared.eventstore.db import metadata

# Per-day counter behind human-readable ticket numbers (TL-20261122-000123).
ticket_number_counters = Table(
    "intake_ticket_number_counters",
    metadata,
    Column("day", String(8), primary_key=True),
    Column("last_number", Integer, nullable=False),
)

"""The record of each import of another system's history (``ticketline import``).

One row per import batch: the batch id every imported event carries (correlation and
causation id, ``shared/kernel/imports.py``), the file and its kind, who ran it, and how far
it got — the last input line committed, updated in the same transaction as the events of
each batch of rows, so an interrupted import resumes after that line under the same id.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table

from shared.eventstore.db import UtcDateTime, metadata

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

"""The feedback service's read tables (projections; schema by its Alembic branch).

JSON columns are canonical JSON text, so a rebuilt row is byte-identical to a live one.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from services.feedback.compliance import ITEMS
from shared.eventstore.db import UtcDateTime, metadata

ITEM_COLUMN = String(8)  # "true" | "false" | "pending"
# What summaries count by status: the verdict, the checklist, first-time fix.
TALLY_COLUMNS = ("compliant", *ITEMS, "first_time_fix")

# What a page of tickets filters by (`compliant`, `failing`).
VERDICTS = ("compliant", *ITEMS)
STAFF_COUNTS = (
    "technician_visits",
    "technician_visits_on_time",
    "technician_repairs",
    "technician_repairs_as_expected",
    "follow_up_count",
    "follow_up_score_total",
    "corrections",
)

# One row per ticket: the closed-loop checklist with its evidence and the facts the
# aggregates, KPIs and scorecards are computed from.
compliance_tickets = Table(
    "feedback_compliance_tickets",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("ticket_number", String(32), nullable=False),
    Column("region", String(32), nullable=False),
    Column("month", String(7), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("product_model", String(200), nullable=False),
    Column("fault_category", String(20), nullable=True),
    Column("agent_id", String(200), nullable=True),
    Column("service_point_id", String(200), nullable=True),
    Column("technician_id", String(200), nullable=True),
    Column("status", String(20), nullable=False),
    Column("compliant", ITEM_COLUMN, nullable=False),
    Column("responded_within_sla", ITEM_COLUMN, nullable=False),
    Column("resolved_within_sla", ITEM_COLUMN, nullable=False),
    Column("visited_before_repair", ITEM_COLUMN, nullable=False),
    Column("follow_up_done", ITEM_COLUMN, nullable=False),
    Column("satisfied", ITEM_COLUMN, nullable=False),
    Column("parts_returned", ITEM_COLUMN, nullable=False),
    Column("steps_in_order", ITEM_COLUMN, nullable=False),
    Column("first_time_fix", ITEM_COLUMN, nullable=False),
    Column("checklist", Text, nullable=False),
    Column("facts", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("complaints", Integer, nullable=False, server_default="0"),
    # What the staff KPIs add up (migration 0403), so scorecards never decode ``facts``:
    # the visits and repairs of the ticket's technician, the follow-ups' scores, the
    # contact-detail corrections.
    *(Column(name, Integer, nullable=False, server_default="0") for name in STAFF_COUNTS),
    # Summaries count from this index alone, never reading the rows' documents.
    Index(
        "ix_feedback_compliance_tickets_tally",
        "month",
        "region",
        "service_point_id",
        *TALLY_COLUMNS,
        "complaints",
    ),
    # Pages in ticket-number order walk one of these, picked by the page's equality
    # filters (a month, a region — a regional center's reach —, both, a service point or a
    # technician, with or without a month), and stop at the page's end; the verdicts in
    # them let a `compliant` or `failing` filter skip rows without reading them.
    *(
        Index(f"ix_feedback_compliance_tickets_{name}", *lead, "ticket_number", *VERDICTS)
        for name, lead in (
            ("number", ()),
            ("month_number", ("month",)),
            ("region_number", ("region",)),
            ("month_region_number", ("month", "region")),
        )
    ),
    *(
        Index(f"ix_feedback_compliance_tickets_{name}", *lead, "ticket_number")
        for name, lead in (
            ("point_number", ("service_point_id",)),
            ("point_month_number", ("service_point_id", "month")),
            ("technician_number", ("technician_id",)),
            ("technician_month_number", ("technician_id", "month")),
        )
    ),
)

# Scorecard items that come from ticket events (one row per item, per ticket).
scorecard_deductions = Table(
    "feedback_scorecard_deductions",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    Column("month", String(7), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("service_point_id", String(200), nullable=True),
    Column("region", String(32), nullable=False),
    Column("earlier_ticket_id", String(200), nullable=True),
    Column("event_ids", Text, nullable=False),
    Index("ix_feedback_scorecard_deductions_month", "month"),
)

# One row per repair event: the daily counts per product model and fault category.
repairs = Table(
    "feedback_repairs",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("ticket_id", String(36), nullable=False),
    Column("day", String(10), nullable=False),
    Column("product_model", String(200), nullable=False),
    Column("fault_category", String(20), nullable=False),
    Index("ix_feedback_repairs_day", "day"),
    Index("ix_feedback_repairs_ticket_id", "ticket_id"),
)

# One row per follow-up, with its ticket's month, region and service point (rewritten with
# the ticket's row): satisfaction bands and NPS counted from an index alone.
follow_ups = Table(
    "feedback_follow_ups",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("ticket_id", String(36), nullable=False),
    Column("month", String(7), nullable=False),
    Column("region", String(32), nullable=False),
    Column("service_point_id", String(200), nullable=True),
    Column("score", Integer, nullable=False),
    Column("would_recommend", Integer, nullable=False),
    Index("ix_feedback_follow_ups_ticket_id", "ticket_id"),
    Index(
        "ix_feedback_follow_ups_tally",
        "month",
        "region",
        "service_point_id",
        "score",
        "would_recommend",
    ),
)

# Per ticket and technician who worked it: their visits and repairs on it (with the
# ticket's month, region and service point, rewritten with its row). A technician's
# timeliness and parts usage count every visit and repair they made, also on a ticket
# re-dispatched to someone else since (migration 0406).
TECHNICIAN_WORK = (
    "visits",
    "visits_on_time",
    "repairs",
    "repairs_as_expected",
    # Their first repair of the ticket decided (first-time fix true or false), and fixed;
    # the follow-ups of their repairs, and the scores' total (migration 0407).
    "first_repairs_decided",
    "first_time_fixes",
    "ratings",
    "rating_total",
)
technician_work = Table(
    "feedback_technician_work",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("technician_id", String(200), primary_key=True),
    Column("month", String(7), nullable=False),
    Column("region", String(32), nullable=False),
    Column("service_point_id", String(200), nullable=True),
    *(Column(name, Integer, nullable=False) for name in TECHNICIAN_WORK),
    Index("ix_feedback_technician_work_month", "month", "technician_id"),
)

# Manual scorecard items (entered by admin), from the ``scorecard`` streams.
scorecard_items = Table(
    "feedback_scorecard_items",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("service_point_id", String(200), nullable=False),
    Column("region", String(32), nullable=True),
    Column("item", String(32), nullable=False),
    Column("month", String(7), nullable=False),
    Column("occurred_on", String(10), nullable=False),
    Column("evidence", Text, nullable=False),
    Column("ticket_ids", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Index("ix_feedback_scorecard_items_month", "month"),
)

# Quality alerts, from the ``quality`` streams.
quality_alerts = Table(
    "feedback_quality_alerts",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("day", String(10), nullable=False),
    Column("product_model", String(200), nullable=False),
    Column("fault_category", String(20), nullable=False),
    Column("count", Integer, nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("ticket_ids", Text, nullable=False),
    Column("raised_at", UtcDateTime, nullable=False),
    Index("ix_feedback_quality_alerts_day", "day"),
)

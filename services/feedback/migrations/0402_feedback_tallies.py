"""Feedback: summaries counted from an index and a follow-ups table, not the rows'
documents (the console's compliance pages over six months of 100k tickets).

- ``feedback_compliance_tickets.complaints``: how many complaints (filled from ``facts``).
- ``feedback_follow_ups``: one row per follow-up, score and would-recommend, with its
  ticket's month, region and service point (filled from ``facts``).
- ``ix_feedback_compliance_tickets_tally`` (month, region, service point, the checklist's
  statuses, complaints) replaces ``…_month_region``, its prefix.

Revision ID: 0402_feedback_tallies
Revises: 0401_feedback
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0402_feedback_tallies"
down_revision = "0401_feedback"
branch_labels = None
depends_on = None

TABLE = "feedback_compliance_tickets"
TALLY = (
    "month",
    "region",
    "service_point_id",
    "compliant",
    "responded_within_sla",
    "resolved_within_sla",
    "visited_before_repair",
    "follow_up_done",
    "satisfied",
    "parts_returned",
    "steps_in_order",
    "first_time_fix",
    "complaints",
)

FOLLOW_UP_COLUMNS = "event_id, ticket_id, month, region, service_point_id, score, would_recommend"
BACKFILL = {
    "sqlite": (
        f"UPDATE {TABLE} SET complaints = json_array_length(facts, '$.complaints')",
        f"INSERT INTO feedback_follow_ups ({FOLLOW_UP_COLUMNS}) "
        "SELECT json_extract(f.value, '$.event_id'), t.ticket_id, t.month, t.region, "
        "t.service_point_id, "
        "json_extract(f.value, '$.score'), json_extract(f.value, '$.would_recommend') "
        f"FROM {TABLE} AS t, json_each(t.facts, '$.follow_ups') AS f",
    ),
    "postgresql": (
        f"UPDATE {TABLE} SET complaints = jsonb_array_length(CAST(facts AS jsonb) -> 'complaints')",
        f"INSERT INTO feedback_follow_ups ({FOLLOW_UP_COLUMNS}) "
        "SELECT f.value ->> 'event_id', t.ticket_id, t.month, t.region, t.service_point_id, "
        "CAST(f.value ->> 'score' AS integer), "
        "CAST(f.value ->> 'would_recommend' AS integer) "
        f"FROM {TABLE} AS t, jsonb_array_elements(CAST(t.facts AS jsonb) -> 'follow_ups') AS f",
    ),
}


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("complaints", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "feedback_follow_ups",
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("service_point_id", sa.String(200), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("would_recommend", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_feedback_follow_ups"),
    )
    op.create_index("ix_feedback_follow_ups_ticket_id", "feedback_follow_ups", ["ticket_id"])
    op.create_index(
        "ix_feedback_follow_ups_tally",
        "feedback_follow_ups",
        ["month", "region", "service_point_id", "score", "would_recommend"],
    )
    for statement in BACKFILL[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_index("ix_feedback_compliance_tickets_month_region", table_name=TABLE)
    op.create_index("ix_feedback_compliance_tickets_tally", TABLE, list(TALLY))


def downgrade() -> None:
    op.drop_index("ix_feedback_compliance_tickets_tally", table_name=TABLE)
    op.create_index("ix_feedback_compliance_tickets_month_region", TABLE, ["month", "region"])
    op.drop_table("feedback_follow_ups")
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("complaints")

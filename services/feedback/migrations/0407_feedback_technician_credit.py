"""Feedback: a technician's first-time fix and customer rating credited to who did the
work — first-time fix to whoever made the ticket's first repair, each follow-up's score
to whoever made the repair it followed up — not to the ticket's last dispatched
technician (who, fixing a reopened ticket, took its failed first repair and its
dissatisfied follow-up). Filled from each row's ``facts`` by the projection's rule
(``technician_work_rows``).

Revision ID: 0407_feedback_technician_credit
Revises: 0406_feedback_technician_work
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0407_feedback_technician_credit"
down_revision = "0406_feedback_technician_work"
branch_labels = None
depends_on = None

TABLE = "feedback_technician_work"
SOURCE = "feedback_compliance_tickets"
COUNTS = ("first_repairs_decided", "first_time_fixes", "ratings", "rating_total")


def _sql(dialect: str) -> tuple[str, str, str]:
    """(the first repair's technician, the follow-ups' count, their scores' total) of the
    ticket and technician of the row being updated."""
    if dialect == "postgresql":
        facts = "CAST(c.facts AS jsonb)"
        first = f"{facts} -> 'repairs' -> 0 ->> 'technician_id'"
        pairs = (
            f"jsonb_array_elements({facts} -> 'follow_ups') AS f, "
            f"jsonb_array_elements({facts} -> 'repairs') AS r"
        )
        joined = "f.value ->> 'repair_event_id' = r.value ->> 'event_id'"
        tech, score = "r.value ->> 'technician_id'", "CAST(f.value ->> 'score' AS integer)"
    else:
        first = "json_extract(c.facts, '$.repairs[0].technician_id')"
        pairs = "json_each(c.facts, '$.follow_ups') AS f, json_each(c.facts, '$.repairs') AS r"
        joined = "json_extract(f.value, '$.repair_event_id') = json_extract(r.value, '$.event_id')"
        tech, score = "json_extract(r.value, '$.technician_id')", "json_extract(f.value, '$.score')"
    mine = f"c.ticket_id = {TABLE}.ticket_id"
    followed = (
        f"FROM {SOURCE} AS c, {pairs} WHERE {mine} AND {joined} AND {tech} = {TABLE}.technician_id"
    )
    return (
        f"(SELECT {first} FROM {SOURCE} AS c WHERE {mine})",
        f"(SELECT count(*) {followed})",
        f"(SELECT COALESCE(sum({score}), 0) {followed})",
    )


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.Integer, nullable=False, server_default="0"))
    first, ratings, total = _sql(op.get_bind().dialect.name)
    verdict = f"(SELECT c.first_time_fix FROM {SOURCE} AS c WHERE c.ticket_id = {TABLE}.ticket_id)"
    op.execute(
        f"UPDATE {TABLE} SET first_repairs_decided = 1, "
        f"first_time_fixes = CASE WHEN {verdict} = 'true' THEN 1 ELSE 0 END "
        f"WHERE technician_id = {first} AND {verdict} IN ('true', 'false')"
    )
    op.execute(f"UPDATE {TABLE} SET ratings = {ratings}, rating_total = {total}")


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name in COUNTS:
            batch.drop_column(name)

"""Feedback: the staff KPIs' counts as columns of ``feedback_compliance_tickets``
(filled from ``facts``), so scorecards add them up in SQL instead of decoding every
ticket's document of the month.

- ``technician_visits`` / ``technician_visits_on_time``: the visits of the ticket's
  technician (its last dispatch), and those that arrived by the appointment's end;
- ``technician_repairs`` / ``technician_repairs_as_expected``: that technician's repairs,
  and those that used only parts the diagnosis expected;
- ``follow_up_count`` / ``follow_up_score_total``: every follow-up and their scores' sum;
- ``corrections``: the contact-detail corrections.

Revision ID: 0403_feedback_staff_counts
Revises: 0402_feedback_tallies
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0403_feedback_staff_counts"
down_revision = "0402_feedback_tallies"
branch_labels = None
depends_on = None

TABLE = "feedback_compliance_tickets"
COLUMNS = (
    "technician_visits",
    "technician_visits_on_time",
    "technician_repairs",
    "technician_repairs_as_expected",
    "follow_up_count",
    "follow_up_score_total",
    "corrections",
)


def _sqlite(array: str, where: str = "1", total: str = "count(*)") -> str:
    return f"(SELECT {total} FROM json_each({TABLE}.facts, '$.{array}') AS x WHERE {where})"


def _postgresql(array: str, where: str = "true", total: str = "count(*)") -> str:
    return (
        f"(SELECT {total} FROM jsonb_array_elements(CAST({TABLE}.facts AS jsonb) -> '{array}') "
        f"AS x WHERE {where})"
    )


MINE_SQLITE = f"json_extract(x.value, '$.technician_id') = {TABLE}.technician_id"
MINE_POSTGRESQL = f"(x.value ->> 'technician_id') = {TABLE}.technician_id"
BACKFILL = {
    "sqlite": {
        "technician_visits": _sqlite("visits", MINE_SQLITE),
        "technician_visits_on_time": _sqlite(
            "visits", f"{MINE_SQLITE} AND json_extract(x.value, '$.on_time') = 1"
        ),
        "technician_repairs": _sqlite("repairs", MINE_SQLITE),
        "technician_repairs_as_expected": _sqlite(
            "repairs", f"{MINE_SQLITE} AND json_extract(x.value, '$.parts_as_expected') = 1"
        ),
        "follow_up_count": _sqlite("follow_ups"),
        "follow_up_score_total": _sqlite(
            "follow_ups", total="coalesce(sum(json_extract(x.value, '$.score')), 0)"
        ),
        "corrections": _sqlite("corrections"),
    },
    "postgresql": {
        "technician_visits": _postgresql("visits", MINE_POSTGRESQL),
        "technician_visits_on_time": _postgresql(
            "visits", f"{MINE_POSTGRESQL} AND CAST(x.value ->> 'on_time' AS boolean)"
        ),
        "technician_repairs": _postgresql("repairs", MINE_POSTGRESQL),
        "technician_repairs_as_expected": _postgresql(
            "repairs", f"{MINE_POSTGRESQL} AND CAST(x.value ->> 'parts_as_expected' AS boolean)"
        ),
        "follow_up_count": _postgresql("follow_ups"),
        "follow_up_score_total": _postgresql(
            "follow_ups", total="coalesce(sum(CAST(x.value ->> 'score' AS integer)), 0)"
        ),
        "corrections": _postgresql("corrections"),
    },
}


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column(TABLE, sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    counts = BACKFILL[op.get_bind().dialect.name]
    op.execute(f"UPDATE {TABLE} SET " + ", ".join(f"{n} = {counts[n]}" for n in COLUMNS))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name in COLUMNS:
            batch.drop_column(name)

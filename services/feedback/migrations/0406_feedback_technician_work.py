"""Feedback: ``feedback_technician_work`` — per ticket and technician who worked it, their
visits and repairs on it, so a technician's timeliness and parts usage count every visit
and repair they made (the ticket's own row counts only its last dispatched technician's:
a re-dispatched ticket's earlier visits counted for no one). Filled from each row's
``facts`` by the projection's rule (``technician_work_rows``).

Revision ID: 0406_feedback_technician_work
Revises: 0405_feedback_month_pages
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0406_feedback_technician_work"
down_revision = "0405_feedback_month_pages"
branch_labels = None
depends_on = None

TABLE = "feedback_technician_work"
SOURCE = "feedback_compliance_tickets"
COUNTS = ("visits", "visits_on_time", "repairs", "repairs_as_expected")


def _work(dialect: str) -> str:
    """(ticket, technician, visit, on time, repair, as expected) per visit and repair."""
    if dialect == "postgresql":
        each = "jsonb_array_elements(CAST(c.facts AS jsonb) -> '{}') AS x"
        tech, flag = (
            "x.value ->> 'technician_id'",
            "CASE WHEN CAST(x.value ->> '{}' AS boolean) THEN 1 ELSE 0 END",
        )
    else:
        each = "json_each(c.facts, '$.{}') AS x"
        tech, flag = (
            "json_extract(x.value, '$.technician_id')",
            "CASE WHEN json_extract(x.value, '$.{}') = 1 THEN 1 ELSE 0 END",
        )
    visits = f"SELECT c.ticket_id, {tech} AS tech, 1 AS v, {flag.format('on_time')} AS vt, 0 AS r, 0 AS re FROM {SOURCE} AS c, {each.format('visits')}"
    repairs = f"SELECT c.ticket_id, {tech} AS tech, 0, 0, 1, {flag.format('parts_as_expected')} FROM {SOURCE} AS c, {each.format('repairs')}"
    return f"{visits} UNION ALL {repairs}"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("ticket_id", sa.String(36), primary_key=True),
        sa.Column("technician_id", sa.String(200), primary_key=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("service_point_id", sa.String(200), nullable=True),
        *(sa.Column(name, sa.Integer, nullable=False) for name in COUNTS),
    )
    op.create_index(f"ix_{TABLE}_month", TABLE, ["month", "technician_id"])
    work = _work(op.get_bind().dialect.name)
    op.execute(
        f"INSERT INTO {TABLE} (ticket_id, technician_id, month, region, service_point_id, "
        f"{', '.join(COUNTS)}) "
        "SELECT t.ticket_id, w.tech, t.month, t.region, t.service_point_id, "
        "sum(w.v), sum(w.vt), sum(w.r), sum(w.re) "
        f"FROM {SOURCE} AS t JOIN ({work}) AS w ON w.ticket_id = t.ticket_id "
        "WHERE w.tech IS NOT NULL AND w.tech <> '' "
        "GROUP BY t.ticket_id, w.tech, t.month, t.region, t.service_point_id"
    )


def downgrade() -> None:
    op.drop_index(f"ix_{TABLE}_month", table_name=TABLE)
    op.drop_table(TABLE)

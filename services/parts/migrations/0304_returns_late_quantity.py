"""How much of an expected return came back late: a return settled in two parts, one on
time and one late, counted wholly late in the summary's `returned_late`.

Filled from the ledger: a row with nothing late has none; a row that took one unit back
late took that unit; a row that took several back, some late, sums its ticket's late
`OldPartReturned` events of that part, due time and old serial (what a return settles).

Revision ID: 0304_returns_late_quantity
Revises: 0303_requisition_region
Create Date: 2026-11-29
"""

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0304_returns_late_quantity"
down_revision = "0303_requisition_region"
branch_labels = None
depends_on = None


def _instant(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _serial(value: Any) -> str | None:
    return str(value).strip().upper() or None if value else None


def upgrade() -> None:
    op.add_column(
        "parts_returns",
        sa.Column("late_quantity", sa.Integer(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE parts_returns SET late_quantity = returned_quantity WHERE late")
    conn = op.get_bind()
    split = conn.execute(
        sa.text(
            "SELECT return_id, ticket_id, part_number, old_serial, due_at, returned_quantity "
            "FROM parts_returns WHERE late AND returned_quantity > 1"
        )
    ).all()
    for return_id, ticket_id, part, serial, due_at, returned in split:
        payloads = conn.execute(
            sa.text(
                "SELECT payload FROM events WHERE stream_id = :t AND event_type = 'OldPartReturned'"
            ),
            {"t": ticket_id},
        ).scalars()
        late = 0
        for raw in payloads:
            p = json.loads(raw) if isinstance(raw, str) else raw
            if (
                p.get("late")
                and str(p.get("part_number", "")).upper() == str(part).upper()
                and _instant(p["due_at"]) == _instant(due_at)
                and _serial(p.get("old_serial")) == _serial(serial)
            ):
                late += int(p.get("quantity", 1))
        conn.execute(
            sa.text("UPDATE parts_returns SET late_quantity = :q WHERE return_id = :r"),
            {"q": min(late, returned) or returned, "r": return_id},
        )


def downgrade() -> None:
    # ALTER TABLE DROP COLUMN (SQLite 3.35+): a batch copy would lose the expression index.
    op.drop_column("parts_returns", "late_quantity")

"""What imported history does downstream: replenishment averages the imported usage,
repeat-repair detection sees imported repairs, compliance and scorecards include imported
tickets (``unknown`` where the old system kept no evidence), the parts reactor leaves
imported repairs alone, quality reports count them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from math import ceil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.dispatch.tables import ticket_flags
from services.intake.schemas import RECEIVE_EXAMPLE
from services.parts.tables import parts_stock
from shared.app.platform import Platform
from shared.eventstore.tables import events
from shared.kernel.clock import ManualClock
from shared.readmodels.ticket_state import ticket_state
from tests.support.clients import service_client
from tests.support.history import write_csv, write_history
from tests.support.importing import import_all, import_file
from tests.support.world import run_projector
from tests.test_import import good_row, ticket_file

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


async def network(platform: Platform, tmp_path: Path) -> dict[str, Path]:
    files = write_history(tmp_path, 0)
    tickets = files.pop("tickets")
    await import_all(platform, files)
    return {"tickets": tickets}


async def test_replenishment_averages_the_imported_usage(
    platform: Platform, clock: ManualClock, tmp_path: Path
) -> None:
    await network(platform, tmp_path)  # sp-east-1 has 5 MOTOR-WM700 on hand (opening balance)
    usage = [
        {
            "location_id": "sp-east-1",
            "part_number": "motor-wm700",
            "month": month,
            "quantity": quantity,
        }
        for month, quantity in (("2026-05", 100), ("2026-08", 4), ("2026-09", 10), ("2026-10", 8))
    ]
    path = write_csv(
        tmp_path / "more-usage.csv", ["location_id", "part_number", "month", "quantity"], usage
    )
    summary, _ = await import_file(platform, "usage", path)
    assert summary.tally.imported == 4
    async with service_client("parts", platform, role="admin") as parts:
        plan = (await parts.get("/replenishment", params={"location": "sp-east-1"})).json()
    (line,) = [i for i in plan["items"] if i["part_number"] == "MOTOR-WM700"]
    assert line["usage_months"] == ["2026-08", "2026-09", "2026-10"]  # the clock: 2026-11-02
    assert line["usage_by_month"] == {"2026-08": 4, "2026-09": 10, "2026-10": 8}
    assert line["on_hand"] == 5 and line["current_stock"] == 5
    by_hand = Decimal(3) * (Decimal(4 + 10 + 8) / 3) * Decimal(1) - 5  # = 17
    assert Decimal(str(line["raw_quantity"])) == by_hand
    assert line["suggested_quantity"] == ceil(by_hand) == 17
    # A month before the current one only; the opening balance is marked as such.
    current = write_csv(
        tmp_path / "now.csv",
        ["location_id", "part_number", "month", "quantity"],
        [{"location_id": "sp-east-1", "part_number": "BELT-22", "month": "2026-11", "quantity": 1}],
    )
    summary, sink = await import_file(platform, "usage", current)
    assert summary.status == "refused" and sink.first[0].field == "month"
    # A month already recorded: skipped when equal, a problem when the quantity differs.
    header = ["location_id", "part_number", "month", "quantity"]
    same = write_csv(tmp_path / "same.csv", header, usage[1:2])
    assert (await import_file(platform, "usage", same))[0].tally.present == 1
    other = write_csv(tmp_path / "other.csv", header, [usage[1] | {"quantity": 5}])
    summary, sink = await import_file(platform, "usage", other)
    assert summary.status == "refused" and sink.first[0].field == "quantity"
    assert "already present with other values" in sink.first[0].problem
    receipts = await platform.db.read(
        lambda c: list(
            c.execute(
                select(events.c.payload).where(events.c.event_type == "StockReceived")
            ).scalars()
        )
    )
    assert receipts and all('"opening_balance":true' in p for p in receipts)


# One batch; a batch a row (all or nothing: the validating pass remembers the repairs of
# earlier batches, not yet written, and its decisions are the ones written); one pass.
@pytest.mark.parametrize(
    "options", [{}, {"batch_size": 1}, {"batch_size": 1, "skip_invalid": True}]
)
async def test_repeat_repair_detection_sees_imported_repairs(
    platform: Platform, clock: ManualClock, tmp_path: Path, options: dict[str, Any]
) -> None:
    files = await network(platform, tmp_path)
    repaired = datetime(2026, 10, 20, 6, tzinfo=UTC)
    rows = [
        good_row(
            1,
            serial_number="SN-REP",
            received_at="2026-10-20T09:00:00+08:00",
            diagnosed_at="2026-10-20T09:30:00+08:00",
            dispatched_at="2026-10-20T10:00:00+08:00",
            appointment_start="2026-10-20T12:00:00+08:00",
            appointment_end="2026-10-20T14:00:00+08:00",
            visited_at="2026-10-20T12:30:00+08:00",
            repaired_at="2026-10-20T14:00:00+08:00",
            followed_up_at="2026-10-21T10:00:00+08:00",
        ),
        # The same serial (any case) back within the window, in the imported history itself.
        good_row(
            2,
            serial_number="sn-rep",
            received_at="2026-10-25T09:00:00+08:00",
            diagnosed_at="",
            category="",
            complexity="",
            resolution_path="",
            dispatched_at="",
            service_point_id="",
            technician_id="",
            appointment_start="",
            appointment_end="",
            visited_at="",
            repaired_at="",
            outcome="",
            followed_up_at="",
            satisfaction_score="",
            would_recommend="",
            problem_solved="",
        ),
    ]
    path = ticket_file(files["tickets"], rows)
    summary, sink = await import_file(platform, "tickets", path, **options)
    assert summary.status == "imported", sink.as_dicts()
    first, second = await platform.db.read(
        lambda c: list(
            c.execute(
                select(ticket_state.c.ticket_id).order_by(ticket_state.c.created_at)
            ).scalars()
        )
    )
    flag = await platform.db.read(
        lambda c: c.execute(
            select(events.c.occurred_at).where(
                events.c.stream_id == second, events.c.event_type == "RepeatRepairFlagged"
            )
        ).scalar_one()
    )
    assert flag.replace(tzinfo=UTC) == datetime(2026, 10, 25, 1, tzinfo=UTC)  # as of its receipt

    clock.set(repaired + timedelta(days=13))
    body = {**RECEIVE_EXAMPLE, "product": {**RECEIVE_EXAMPLE["product"], "serial_number": "Sn-Rep"}}
    async with service_client("intake", platform) as intake:
        response = await intake.post("/tickets", json=body)
        assert response.status_code == 201, response.text
        live = response.json()["ticket_id"]
    await run_projector(platform)
    flags = await platform.db.read(
        lambda c: {r.ticket_id: r.repeat_of_ticket_id for r in c.execute(select(ticket_flags))}
    )
    assert flags[live] == first  # the live ticket repeats the imported repair
    assert flags[second] == first


async def compliance_rows(platform: Platform) -> list[dict[str, Any]]:
    async with service_client("feedback", platform, role="auditor") as auditor:
        page = (await auditor.get("/compliance/tickets", params={"limit": 500})).json()
    return page["items"]


async def test_compliance_scorecards_and_quality_include_imported_tickets(
    platform: Platform, tmp_path: Path
) -> None:
    files = write_history(tmp_path, 80)
    await import_all(platform, files)
    await run_projector(platform)
    rows = await compliance_rows(platform)
    assert len(rows) == 80
    # Paged by the replaced system's own ticket numbers: each next page is reachable.
    paged: list[str] = []
    params: dict[str, Any] = {"limit": 7}
    async with service_client("feedback", platform, role="auditor") as auditor:
        while True:
            page = await auditor.get("/compliance/tickets", params=params)
            assert page.status_code == 200, page.text
            paged += [r["ticket_id"] for r in page.json()["items"]]
            if not page.json()["next_cursor"]:
                break
            params["cursor"] = page.json()["next_cursor"]
    assert sorted(paged) == sorted(r["ticket_id"] for r in rows)
    states = await platform.db.read(
        lambda c: {r.ticket_id: r for r in c.execute(select(ticket_state))}
    )
    ended_at_repair = [r for r in rows if states[r["ticket_id"]].status == "repaired"]
    assert ended_at_repair
    for row in ended_at_repair:
        for item in ("follow_up_done", "satisfied", "steps_in_order"):
            assert row["checklist"][item]["status"] == "unknown", (item, row["checklist"][item])
            assert row["checklist"][item]["note"].startswith("imported:")
    warranty = [r for r in rows if states[r["ticket_id"]].repair_outcome == "replaced"]
    assert warranty and all(
        r["checklist"]["parts_returned"]["status"] == "unknown" for r in warranty
    )
    closed = [r for r in rows if states[r["ticket_id"]].status == "closed"]
    assert closed and all(r["checklist"]["steps_in_order"]["status"] == "true" for r in closed)
    assert all(r["agent_id"] is None for r in rows)  # the operator is no call-center agent

    async with service_client("feedback", platform, role="auditor") as auditor:
        summary = (await auditor.get("/compliance/summary", params={"group_by": "month"})).json()
        cards = (await auditor.get("/scorecards", params={"month": "2025-01"})).json()
        weekly = (await auditor.get("/quality/weekly", params={"week": "2025-W02"})).json()
    assert summary["total"]["tickets"] == 80 and summary["total"]["unknown"] > 0
    assert summary["total"]["follow_ups"] > 0 and summary["total"]["nps"] is not None
    technicians = {k["subject"] for k in cards["technicians"]}
    assert technicians and all(t.startswith("t-") for t in technicians)
    assert cards["agents"] == []
    assert sum(c["repairs"] for c in weekly["counts"]) == sum(
        1 for s in states.values() if s.repaired_at
    )
    # The daily quality check ran for the imported days (alerts name the historical day).
    assert weekly["alerts"] and {a["day"] for a in weekly["alerts"]} <= {"2025-01-06", "2025-01-07"}

    # The parts reactor left the imported repairs alone: no consumption, no returns due.
    kinds = await platform.db.read(lambda c: set(c.execute(select(events.c.event_type)).scalars()))
    assert not kinds & {"StockConsumed", "OldPartReturnExpected", "PartUsageUnmatched"}
    on_hand = await platform.db.read(
        lambda c: c.execute(
            select(parts_stock.c.on_hand).where(
                parts_stock.c.location_id == "sp-east-1", parts_stock.c.part_number == "MOTOR-WM700"
            )
        ).scalar_one()
    )
    assert on_hand == 5

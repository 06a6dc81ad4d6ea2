"""Parts over HTTP (httpx → the real ASGI app) on SQLite and PostgreSQL: the catalogue and
network, requisitions from reserve to consume/return, the repair reactor, old-part
returns and their overdue detection, replenishment, and the read models' rebuild."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, select, text

from services.parts import commands
from services.parts.domain import STOCK_LEVELS, StockLevel, stock_stream
from services.parts.jobs import check_overdue_returns
from services.parts.projections import PROJECTIONS, RETURNS
from services.parts.reactors import RepairReactor
from services.parts.tables import parts_stock
from shared.app.executor import Handling, Invocation
from shared.app.platform import Platform
from shared.eventstore.db import Database
from shared.kernel.clock import ManualClock
from shared.kernel.errors import RuleViolation
from shared.kernel.events.envelope import (
    SYSTEM_ACTOR,
    CommandContext,
    EventEnvelope,
    EventPayload,
    PendingEvent,
)
from shared.kernel.events.parts import StockConsumed
from shared.kernel.events.tickets import CostBearer, TicketClosed, TicketReopened, UsedPart
from tests.support.clients import service_client
from tests.support.history import write_csv
from tests.support.importing import import_file, problems
from tests.support.lifecycle import append_ticket_events, dispatch_ticket, repair_ticket
from tests.test_intake import open_ticket

MOTOR = "MOTOR-WM700"
BELT = "BELT-WM700"


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("parts", platform, role="admin") as client:
        yield client


@pytest.fixture
async def clerk(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("parts", platform, location="SP-HZ-01") as client:
        yield client


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def build_network(admin: httpx.AsyncClient) -> None:
    """HQ → RC-EAST → SP-HZ-01 (and SP-NB-01); a motor that must come back, a belt that
    need not."""
    for location_id, body in [
        ("HQ", {"name": "Headquarters", "level": "headquarters"}),
        (
            "RC-EAST",
            {
                "name": "East center",
                "level": "regional_center",
                "parent_id": "HQ",
                "region": "east",
            },
        ),
        ("SP-HZ-01", {"name": "Hangzhou West", "level": "service_point", "parent_id": "RC-EAST"}),
        ("SP-NB-01", {"name": "Ningbo", "level": "service_point", "parent_id": "RC-EAST"}),
    ]:
        await ok(await admin.put(f"/locations/{location_id}", json=body), 201)
    await ok(
        await admin.put(
            f"/parts/{MOTOR}",
            json={"name": "Drum motor", "fits_models": ["WM-700"], "unit_cost": 86.5},
        ),
        201,
    )
    await ok(
        await admin.put(
            f"/parts/{BELT}", json={"name": "Belt", "unit_cost": 9, "return_required": False}
        ),
        201,
    )


async def receive(client: httpx.AsyncClient, location: str, part: str, quantity: int) -> Any:
    body = {"location_id": location, "part_number": part, "quantity": quantity}
    return await ok(await client.post("/stock/receipts", json=body), 201)


async def stock_of(client: httpx.AsyncClient, location: str, part: str) -> dict[str, int]:
    rows = await ok(await client.get("/stock", params={"location": location, "part_number": part}))
    return rows[0] if rows else {"on_hand": 0, "reserved": 0, "issued": 0, "available": 0}


async def dispatched_ticket(
    intake: httpx.AsyncClient, platform: Platform, sp: str = "SP-HZ-01", serial: str = "SN-1"
) -> str:
    ticket = await open_ticket(intake, product__serial_number=serial)
    await dispatch_ticket(platform, ticket["ticket_id"], service_point_id=sp)
    return str(ticket["ticket_id"])


async def run_reactor(platform: Platform) -> None:
    await platform.runner.catch_up(RepairReactor(platform))


async def ticket_events(intake: httpx.AsyncClient, ticket_id: str) -> list[str]:
    history = await ok(await intake.get(f"/tickets/{ticket_id}/history"))
    return [e["event_type"] for e in history["events"]]


async def test_request_receive_use_and_return_parts_for_a_ticket(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    assert (await receive(clerk, "SP-HZ-01", MOTOR, 3))["on_hand"] == 3
    ticket_id = await dispatched_ticket(intake, platform)

    raised = await clerk.post(
        "/requisitions", json={"ticket_id": ticket_id, "part_number": "motor-wm700"}
    )
    req = await ok(raised, 201)
    assert raised.headers["location"] == f"/requisitions/{req['requisition_id']}"
    assert req["status"] == "reserved" and req["source_location_id"] == "SP-HZ-01"
    assert req["requesting_location_id"] == "SP-HZ-01" and req["technician_id"] == "tech-1"
    assert req["kind"] == "planned" and req["part_number"] == MOTOR
    level = await stock_of(clerk, "SP-HZ-01", MOTOR)
    assert (level["on_hand"], level["reserved"], level["available"]) == (3, 1, 2)

    issued = await ok(await clerk.post(f"/requisitions/{req['requisition_id']}/issue", json={}))
    assert issued["status"] == "issued" and issued["issued_quantity"] == 1
    level = await stock_of(clerk, "SP-HZ-01", MOTOR)
    assert (level["on_hand"], level["reserved"], level["issued"]) == (2, 0, 1)

    used = UsedPart(
        part_number=MOTOR, new_serial="M-NEW-1", old_serial="M-OLD-1", under_warranty=True
    )
    await repair_ticket(platform, ticket_id, [used])
    await run_reactor(platform)
    consumed = await ok(await clerk.get(f"/requisitions/{req['requisition_id']}"))
    assert consumed["status"] == "consumed" and consumed["consumed_quantity"] == 1
    level = await stock_of(clerk, "SP-HZ-01", MOTOR)
    assert (level["on_hand"], level["reserved"], level["issued"]) == (2, 0, 0)

    # The warranty part must come back within 15 days of the repair.
    (expected,) = await ok(await clerk.get("/returns", params={"service_point": "SP-HZ-01"}))
    assert expected["status"] == "expected" and expected["old_serial"] == "M-OLD-1"
    assert expected["due_at"] == "2026-11-17T09:00:00Z"
    back = await ok(
        await clerk.post(
            "/returns",
            json={
                "ticket_id": ticket_id,
                "part_number": MOTOR,
                "old_serial": "m-old-1",  # serials compare without case
                "grade": "scrap",
            },
        ),
        201,
    )
    assert back["status"] == "returned" and back["late"] is False and back["grade"] == "scrap"
    assert back["returned_location_id"] == "SP-HZ-01"
    assert (await ticket_events(intake, ticket_id))[-1] == "OldPartReturned"
    summary = await ok(await clerk.get("/returns/summary"))
    assert summary["items"] == [
        {
            "service_point_id": "SP-HZ-01",
            "expected": 1,
            "returned": 1,
            "returned_late": 0,
            "outstanding": 0,
            "overdue": 0,
            "return_rate": 1.0,
        }
    ]
    # Nothing more is expected from this ticket.
    again = await clerk.post("/returns", json={"ticket_id": ticket_id, "part_number": MOTOR})
    assert again.status_code == 409 and again.json()["rule"] == "no_return_expected"


async def requisitions_by_page(client: httpx.AsyncClient, location: str) -> list[str]:
    """The ids ``GET /requisitions?location=`` lists, one page (``limit=1``) at a time."""
    ids: list[str] = []
    url: str | None = str(httpx.URL("/requisitions", params={"location": location, "limit": 1}))
    while url is not None:
        response = await client.get(url)
        ids += [r["requisition_id"] for r in await ok(response)]
        url = response.links.get("next", {}).get("url")
    return ids


async def test_nearest_location_holding_the_part(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(admin, "RC-EAST", MOTOR, 1)
    await receive(admin, "HQ", MOTOR, 2)
    ticket_id = await dispatched_ticket(intake, platform)
    body = {"ticket_id": ticket_id, "part_number": MOTOR, "kind": "emergency"}
    sources = [
        (await ok(await clerk.post("/requisitions", json=body), 201))["source_location_id"]
        for _ in range(3)
    ]
    assert sources == ["RC-EAST", "HQ", "HQ"]
    refused = await clerk.post("/requisitions", json=body)
    assert refused.status_code == 409 and refused.json()["rule"] == "out_of_stock"
    assert (await stock_of(admin, "HQ", MOTOR))["available"] == 0
    # A location's requisitions at either end, in any spelling, newest first, a page at a
    # time (each end walks its own index; the page is the newest of both).
    everything = await ok(await admin.get("/requisitions"))
    from_hq = [r["requisition_id"] for r in everything if r["source_location_id"] == "HQ"]
    assert len(from_hq) == 2
    assert await requisitions_by_page(admin, "hq") == from_hq
    assert await requisitions_by_page(clerk, "Hq") == from_hq  # within the clerk's reach
    requester = everything[0]["requesting_location_id"]
    assert await requisitions_by_page(admin, requester.lower()) == [
        r["requisition_id"] for r in everything
    ]
    # Regional centers read their own region only.
    async with service_client("parts", platform, role="regional_center", region="east") as east:
        mine = await ok(await east.get("/requisitions"))
        assert len(mine) == 3
        assert [s["location_id"] for s in await ok(await east.get("/stock"))] == ["RC-EAST"]
    async with service_client("parts", platform, role="regional_center", region="west") as west:
        assert await ok(await west.get("/requisitions")) == []
        rid = mine[0]["requisition_id"]
        assert (await west.get(f"/requisitions/{rid}")).status_code == 404
        assert (await west.get("/replenishment", params={"location": "RC-EAST"})).status_code == 404


async def test_cancel_releases_and_unused_parts_come_back(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 2)
    ticket_id = await dispatched_ticket(intake, platform)
    body = {"ticket_id": ticket_id, "part_number": MOTOR, "quantity": 2}
    req = await ok(await clerk.post("/requisitions", json=body), 201)
    cancelled = await ok(
        await clerk.post(
            f"/requisitions/{req['requisition_id']}/cancel", json={"reason": "wrong part"}
        )
    )
    assert cancelled["status"] == "cancelled"
    assert (await stock_of(clerk, "SP-HZ-01", MOTOR))["available"] == 2
    issue_cancelled = await clerk.post(f"/requisitions/{req['requisition_id']}/issue", json={})
    assert issue_cancelled.json()["rule"] == "requisition_not_reserved"

    # The technician asks for the parts himself, gets them, and brings one back unused.
    async with service_client("parts", platform, role="technician", subject="tech-1") as tech:
        mine = await ok(await tech.post("/requisitions", json=body), 201)
        rid = mine["requisition_id"]
        await ok(await clerk.post(f"/requisitions/{rid}/issue", json={}))
        stale = await tech.post(f"/requisitions/{rid}/return", json={}, headers={"If-Match": '"1"'})
        assert stale.status_code == 409
        back = await ok(await tech.post(f"/requisitions/{rid}/return", json={"quantity": 1}))
        assert back["status"] == "issued" and back["returned_quantity"] == 1
        level = await stock_of(tech, "SP-HZ-01", MOTOR)
        assert (level["on_hand"], level["issued"], level["available"]) == (1, 1, 1)
        too_many = await tech.post(f"/requisitions/{rid}/return", json={"quantity": 5})
        assert too_many.status_code == 422
        # The last one is used in the repair.
        await repair_ticket(
            platform,
            ticket_id,
            [UsedPart(part_number=MOTOR, under_warranty=False)],
            cost_borne_by=CostBearer.customer,
        )
        await run_reactor(platform)
        done = await ok(await tech.get(f"/requisitions/{rid}"))
        assert done["status"] == "consumed" and done["consumed_quantity"] == 1
        # Someone else's ticket does not exist for this technician.
        async with service_client("parts", platform, role="technician", subject="tech-9") as other:
            assert (await other.post("/requisitions", json=body)).status_code == 404
            assert (await other.get(f"/requisitions/{rid}")).status_code == 404
    # Out of warranty and paid by the customer: no return expected.
    assert await ok(await clerk.get("/returns")) == []


async def test_repair_without_requisition_uses_the_shelf_and_records_the_rest(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 1)
    await receive(clerk, "SP-HZ-01", BELT, 1)
    ticket_id = await dispatched_ticket(intake, platform)
    await repair_ticket(
        platform,
        ticket_id,
        [UsedPart(part_number=MOTOR, quantity=2), UsedPart(part_number=BELT, under_warranty=False)],
        cost_borne_by=CostBearer.warranty,
    )
    await run_reactor(platform)
    assert (await stock_of(clerk, "SP-HZ-01", MOTOR))["on_hand"] == 0
    assert (await stock_of(clerk, "SP-HZ-01", BELT))["on_hand"] == 0
    paperwork = await platform.db.read(
        lambda c: platform.store.read_stream(c, f"tparts:{ticket_id}")
    )
    assert [(e.event_type, e.payload["part_number"], e.payload["quantity"]) for e in paperwork] == [
        ("PartUsageUnmatched", MOTOR, 1),
        # The catalogue says the motor comes back when the warranty bore the repair.
        ("OldPartReturnExpected", MOTOR, 2),
    ]


async def test_repaired_event_delivered_twice_changes_stock_once(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 5)
    ticket_id = await dispatched_ticket(intake, platform)
    result = await repair_ticket(
        platform, ticket_id, [UsedPart(part_number=MOTOR, quantity=2, under_warranty=True)]
    )
    (repaired,) = result.events
    reactor = RepairReactor(platform)
    # Through the runner (per-stream version bookkeeping) ...
    for _ in range(2):
        await platform.db.write(lambda c: platform.runner.apply(c, reactor, [repaired]))
    # ... and straight into the reactor, as a redelivery under another bookkeeping would.
    for _ in range(2):
        await platform.db.write(lambda c: reactor.apply(c, [repaired]))
    await run_reactor(platform)
    assert (await stock_of(clerk, "SP-HZ-01", MOTOR))["on_hand"] == 3
    movements = await platform.db.read(
        lambda c: platform.store.read_stream(c, stock_stream("SP-HZ-01", MOTOR))
    )
    assert [e.event_type for e in movements] == ["StockReceived", "StockConsumed"]
    assert len(await ok(await clerk.get("/returns"))) == 1


async def repaired_expecting_returns(
    platform: Platform, intake: httpx.AsyncClient, admin: httpx.AsyncClient, used: UsedPart
) -> str:
    """A ticket repaired with ``used`` on the network, its old parts expected back within
    10 days (the repair reactor has run)."""
    platform.settings.parts.old_part_return_days = 10
    await build_network(admin)
    ticket_id = await dispatched_ticket(intake, platform)
    await repair_ticket(platform, ticket_id, [used])
    await run_reactor(platform)
    return ticket_id


async def test_overdue_returns_are_recorded_exactly_once(
    platform: Platform,
    clock: ManualClock,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    used = UsedPart(part_number=MOTOR, old_serial="OLD-7", under_warranty=True)
    ticket_id = await repaired_expecting_returns(platform, intake, admin, used)
    clock.advance(days=10)
    assert await check_overdue_returns(platform) == 0  # due now, not yet past
    clock.advance(minutes=1)
    # Two passes at once (as two processes without the lease would): one records it.
    assert sorted(
        await asyncio.gather(check_overdue_returns(platform), check_overdue_returns(platform))
    ) == [0, 1]
    assert await check_overdue_returns(platform) == 0
    # A restarted process (new platform, same database) records nothing again.
    restarted = Platform.from_settings(platform.settings, clock=clock)
    try:
        assert await check_overdue_returns(restarted) == 0
    finally:
        await restarted.close()
    (row,) = await ok(await clerk.get("/returns", params={"status": "overdue"}))
    assert row["due_at"] == "2026-11-12T09:00:00Z"
    assert row["overdue_detected_at"] == "2026-11-12T09:01:00Z"
    events = await ticket_events(intake, ticket_id)
    assert events.count("OldPartReturnOverdue") == 1
    summary = (await ok(await clerk.get("/returns/summary")))["items"][0]
    assert (summary["expected"], summary["outstanding"], summary["overdue"]) == (1, 1, 1)
    # It comes back late: the return says so and settles the row.
    clock.advance(days=2)
    back = await ok(
        await clerk.post("/returns", json={"ticket_id": ticket_id, "part_number": MOTOR}), 201
    )
    assert back["status"] == "returned" and back["late"] is True and back["old_serial"] == "OLD-7"
    assert await check_overdue_returns(platform) == 0


async def test_a_return_settled_in_parts_counts_late_only_what_came_back_late(
    platform: Platform,
    clock: ManualClock,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    used = UsedPart(part_number=MOTOR, quantity=2, old_serial="OLD-8", under_warranty=True)
    ticket_id = await repaired_expecting_returns(platform, intake, admin, used)
    one = {"ticket_id": ticket_id, "part_number": MOTOR, "quantity": 1}
    assert (await ok(await clerk.post("/returns", json=one), 201))["late"] is False
    clock.advance(days=11)
    # The rest of it, naming the serial the first part was booked under: still expected.
    rest = await ok(await clerk.post("/returns", json={**one, "old_serial": "old-8"}), 201)
    assert (rest["late"], rest["late_quantity"], rest["status"]) == (True, 1, "returned")
    again = await clerk.post("/returns", json={**one, "old_serial": "OLD-8"})
    assert (again.status_code, again.json()["rule"]) == (409, "no_return_expected")
    summary = (await ok(await clerk.get("/returns/summary")))["items"][0]
    assert (summary["expected"], summary["returned"], summary["returned_late"]) == (2, 2, 1)
    # Rows recorded before migration 0304 are filled from the ledger, split the same.
    from alembic import command

    from shared.eventstore.migrations import alembic_config, upgrade

    url = platform.settings.resolved_database_url
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0303_requisition_region")
    await asyncio.to_thread(upgrade, url)
    summary = (await ok(await clerk.get("/returns/summary")))["items"][0]
    assert (summary["returned"], summary["returned_late"]) == (2, 1)


async def consume_at(
    platform: Platform, clock: ManualClock, location: str, part: str, day: str, quantity: int
) -> None:
    """Record a shelf consumption at the given day (as the repair reactor would)."""
    context = CommandContext(actor=SYSTEM_ACTOR, service="parts")
    handling = Handling(platform.executor("parts"), Invocation(context), platform.settings)
    when = datetime.fromisoformat(day).replace(tzinfo=UTC)
    payload = StockConsumed(
        location_id=location,
        part_number=part,
        quantity=quantity,
        from_issued=False,
        trigger_event_id=f"test-{day}-{quantity}",
    )

    def decide(_command: None, _level: StockLevel) -> list[EventPayload | PendingEvent]:
        return [PendingEvent(payload, occurred_at=when)]

    await platform.db.write(
        lambda c: handling.execute(c, STOCK_LEVELS, stock_stream(location, part), None, decide)
    )


async def test_replenishment_matches_hand_computed_figures(
    platform: Platform, clock: ManualClock, admin: httpx.AsyncClient, clerk: httpx.AsyncClient
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 30)
    await receive(clerk, "SP-HZ-01", BELT, 30)
    # Motor: 4 + 5 + 3 in Aug–Oct (avg 4); the current month and July are outside.
    for day, quantity in [
        ("2026-07-20", 9),
        ("2026-08-03", 4),
        ("2026-09-15", 5),
        ("2026-10-31", 3),
        ("2026-11-01", 7),
    ]:
        await consume_at(platform, clock, "SP-HZ-01", MOTOR, day, quantity)
    # Belt: 10 in one month (avg 10/3).
    await consume_at(platform, clock, "SP-HZ-01", BELT, "2026-09-02", 10)
    # Stock now: motor 30 − 28 = 2, one reserved → current stock 1; belt 20.
    await admin.post(
        "/stock/adjustments",
        json={"location_id": "SP-HZ-01", "part_number": BELT, "delta": -13, "reason": "count"},
    )
    platform.settings.parts.seasonal_coefficients = {11: 1.5}

    plan = await ok(await clerk.get("/replenishment", params={"location": "SP-HZ-01"}))
    motor, belt = plan["items"][1], plan["items"][0]
    assert belt["part_number"] == BELT and motor["part_number"] == MOTOR
    assert motor["usage_months"] == ["2026-08", "2026-09", "2026-10"]
    assert motor["usage_by_month"] == {"2026-08": 4, "2026-09": 5, "2026-10": 3}
    assert motor["average_monthly_usage"] == 4.0 and motor["seasonal_coefficient"] == 1.5
    assert motor["seasonal_month"] == 11 and motor["months_of_cover"] == 3.0
    # 3 × 4 × 1.5 − 2 = 16
    assert (motor["on_hand"], motor["current_stock"], motor["raw_quantity"]) == (2, 2, 16.0)
    assert motor["suggested_quantity"] == 16
    # 3 × 10/3 × 1.5 − 7 = 8 (exactly: no float rounding pushes it to 9)
    assert belt["current_stock"] == 7 and belt["suggested_quantity"] == 8

    # Another month, other settings: 2 months of cover, no seasonal peak.
    platform.settings.parts.months_of_cover = 2
    platform.settings.parts.usage_months = 4
    clock.set(datetime(2026, 12, 5, tzinfo=UTC))
    plan = await ok(await clerk.get("/replenishment", params={"location": "SP-HZ-01"}))
    motor, belt = plan["items"][1], plan["items"][0]
    # Motor: Aug–Nov 4 + 5 + 3 + 7 = 19 → 4.75/month × 2 × 1.0 − 2 = 7.5 → 8
    assert motor["average_monthly_usage"] == 4.75 and motor["suggested_quantity"] == 8
    # Belt: 10/4 × 2 − 7 = −2 → nothing to order
    assert belt["raw_quantity"] == -2.0 and belt["suggested_quantity"] == 0

    assert (await clerk.get("/replenishment", params={"location": "NOPE"})).status_code == 404
    assert (await clerk.get("/replenishment")).status_code == 422


@pytest.mark.parametrize("backend", ["postgres"])
async def test_concurrent_requisitions_for_the_last_unit(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 1)
    ticket_ids = [await dispatched_ticket(intake, platform, serial=f"SN-{i}") for i in range(10)]
    responses = await asyncio.gather(
        *(
            clerk.post("/requisitions", json={"ticket_id": t, "part_number": MOTOR})
            for t in ticket_ids
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 9, [r.text for r in responses]
    row = await platform.db.read(lambda c: c.execute(select(parts_stock)).one())
    assert (row.on_hand, row.reserved) == (1, 1)
    reserved = await ok(await clerk.get("/requisitions", params={"status": "reserved"}))
    assert len(reserved) == 1


@pytest.mark.parametrize("backend", ["postgres"])
async def test_stock_table_refuses_negative_stock(db: Database) -> None:
    """The second line of defence: even a write that skipped the stream check fails."""
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    values = {
        "location_id": "X",
        "part_number": "P",
        "issued": 0,
        "version": 1,
        "updated_at": datetime(2026, 11, 2, tzinfo=UTC),
    }
    for on_hand, reserved in [(-1, 0), (1, 2)]:
        statement = insert(parts_stock).values(on_hand=on_hand, reserved=reserved, **values)
        with pytest.raises(IntegrityError):
            await db.write(lambda c, statement=statement: c.execute(statement))


async def test_a_movement_past_the_decision_is_refused_by_the_stock_table(
    platform: Platform, admin: httpx.AsyncClient, clerk: httpx.AsyncClient
) -> None:
    """A decision that skipped the rules (here: none at all) still cannot drive stock
    negative: the inline stock read model's CHECKs refuse it, with the rule named, and
    nothing of the command is recorded."""
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 1)
    context = CommandContext(actor=SYSTEM_ACTOR, service="parts")
    handling = Handling(platform.executor("parts"), Invocation(context), platform.settings)
    shelf = StockConsumed(
        location_id="SP-HZ-01",
        part_number=MOTOR,
        quantity=2,
        from_issued=False,
        trigger_event_id="test",
    )

    def decide(_command: None, _level: StockLevel) -> list[EventPayload | PendingEvent]:
        return [shelf]

    stream = stock_stream("SP-HZ-01", MOTOR)
    with pytest.raises(RuleViolation) as refused:
        await platform.db.write(lambda c: handling.execute(c, STOCK_LEVELS, stream, None, decide))
    assert refused.value.rule == "stock_cannot_go_negative"
    events = await platform.db.read(lambda c: platform.store.read_stream(c, stream))
    assert [e.event_type for e in events] == ["StockReceived"]
    assert (await stock_of(clerk, "SP-HZ-01", MOTOR))["on_hand"] == 1


async def test_invalid_requests_are_4xx_and_write_nothing(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 1)
    ticket_id = await dispatched_ticket(intake, platform)
    other_model = await open_ticket(intake, product__model="DW-100", product__serial_number="X")
    await dispatch_ticket(platform, other_model["ticket_id"], service_point_id="SP-HZ-01")
    undiagnosed = await open_ticket(intake, product__serial_number="SN-EARLY")

    async def problem(response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return response.json()  # type: ignore[no-any-return]

    def fields(p: dict[str, Any]) -> list[str]:
        return [e["field"] for e in p.get("errors") or []]

    req = {"ticket_id": ticket_id, "part_number": MOTOR}
    for quantity in (0, True, "1"):  # numbers are JSON numbers
        assert "quantity" in fields(
            await problem(
                await clerk.post("/requisitions", json={**req, "quantity": quantity}), 422
            )
        )
    assert "kind" in fields(
        await problem(await clerk.post("/requisitions", json={**req, "kind": "asap"}), 422)
    )
    assert "surprise" in fields(
        await problem(await clerk.post("/requisitions", json={**req, "surprise": 1}), 422)
    )
    assert "part_number" in fields(
        await problem(await clerk.post("/requisitions", json={**req, "part_number": "NOPE"}), 422)
    )
    await problem(await clerk.post("/requisitions", json={**req, "ticket_id": "nope"}), 404)
    stale = await clerk.post("/requisitions", json=req, headers={"If-Match": '"999"'})
    assert (await problem(stale, 409))["type"].endswith("/version-conflict")  # as every create
    wrong = {"ticket_id": other_model["ticket_id"], "part_number": MOTOR, "location_id": "SP-HZ-01"}
    assert (await problem(await clerk.post("/requisitions", json=wrong), 409))[
        "rule"
    ] == "part_does_not_fit"
    early = {**wrong, "ticket_id": undiagnosed["ticket_id"], "part_number": MOTOR}
    assert (await problem(await clerk.post("/requisitions", json=early), 409))[
        "rule"
    ] == "no_repair_pending"
    # Another location does not exist for a parts clerk (the reach rule: 404, not 403).
    elsewhere = await problem(
        await clerk.post("/requisitions", json={**req, "location_id": "SP-NB-01"}), 404
    )
    assert elsewhere["detail"] == "no location SP-NB-01"
    async with service_client("parts", platform, role="dispatcher", region="east") as dispatcher:
        await problem(await dispatcher.post("/requisitions", json=req), 403)
        await problem(
            await dispatcher.post(
                "/stock/receipts", json={"location_id": "HQ", "part_number": MOTOR, "quantity": 1}
            ),
            403,
        )
    await problem(await clerk.put(f"/parts/{MOTOR}", json={"name": "x", "unit_cost": 1}), 403)
    await problem(
        await clerk.post(
            "/stock/receipts", json={"location_id": "HQ", "part_number": MOTOR, "quantity": 1}
        ),
        404,
    )
    bad_parent = {"name": "x", "level": "service_point", "parent_id": "SP-HZ-01"}
    assert (await problem(await admin.put("/locations/SP-X", json=bad_parent), 409))[
        "rule"
    ] == "parent_level"
    no_parent = {"name": "x", "level": "service_point", "parent_id": "SP-NOWHERE"}
    assert "parent_id" in fields(
        await problem(await admin.put("/locations/SP-X", json=no_parent), 422)
    )
    assert (
        await problem(
            await admin.put("/locations/HQ", json={"name": "HQ", "level": "headquarters"}), 409
        )
    )["rule"] == "location_already_registered"
    assert "unit_cost" in fields(
        await problem(await admin.put(f"/parts/{MOTOR}", json={"name": "m", "unit_cost": -1}), 422)
    )
    stale = await admin.put(
        f"/parts/{MOTOR}", json={"name": "m", "unit_cost": 1}, headers={"If-Match": '"7"'}
    )
    await problem(stale, 409)
    await problem(
        await clerk.post("/requisitions/3b0c3a4e-8c51-4c0e-9a57-4d0b7e3c9a11/issue", json={}), 404
    )
    await problem(await clerk.post("/requisitions/not-a-uuid/issue", json={}), 422)
    await problem(await admin.get("/parts/NOPE"), 404)

    # Reserve the one motor, then try to count it away.
    await ok(await clerk.post("/requisitions", json=req), 201)
    adjust = {"location_id": "SP-HZ-01", "part_number": MOTOR, "delta": -1, "reason": "count"}
    assert (await problem(await admin.post("/stock/adjustments", json=adjust), 409))[
        "rule"
    ] == "stock_below_reserved"
    level = await stock_of(clerk, "SP-HZ-01", MOTOR)
    assert (level["on_hand"], level["reserved"]) == (1, 1)
    assert len(await ok(await clerk.get("/requisitions"))) == 1  # nothing else was written


async def test_idempotency_key_yields_one_requisition(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 2)
    ticket_id = await dispatched_ticket(intake, platform)
    body = {"ticket_id": ticket_id, "part_number": MOTOR}
    first = await clerk.post("/requisitions", json=body, headers={"Idempotency-Key": "req-1"})
    second = await clerk.post("/requisitions", json=body, headers={"Idempotency-Key": "req-1"})
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert first.json() == second.json()
    assert (await stock_of(clerk, "SP-HZ-01", MOTOR))["reserved"] == 1


async def dump(db: Database) -> dict[str, list[Any]]:
    def work(conn: Connection) -> dict[str, list[Any]]:
        return {
            table.name: sorted(tuple(r) for r in conn.execute(select(table)).all())
            for projection in PROJECTIONS
            for table in projection.tables
        }

    return await db.read(work)


async def test_rebuild_equals_incremental(
    platform: Platform,
    clock: ManualClock,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await ok(await admin.put(f"/parts/{BELT}", json={"name": "Belt v2", "unit_cost": 10}))
    await receive(clerk, "SP-HZ-01", MOTOR, 3)
    first = await dispatched_ticket(intake, platform)
    second = await dispatched_ticket(intake, platform, serial="SN-2")
    for ticket_id in (first, second):
        req = await ok(
            await clerk.post("/requisitions", json={"ticket_id": ticket_id, "part_number": MOTOR}),
            201,
        )
        await ok(await clerk.post(f"/requisitions/{req['requisition_id']}/issue", json={}))
        await repair_ticket(platform, ticket_id, [UsedPart(part_number=MOTOR, under_warranty=True)])
    await run_reactor(platform)
    await ok(await clerk.post("/returns", json={"ticket_id": first, "part_number": MOTOR}), 201)
    clock.advance(days=16)
    assert await check_overdue_returns(platform) == 1
    for projection in PROJECTIONS:  # the asynchronous runs find it all applied
        assert (await platform.runner.catch_up(projection)).applied >= 0
    incremental = await dump(platform.db)
    for projection in PROJECTIONS:
        await platform.runner.rebuild(projection)
    assert await dump(platform.db) == incremental
    assert len(incremental["parts_returns"]) == 2 and len(incremental["parts_requisitions"]) == 2

    # From Kafka each topic keeps its own order: the tickets topic (returns handed in,
    # overdue) may arrive before the parts topic (the returns expected). Same rows.
    await platform.runner.reset(RETURNS)
    ledger = await platform.db.read(lambda c: platform.store.read_all(c, limit=100_000))
    for event in sorted(ledger, key=lambda e: e.stream_type != "ticket"):
        await platform.db.write(lambda c, event=event: RETURNS.apply(c, [event]))
    assert (await dump(platform.db))["parts_returns"] == incremental["parts_returns"]


async def test_stock_events_carry_the_location_region(
    platform: Platform, admin: httpx.AsyncClient, clerk: httpx.AsyncClient
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 1)
    (event,) = await platform.db.read(
        lambda c: platform.store.read_stream(c, stock_stream("SP-HZ-01", MOTOR))
    )
    assert isinstance(event, EventEnvelope)
    assert event.stream_type == "stock" and event.region == "east"
    assert len(event.stream_id) <= 64


async def test_repair_before_the_hand_over_was_recorded_consumes_the_reservation(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(admin, "RC-EAST", BELT, 2)
    ticket_id = await dispatched_ticket(intake, platform)
    body = {"ticket_id": ticket_id, "part_number": BELT, "quantity": 2, "kind": "emergency"}
    req = await ok(await clerk.post("/requisitions", json=body), 201)
    assert req["source_location_id"] == "RC-EAST"
    await repair_ticket(platform, ticket_id, [UsedPart(part_number=BELT)])
    await run_reactor(platform)
    after = await ok(await clerk.get(f"/requisitions/{req['requisition_id']}"))
    assert (after["status"], after["issued_quantity"], after["consumed_quantity"]) == (
        "issued",
        2,
        1,
    )
    level = await stock_of(admin, "RC-EAST", BELT)
    assert (level["on_hand"], level["reserved"], level["issued"]) == (0, 0, 1)
    # The second belt goes back to the regional center's shelf.
    back = await ok(await clerk.post(f"/requisitions/{req['requisition_id']}/return", json={}))
    assert back["status"] == "consumed" and back["returned_quantity"] == 1
    assert (await stock_of(admin, "RC-EAST", BELT))["available"] == 1


async def test_a_technician_lists_only_the_returns_of_its_own_tickets(
    platform: Platform, intake: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await build_network(admin)
    mine = await dispatched_ticket(intake, platform)
    theirs = await ticket_for(intake, platform, "tech-9", "SN-9")
    for ticket_id in (mine, theirs):
        await repair_ticket(platform, ticket_id, [UsedPart(part_number=MOTOR, under_warranty=True)])
    await run_reactor(platform)
    assert len(await ok(await admin.get("/returns"))) == 2
    async with service_client("parts", platform, role="technician", subject="tech-1") as tech:
        assert [r["ticket_id"] for r in await ok(await tech.get("/returns"))] == [mine]
        assert await ok(await tech.get("/returns", params={"ticket_id": theirs})) == []
        (summary,) = (await ok(await tech.get("/returns/summary")))["items"]
        assert summary["expected"] == 1


async def ticket_for(
    intake: httpx.AsyncClient, platform: Platform, technician: str, serial: str
) -> str:
    ticket = await open_ticket(intake, product__serial_number=serial)
    await dispatch_ticket(
        platform, ticket["ticket_id"], service_point_id="SP-HZ-01", technician_id=technician
    )
    return str(ticket["ticket_id"])


async def test_a_parts_clerk_sees_and_acts_for_its_own_location_only(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 2)
    ticket_id = await dispatched_ticket(intake, platform)
    body = {"ticket_id": ticket_id, "part_number": MOTOR}
    rid = (await ok(await clerk.post("/requisitions", json=body), 201))["requisition_id"]
    async with service_client("parts", platform, location="SP-NB-01") as ningbo:
        # Another location's requisition and stock do not exist for this clerk.
        assert (await ningbo.get(f"/requisitions/{rid}")).status_code == 404
        assert (await ningbo.post(f"/requisitions/{rid}/issue", json={})).status_code == 404
        assert await ok(await ningbo.get("/requisitions")) == []
        assert await ok(await ningbo.get("/stock")) == []
        replenish = await ningbo.get("/replenishment", params={"location": "SP-HZ-01"})
        assert replenish.status_code == 404
        assert (
            await ningbo.get("/replenishment", params={"location": "SP-NB-01"})
        ).status_code == 200
    # Without a location a clerk acts for every location (the central parts department).
    async with service_client("parts", platform) as central:
        await ok(await central.post(f"/requisitions/{rid}/issue", json={}))
        await receive(central, "HQ", MOTOR, 1)
        sources = {s["location_id"] for s in await ok(await central.get("/stock"))}
        assert sources == {"HQ", "SP-HZ-01"}


async def test_a_location_put_again_the_same_records_nothing(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    """A PUT repeated does what the first did: the same registration (spelling, name,
    place in the tree; the parent in any case) answers 200 with the location and records
    nothing; any other registration of the id is refused as before."""
    await build_network(admin)
    point = {"name": "Hangzhou West", "level": "service_point", "parent_id": "rc-east"}
    before = await platform.db.read(lambda c: platform.store.last_position(c))
    assert (await ok(await admin.put("/locations/SP-HZ-01", json=point)))["name"] == point["name"]
    assert await platform.db.read(lambda c: platform.store.last_position(c)) == before
    # Its version, which If-Match is held to, is shown: registered once, it stays 1.
    read = await admin.get("/locations/SP-HZ-01")
    assert (read.headers["etag"], read.json()["version"]) == ('"1"', 1)
    guarded = await admin.put("/locations/SP-HZ-01", json=point, headers={"If-Match": '"1"'})
    assert guarded.status_code == 200 and guarded.headers["etag"] == '"1"', guarded.text
    assert "location" not in guarded.headers  # only a 201 says where it created something
    for other in ({**point, "name": "Hangzhou East"}, {**point, "parent_id": "HQ"}):
        refused = await admin.put("/locations/SP-HZ-01", json=other)
        assert refused.status_code == 409, refused.text
        assert refused.json()["rule"] == "location_already_registered"


async def test_location_ids_compare_case_insensitively(
    platform: Platform, intake: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """Dispatch names the service point `sp-hz-01`, parts registered it as `SP-HZ-01`:
    one place, kept under its registered spelling."""
    await build_network(admin)
    again = await admin.put(
        "/locations/sp-hz-01", json={"name": "x", "level": "service_point", "parent_id": "rc-east"}
    )
    assert again.status_code == 409 and again.json()["rule"] == "location_already_registered"
    async with service_client("parts", platform, location="sp-hz-01") as clerk:
        level = await receive(clerk, "Sp-Hz-01", MOTOR, 2)
        assert level["location_id"] == "SP-HZ-01" and level["on_hand"] == 2
        ticket_id = await dispatched_ticket(intake, platform, sp="sp-hz-01")
        # Consumed from the shelf the dispatch named; part numbers compare normalised.
        used = UsedPart(part_number="motor-wm700", old_serial="OLD-1", under_warranty=True)
        await repair_ticket(platform, ticket_id, [used])
        await run_reactor(platform)
        assert (await stock_of(clerk, "sp-hz-01", MOTOR))["on_hand"] == 1
        (expected,) = await ok(await clerk.get("/returns", params={"service_point": "sp-HZ-01"}))
        assert (expected["service_point_id"], expected["part_number"]) == ("SP-HZ-01", MOTOR)
        back = {"ticket_id": ticket_id, "part_number": "motor-wm700", "location_id": "sp-hz-01"}
        settled = await ok(await clerk.post("/returns", json=back), 201)
        assert settled["status"] == "returned" and settled["returned_location_id"] == "SP-HZ-01"
        plan = await ok(await clerk.get("/replenishment", params={"location": "sp-hz-01"}))
        assert plan["location_id"] == "SP-HZ-01"


async def follow_pages(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following its ``Link: <…>; rel="next"`` headers."""
    pages: list[list[dict[str, Any]]] = []
    url, query = path, params
    while True:
        answer = await client.get(url, params=query)
        pages.append(await ok(answer))
        link = answer.headers.get("link")
        if link is None:
            return pages
        target, relation = link.split(";")
        assert relation.strip() == 'rel="next"'
        next_url = httpx.URL(target.strip().strip("<>"))
        url, query = next_url.path, dict(next_url.params)


async def test_requisitions_and_returns_are_paged_by_their_link_header(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 5)
    for n in range(5):
        if n % 2:  # some share a time (the id orders them), some do not
            clock.advance(minutes=1)
        ticket_id = await dispatched_ticket(intake, platform, serial=f"SN-P{n}")
        body = {"ticket_id": ticket_id, "part_number": MOTOR}
        await ok(await clerk.post("/requisitions", json=body), 201)
        used = UsedPart(part_number=MOTOR, old_serial=f"OLD-{n}", under_warranty=True)
        await repair_ticket(platform, ticket_id, [used])
    await run_reactor(platform)
    for path, ident in (("/requisitions", "requisition_id"), ("/returns", "return_id")):
        everything = await ok(await clerk.get(path))
        assert len(everything) == 5
        pages = await follow_pages(clerk, path, {"limit": 2})
        assert [len(p) for p in pages] == [2, 2, 1], path
        assert [r[ident] for p in pages for r in p] == [r[ident] for r in everything], path
        assert "link" not in (await clerk.get(path, params={"limit": 5})).headers
        forged = await clerk.get(path, params={"cursor": "not-a-cursor"})
        assert forged.status_code == 422 and forged.json()["errors"][0]["field"] == "cursor"


async def test_an_old_part_settles_only_a_return_the_caller_may_see_and_that_expects_it(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    """Two motors replaced under warranty (old serials O-X and O-Y): the O-Y handed in
    twice must not settle O-X's return, whose part never came back; and a clerk of
    another service point cannot settle this point's returns (they do not exist for it)."""
    await build_network(admin)
    ticket_id = await dispatched_ticket(intake, platform)
    used = [
        UsedPart(part_number=MOTOR, under_warranty=True, old_serial=serial)
        for serial in ("O-X", "O-Y")
    ]
    await repair_ticket(platform, ticket_id, used)
    await run_reactor(platform)
    body = {"ticket_id": ticket_id, "part_number": MOTOR, "quantity": 1}
    async with service_client("parts", platform, location="SP-NB-01") as ningbo:
        refused = await ningbo.post("/returns", json=body | {"old_serial": "O-X"})
        assert refused.status_code == 409 and refused.json()["rule"] == "no_return_expected"
    # Handed in at another region's location (an admin names any): as for requisitions.
    west = {"name": "West", "level": "regional_center", "parent_id": "HQ", "region": "west"}
    await ok(await admin.put("/locations/RC-WEST", json=west), 201)
    elsewhere = await admin.post("/returns", json=body | {"location_id": "RC-WEST"})
    assert elsewhere.status_code == 422
    assert elsewhere.json()["errors"][0]["field"] == "location_id"
    assert "serves region west" in elsewhere.json()["detail"]
    await ok(await clerk.post("/returns", json=body | {"old_serial": "O-Y"}), 201)
    again = await clerk.post("/returns", json=body | {"old_serial": "O-Y"})
    assert again.status_code == 409, again.text
    assert again.json()["rule"] == "old_serial_not_expected"
    rows = await ok(await admin.get("/returns", params={"ticket_id": ticket_id}))
    assert sorted((r["old_serial"], r["status"]) for r in rows) == [
        ("O-X", "expected"),
        ("O-Y", "returned"),
    ]
    # Without a serial the earliest due one is settled, as before.
    await ok(await clerk.post("/returns", json=body), 201)
    rows = await ok(await admin.get("/returns", params={"ticket_id": ticket_id}))
    assert {r["status"] for r in rows} == {"returned"}


async def test_a_serial_already_returned_settles_no_other_return(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    """One return expects O-X, the other names no serial: O-X handed in twice must not
    settle the second (its part never came back)."""
    await build_network(admin)
    ticket_id = await dispatched_ticket(intake, platform)
    used = [
        UsedPart(part_number=MOTOR, under_warranty=True, old_serial="O-X"),
        UsedPart(part_number=MOTOR, under_warranty=True),
    ]
    await repair_ticket(platform, ticket_id, used)
    await run_reactor(platform)
    body = {"ticket_id": ticket_id, "part_number": MOTOR, "quantity": 1, "old_serial": "O-X"}
    await ok(await clerk.post("/returns", json=body), 201)
    again = await clerk.post("/returns", json=body)
    assert again.status_code == 409 and again.json()["rule"] == "old_serial_not_expected"
    # One return settles one expected return: two parts at once is 422 saying so.
    two = await clerk.post("/returns", json={**body, "old_serial": None, "quantity": 2})
    assert two.status_code == 422 and "settles one expected return" in two.json()["detail"]
    rows = await ok(await admin.get("/returns", params={"ticket_id": ticket_id}))
    assert sorted(r["status"] for r in rows) == ["expected", "returned"]


async def test_a_clerk_settles_its_own_points_return_in_the_command_and_the_read_model(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    """A ticket repaired at SP-HZ-01, reopened and repaired again at SP-NB-01: two returns
    without serials, Hangzhou's due first. Ningbo's clerk hands one in: the command and the
    returns read model both settle Ningbo's (the earliest due overall is Hangzhou's)."""
    await build_network(admin)
    ticket_id = await dispatched_ticket(intake, platform)
    await repair_ticket(platform, ticket_id, [UsedPart(part_number=MOTOR, under_warranty=True)])
    reopened = TicketReopened(reason="noise again", source="follow_up")
    await append_ticket_events(platform, ticket_id, [reopened], service="feedback")
    clock.advance(days=1)
    await dispatch_ticket(platform, ticket_id, service_point_id="SP-NB-01", redispatch=True)
    await repair_ticket(platform, ticket_id, [UsedPart(part_number=MOTOR, under_warranty=True)])
    await run_reactor(platform)
    async with service_client("parts", platform, location="SP-NB-01") as ningbo:
        body = {"ticket_id": ticket_id, "part_number": MOTOR, "quantity": 1}
        await ok(await ningbo.post("/returns", json=body), 201)
    rows = await ok(await admin.get("/returns", params={"ticket_id": ticket_id}))
    assert sorted((r["service_point_id"], r["status"]) for r in rows) == [
        ("SP-HZ-01", "expected"),
        ("SP-NB-01", "returned"),
    ]


async def test_stock_serves_its_own_region_and_an_unknown_ticket_is_404(
    platform: Platform, intake: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await build_network(admin)
    for location_id, body in [
        ("RC-WEST", {"name": "West center", "level": "regional_center", "parent_id": "HQ"}),
        ("SP-CD-01", {"name": "Chengdu", "level": "service_point", "parent_id": "RC-WEST"}),
    ]:
        await ok(await admin.put(f"/locations/{location_id}", json={**body, "region": "west"}), 201)
    await receive(admin, "SP-CD-01", BELT, 2)
    east_ticket = await dispatched_ticket(intake, platform)
    unknown = "3b0c3a4e-8c51-4c0e-9a57-4d0b7e3c9a11"
    asked = {"ticket_id": east_ticket, "part_number": BELT}
    async with service_client("parts", platform, location="SP-CD-01") as chengdu:
        # Another region's ticket does not exist for a clerk — stock or no stock.
        for ticket_id in (east_ticket, unknown):
            refused = await chengdu.post("/requisitions", json={**asked, "ticket_id": ticket_id})
            assert refused.status_code == 404 and refused.json()["rule"] == "ticket_not_found"
        for ticket_id in (east_ticket, unknown):
            handed_in = {"ticket_id": ticket_id, "part_number": MOTOR}
            refused = await chengdu.post("/returns", json=handed_in)
            assert refused.status_code == 404 and refused.json()["rule"] == "ticket_not_found"
    # Whoever names the location: west stock is not reserved for an east ticket.
    refused = await admin.post("/requisitions", json={**asked, "location_id": "SP-CD-01"})
    assert refused.status_code == 422 and "location_id" in refused.text
    assert "serves region west" in refused.text
    # Headquarters serves every region.
    await receive(admin, "HQ", BELT, 1)
    await ok(await admin.post("/requisitions", json={**asked, "location_id": "HQ"}), 201)


async def test_acting_for_a_location_out_of_reach_is_a_documented_404_location_not_found(
    platform: Platform, intake: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """Every parts operation that can answer it lists the 404, and its body names
    `location_not_found` (docs/parts.md, "Who may do what")."""
    await build_network(admin)
    ticket_id = await dispatched_ticket(intake, platform)
    receipt = {"location_id": "SP-HZ-01", "part_number": MOTOR, "quantity": 1}
    adjustment = {"location_id": "SP-HZ-01", "part_number": MOTOR, "delta": 1, "reason": "count"}

    def location_not_found(response: httpx.Response) -> None:
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["rule"] == "location_not_found"

    async with service_client("parts", platform, location="sp-hz-02") as elsewhere:
        location_not_found(await elsewhere.post("/stock/receipts", json=receipt))
        requisition = {"ticket_id": ticket_id, "part_number": MOTOR, "location_id": "SP-HZ-01"}
        location_not_found(await elsewhere.post("/requisitions", json=requisition))
        handed_in = {"ticket_id": ticket_id, "part_number": MOTOR, "location_id": "SP-HZ-01"}
        location_not_found(await elsewhere.post("/returns", json=handed_in))
        location_not_found(await elsewhere.get("/replenishment", params={"location": "SP-HZ-01"}))
    async with service_client("parts", platform, role="admin", region="west") as west:
        location_not_found(await west.post("/stock/adjustments", json=adjustment))
    # Other 404s name what was not found too.
    unknown = await admin.get("/requisitions/3b0c3a4e-8c51-4c0e-9a57-4d0b7e3c9a11")
    assert unknown.status_code == 404 and unknown.json()["rule"] == "requisition_not_found"
    assert (await admin.get("/stock")).json() == []  # nothing was received or adjusted

    paths = (await ok(await admin.get("/openapi.json")))["paths"]
    for path, method in [
        ("/stock/receipts", "post"),
        ("/stock/adjustments", "post"),
        ("/requisitions", "post"),
        ("/returns", "post"),
        ("/replenishment", "get"),
        ("/requisitions/{requisition_id}/issue", "post"),
        ("/requisitions/{requisition_id}/cancel", "post"),
        ("/requisitions/{requisition_id}/return", "post"),
    ]:
        answers = paths[path][method]["responses"]
        assert "404" in answers, f"{method.upper()} {path} does not document its 404"
        assert "problem+json" in next(iter(answers["404"]["content"]))


async def test_the_location_tree_has_three_levels_and_a_point_is_in_its_centers_region(
    platform: Platform, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A service point hangs under a regional center and is in its region; a regional center
    under headquarters — over HTTP and in the locations import alike (one rule)."""
    await build_network(admin)
    west = {"name": "West", "level": "regional_center", "parent_id": "HQ", "region": "west"}
    await ok(await admin.put("/locations/RC-WEST", json=west), 201)

    async def refused(location_id: str, body: dict[str, Any], status: int) -> dict[str, Any]:
        response = await admin.put(f"/locations/{location_id}", json={"name": "x", **body})
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return response.json()  # type: ignore[no-any-return]

    under_hq = {"level": "service_point", "parent_id": "HQ"}
    assert (await refused("SP-X-1", under_hq, 409))["rule"] == "parent_level"
    under_point = {"level": "regional_center", "parent_id": "SP-HZ-01", "region": "east"}
    assert (await refused("RC-X", under_point, 409))["rule"] == "parent_level"
    elsewhere = {"level": "service_point", "parent_id": "RC-EAST", "region": "west"}
    problem = await refused("SP-X-2", elsewhere, 409)
    assert problem["rule"] == "parent_region" and problem["detail"].startswith("region")
    orphan = await refused("SP-X-3", {"level": "service_point"}, 422)
    assert [e["field"] for e in orphan["errors"]] == ["parent_id"]
    # As dispatch's network: a regional center names its region, headquarters is optional.
    regionless = await refused("RC-Y", {"level": "regional_center", "parent_id": "HQ"}, 422)
    assert [e["field"] for e in regionless["errors"]] == ["region"]
    hq_in_a_region = await refused("HQ-2", {"level": "headquarters", "region": "east"}, 422)
    assert [e["field"] for e in hq_in_a_region["errors"]] == ["region"]
    north = {"name": "North", "level": "regional_center", "region": "north"}
    assert (await ok(await admin.put("/locations/RC-NORTH", json=north), 201))["parent_id"] is None
    assert {r["location_id"] for r in await ok(await admin.get("/locations"))} == {
        "HQ",
        "RC-EAST",
        "RC-NORTH",
        "RC-WEST",
        "SP-HZ-01",
        "SP-NB-01",
    }
    # Its own region, given or not, is the parent's.
    same = {"name": "x", "level": "service_point", "parent_id": "rc-west", "region": "west"}
    registered = await ok(await admin.put("/locations/SP-W-1", json=same), 201)
    assert (registered["parent_id"], registered["region"]) == ("RC-WEST", "west")

    header = ["location_id", "name", "level", "parent_id", "region"]
    rows = [
        {"location_id": "sp-i-1", "name": "a", "level": "service_point", "parent_id": "HQ"},
        {"location_id": "sp-i-2", "name": "b", "level": "service_point", "parent_id": "RC-EAST"}
        | {"region": "west"},
        {"location_id": "rc-i", "name": "c", "level": "regional_center", "parent_id": "RC-EAST"},
        {"location_id": "sp-i-3", "name": "d", "level": "service_point", "parent_id": "rc-west"},
        {"location_id": "rc-j", "name": "e", "level": "regional_center"},  # names no region
    ]
    path = write_csv(tmp_path / "locations.csv", header, rows)
    summary, sink = await import_file(platform, "locations", path, skip_invalid=True)
    assert summary.tally.imported == 1
    found = problems(sink)
    assert [(line, field) for line, field, _ in found] == [
        (2, "parent_id"),
        (3, "region"),
        (4, "parent_id"),
        (6, "region"),
    ]
    assert [text.split(":")[0] for _, _, text in found] == [
        "parent_level",
        "parent_region",
        "parent_level",
        "a regional_center serves one region",
    ]
    (imported,) = [r for r in await ok(await admin.get("/locations")) if r["name"] == "d"]
    assert (imported["location_id"], imported["region"]) == ("sp-i-3", "west")


async def test_a_repair_consumes_what_was_issued_then_the_oldest_reservation(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not by the random requisition id: the ids here sort opposite to the right order
    (the newer reservation's first, the issued one's last)."""
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", BELT, 3)
    ticket_id = await dispatched_ticket(intake, platform)
    older, issued, newer = (
        "eeeeeeee-0000-4000-8000-000000000000",
        "ffffffff-0000-4000-8000-000000000000",
        "00000000-0000-4000-8000-000000000000",
    )
    ids = iter([uuid.UUID(older), uuid.UUID(issued), uuid.UUID(newer)])
    monkeypatch.setattr(commands, "uuid", SimpleNamespace(uuid4=lambda: next(ids)))
    body = {"ticket_id": ticket_id, "part_number": BELT}
    for rid in (older, issued, newer):
        assert (await ok(await clerk.post("/requisitions", json=body), 201))[
            "requisition_id"
        ] == rid
        if rid == issued:
            await ok(await clerk.post(f"/requisitions/{rid}/issue", json={}))

    await repair_ticket(platform, ticket_id, [UsedPart(part_number=BELT, quantity=2)])
    await run_reactor(platform)
    status = {
        r["requisition_id"]: (r["status"], r["issued_quantity"], r["consumed_quantity"])
        for r in await ok(await clerk.get("/requisitions", params={"ticket_id": ticket_id}))
    }
    assert status == {
        issued: ("consumed", 1, 1),  # in the technician's hands: used first
        older: ("consumed", 1, 1),  # then the oldest reservation, handed over by the repair
        newer: ("reserved", 0, 0),
    }
    level = await stock_of(clerk, "SP-HZ-01", BELT)
    assert (level["on_hand"], level["reserved"], level["issued"]) == (1, 1, 0)


async def test_closing_a_ticket_releases_what_is_still_only_reserved_for_it(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    """Nothing can be requested for a closed ticket, so its reservations would hold the
    stock for ever; issued parts stay out, to be returned, and none is issued for it any
    more. A ticket reopened before the reactor runs keeps them."""
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 3)
    await receive(clerk, "SP-HZ-01", BELT, 2)
    closed = await dispatched_ticket(intake, platform, serial="SN-1")
    reopened = await dispatched_ticket(intake, platform, serial="SN-2")

    async def requisition(ticket_id: str, part: str) -> str:
        body = {"ticket_id": ticket_id, "part_number": part}
        return str((await ok(await clerk.post("/requisitions", json=body), 201))["requisition_id"])

    motor, belt, kept = (
        await requisition(closed, MOTOR),
        await requisition(closed, BELT),
        await requisition(reopened, MOTOR),
    )
    await ok(await clerk.post(f"/requisitions/{belt}/issue", json={}))
    for ticket_id in (closed, reopened):
        await repair_ticket(platform, ticket_id)
        await append_ticket_events(
            platform, ticket_id, [TicketClosed()], role="customer_relations", service="feedback"
        )
    # Before the reactor releases it: issuing for the closed ticket is refused all the
    # same (it went through while the projector lagged, stranding the part).
    early = await clerk.post(f"/requisitions/{motor}/issue", json={})
    assert (early.status_code, early.json()["rule"]) == (409, "ticket_closed"), early.text
    reopening = TicketReopened(reason="drum noisy again", source="follow_up")
    await append_ticket_events(
        platform, reopened, [reopening], role="customer_relations", service="feedback"
    )
    for _ in range(2):  # a second pass finds nothing more to do
        await run_reactor(platform)

    status = {
        rid: (await ok(await clerk.get(f"/requisitions/{rid}")))["status"]
        for rid in (motor, belt, kept)
    }
    assert status == {motor: "cancelled", belt: "issued", kept: "reserved"}
    level = await stock_of(clerk, "SP-HZ-01", MOTOR)
    assert (level["on_hand"], level["reserved"], level["available"]) == (3, 1, 2)
    released = await platform.db.read(lambda c: platform.store.read_stream(c, f"req:{motor}"))
    assert (released[-1].event_type, released[-1].payload["reason"]) == (
        "RequisitionCancelled",
        "ticket closed",
    )


async def test_requisitions_are_for_the_tickets_current_technician(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    """A technician asks for itself only (403 naming technician_id); a technician_id given
    by anyone else must be the ticket's technician (422: parts know no other); the issue
    goes to the ticket's technician as it is now, after a re-dispatch."""
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", BELT, 2)
    ticket_id = await ticket_for(intake, platform, "t-a", "SN-A")
    body = {"ticket_id": ticket_id, "part_number": BELT}

    def refused(response: httpx.Response, status: int) -> None:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in response.json()["errors"]] == ["technician_id"]

    async with service_client("parts", platform, role="technician", subject="t-a") as tech_a:
        refused(await tech_a.post("/requisitions", json={**body, "technician_id": "t-zzz"}), 403)
        # Asked before what the request names is looked up (an unregistered location).
        nowhere = {**body, "technician_id": "t-zzz", "location_id": "NOWHERE"}
        refused(await tech_a.post("/requisitions", json=nowhere), 403)
        mine = await ok(await tech_a.post("/requisitions", json=body), 201)
        assert mine["technician_id"] == "t-a"
        await ok(await tech_a.get(f"/requisitions/{mine['requisition_id']}"))
        await ok(
            await tech_a.post(
                f"/requisitions/{mine['requisition_id']}/cancel", json={"reason": "x"}
            )
        )
    refused(await admin.post("/requisitions", json={**body, "technician_id": "ghost"}), 422)
    refused(await clerk.post("/requisitions", json={**body, "technician_id": "t-b"}), 422)
    assert (await stock_of(clerk, "SP-HZ-01", BELT))["reserved"] == 0  # nothing left locked

    req = await ok(await clerk.post("/requisitions", json=body), 201)
    rid = req["requisition_id"]
    assert req["technician_id"] == "t-a"
    refused(await clerk.post(f"/requisitions/{rid}/issue", json={"technician_id": "ghost"}), 422)
    await dispatch_ticket(
        platform, ticket_id, service_point_id="SP-HZ-01", technician_id="t-b", redispatch=True
    )
    refused(await clerk.post(f"/requisitions/{rid}/issue", json={"technician_id": "t-a"}), 422)
    issued = await ok(await clerk.post(f"/requisitions/{rid}/issue", json={}))
    assert (issued["status"], issued["technician_id"]) == ("issued", "t-b")
    async with service_client("parts", platform, role="technician", subject="t-b") as tech_b:
        assert (await ok(await tech_b.get(f"/requisitions/{rid}")))["technician_id"] == "t-b"


async def test_a_requisition_follows_its_ticket_to_the_technician_it_is_re_dispatched_to(
    platform: Platform,
    intake: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clerk: httpx.AsyncClient,
) -> None:
    """A requisition is for the ticket's repair: once the ticket is re-dispatched the new
    technician reads, lists, cancels and returns its requisitions (reserved or issued),
    and the previous one no longer finds them (404, not in its list)."""
    await build_network(admin)
    await receive(clerk, "SP-HZ-01", BELT, 2)
    ticket_id = await ticket_for(intake, platform, "t-a", "SN-A")
    body = {"ticket_id": ticket_id, "part_number": BELT}
    async with (
        service_client("parts", platform, role="technician", subject="t-a") as tech_a,
        service_client("parts", platform, role="technician", subject="t-b") as tech_b,
    ):
        reserved = (await ok(await tech_a.post("/requisitions", json=body), 201))["requisition_id"]
        issued = (await ok(await tech_a.post("/requisitions", json=body), 201))["requisition_id"]
        await ok(await clerk.post(f"/requisitions/{issued}/issue", json={}))
        assert (await tech_b.get(f"/requisitions/{reserved}")).status_code == 404
        assert await ok(await tech_b.get("/requisitions")) == []

        await dispatch_ticket(
            platform, ticket_id, service_point_id="SP-HZ-01", technician_id="t-b", redispatch=True
        )
        for rid in (reserved, issued):
            assert (await tech_a.get(f"/requisitions/{rid}")).status_code == 404
            await ok(await tech_b.get(f"/requisitions/{rid}"))
        assert await ok(await tech_a.get("/requisitions")) == []
        listed = await ok(await tech_b.get("/requisitions"))
        assert {r["requisition_id"] for r in listed} == {reserved, issued}

        cancel = {"reason": "not needed"}
        gone = await tech_a.post(f"/requisitions/{reserved}/cancel", json=cancel)
        assert gone.status_code == 404 and gone.json()["rule"] == "requisition_not_found"
        assert gone.json()["detail"] == f"no requisition {reserved}"  # as a read says it
        gone = await tech_a.post(f"/requisitions/{issued}/return", json={})
        assert gone.status_code == 404 and gone.json()["rule"] == "requisition_not_found"
        assert (await stock_of(clerk, "SP-HZ-01", BELT))["reserved"] == 1  # untouched

        cancelled = await ok(await tech_b.post(f"/requisitions/{reserved}/cancel", json=cancel))
        assert cancelled["status"] == "cancelled"
        returned = await ok(await tech_b.post(f"/requisitions/{issued}/return", json={}))
        assert returned["status"] == "returned"


async def test_a_kept_stock_state_moves_on_and_is_never_built_on_unchecked(
    platform: Platform, admin: httpx.AsyncClient, clerk: httpx.AsyncClient
) -> None:
    """Stock streams grow an event per movement for years: the executor keeps their states
    and reads only newer events. A kept state whose last event the ledger does not hold
    as kept (a transaction that rolled back after it was read) is folded again."""
    from dataclasses import replace

    from shared.app.executor import Loaded
    from shared.eventstore.ledger import StreamHead

    await build_network(admin)
    await receive(clerk, "SP-HZ-01", MOTOR, 3)
    executor = platform.executor("parts")
    stream = stock_stream("SP-HZ-01", MOTOR)

    async def load() -> Loaded[StockLevel]:
        return await platform.db.read(lambda c: executor.load(c, STOCK_LEVELS, stream))

    first = await load()
    assert (first.state.on_hand, first.head.version) == (3, 1)
    await receive(clerk, "SP-HZ-01", MOTOR, 2)
    moved = await load()
    assert (moved.state.on_hand, moved.head.version) == (5, 2)
    assert moved.head == StreamHead(2, (await load()).head.hash)
    key = (STOCK_LEVELS.stream_type, stream)
    for phantom in (StreamHead(2, "0" * 64), StreamHead(3, "1" * 64)):
        wrong = replace(moved.state, on_hand=99, version=phantom.version)
        executor._states[key] = Loaded(stream, wrong, phantom)
        again = await load()
        assert (again.state.on_hand, again.head) == (5, moved.head)


async def test_a_registered_location_is_read_where_its_location_header_says(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    await build_network(admin)
    body = {"name": "Shaoxing", "level": "service_point", "parent_id": "RC-EAST"}
    created = await admin.put("/locations/SP-SX-01", json=body)
    assert created.status_code == 201, created.text
    read = await admin.get(created.headers["location"])
    assert read.status_code == 200 and read.json() == created.json()
    assert (await admin.get("/locations/sp-sx-01")).json()["location_id"] == "SP-SX-01"
    assert (await admin.get("/locations/SP-NOWHERE")).json()["rule"] == "location_not_found"
    async with service_client("parts", platform, role="regional_center", region="west") as west:
        assert (await west.get("/locations/SP-SX-01")).status_code == 404
        # Headquarters serves every region: in every reader's tree, as in dispatch's network.
        assert (await west.get("/locations/HQ")).status_code == 200
        listed = {r["location_id"] for r in await ok(await west.get("/locations"))}
        assert "HQ" in listed and "SP-SX-01" not in listed
        # So is a headquarters registered with a region of its own before the tree's one
        # rule (the old parts rule allowed it).
        legacy = text("UPDATE parts_locations SET region = 'hq' WHERE location_id = 'HQ'")
        await platform.db.write(lambda c: c.execute(legacy))
        assert (await west.get("/locations/HQ")).status_code == 200
        assert "HQ" in {r["location_id"] for r in await ok(await west.get("/locations"))}


@pytest.mark.parametrize("backend", ["postgres"])
async def test_case_variants_registered_at_once_make_one_location(
    platform: Platform, admin: httpx.AsyncClient, clock: ManualClock
) -> None:
    """As for service points: two replicas registering `SP-C1` and `sp-c1` at once."""
    await build_network(admin)
    body = {"name": "x", "level": "service_point", "parent_id": "rc-east"}
    replica = Platform.from_settings(platform.settings, clock=clock)
    try:
        async with service_client("parts", replica, role="admin") as other:
            answers = await asyncio.gather(
                admin.put("/locations/SP-C1", json=body), other.put("/locations/sp-c1", json=body)
            )
    finally:
        await replica.close()
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    listed = [r["location_id"] for r in await ok(await admin.get("/locations"))]
    assert len([i for i in listed if i.lower() == "sp-c1"]) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_every_requisition_and_return_page_walks_an_index(platform: Platform) -> None:
    """A page of ``GET /requisitions`` and ``GET /returns`` by each filter that can grow
    without bound — none, a location (either end, any spelling), a parts clerk's reach,
    a status, a region — first page and after a cursor, walks an index in the list's order
    and stops at the page's end: never a pass over the table, never a sort of it. (A
    ticket's or a technician's rows are few, and sorted.)"""
    from services.parts.read_models import (
        RequisitionFilters,
        ReturnFilters,
        list_requisitions,
        list_returns,
    )
    from shared.readmodels.paging import encode_cursor
    from tests.support.plans import plan_problems, recorded_selects

    requisitions: list[dict[str, str]] = [
        {},
        {"location_id": "SP-1"},
        {"reach_location": "sp-1"},
        {"location_id": "hq", "reach_location": "sp-1"},
        {"status": "reserved"},
        {"region": "east"},
    ]
    returns: list[dict[str, str]] = [
        {},
        {"service_point_id": "SP-1"},
        {"reach_location": "sp-1"},
        {"status": "expected"},
        {"region": "east"},
    ]
    cursors = (None, encode_cursor(datetime(2026, 11, 1, tzinfo=UTC), "r-1"))
    assert platform.db.sqlite_engine is not None
    with recorded_selects(platform.db.sqlite_engine) as statements:
        for cursor in cursors:
            for pick in requisitions:
                await platform.db.read(
                    lambda c, f=RequisitionFilters(**pick), a=cursor: list_requisitions(c, f, 50, a)
                )
            for pick in returns:
                await platform.db.read(
                    lambda c, f=ReturnFilters(**pick), a=cursor: list_returns(c, f, 50, a)
                )
    tables = ("parts_requisitions", "parts_returns")
    assert len(statements) == 2 * (len(requisitions) + len(returns))
    problems = await platform.db.read(
        lambda conn: plan_problems(conn, statements, tables, unsorted=tables)
    )
    assert problems == []

"""Dispatch's background work on SQLite and PostgreSQL: the SLA clock (exactly once across
restarts and races), repeat repairs, its projections, and its events on the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, select

from services.dispatch.jobs import check_sla, run_job
from services.dispatch.projections import NETWORK, TICKET_FLAGS
from services.dispatch.reactors import RepeatRepairReactor
from services.dispatch.tables import service_points, technicians, ticket_flags
from shared.app.config import Settings
from shared.app.executor import Handling, Invocation
from shared.app.platform import Platform
from shared.eventstore.kafka import ensure_topics, event_topics
from shared.eventstore.metrics import appended_here
from shared.kernel.clock import ManualClock
from shared.kernel.events.envelope import Actor, CommandContext, EventPayload
from shared.kernel.events.sla import SlaPaused, SlaResumed
from shared.kernel.ticket import TICKETS
from tests.support.broker import TestBroker
from tests.support.clients import service_client
from tests.support.dispatch_network import POINTS, build_network, open_ticket
from tests.support.kafka import consume_all, relay_all


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("dispatch", platform, role="admin") as client:
        yield client


async def stream_types(platform: Platform, ticket_id: str) -> list[str]:
    events = await platform.db.read(lambda c: platform.store.read_stream(c, ticket_id))
    return [e.event_type for e in events]


async def events_of(platform: Platform, ticket_id: str, event_type: str) -> list[dict]:
    events = await platform.db.read(lambda c: platform.store.read_stream(c, ticket_id))
    return [e.payload for e in events if e.event_type == event_type]


def second_platform(database_url: str, clock: ManualClock, tmp_path: Path) -> Platform:
    """Another process on the same database and data directory (its master key): a
    restarted or a second scheduler."""
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data")
    return Platform.from_settings(settings, clock=clock)


async def test_sla_breach_is_recorded_once_across_restart_and_race(
    platform: Platform,
    intake: httpx.AsyncClient,
    clock: ManualClock,
    database_url: str,
    tmp_path: Path,
) -> None:
    urgent = await open_ticket(intake, path=None, urgency="urgent")  # respond within 2 h
    normal = await open_ticket(intake, path=None, product__serial_number="S2")  # 24 h
    assert await check_sla(platform) == 0

    clock.advance(hours=2, minutes=45)
    assert await check_sla(platform) == 1
    breach = (await events_of(platform, urgent, "SlaBreached"))[0]
    assert breach["deadline"] == "response" and breach["overdue_minutes"] == 45
    assert breach["due_at"] == "2026-11-02T11:00:00Z"
    escalation = (await events_of(platform, urgent, "TicketEscalated"))[0]
    assert (escalation["level"], escalation["cause"], escalation["region"]) == (
        "regional_center",
        "sla_breach",
        "east",
    )
    assert "SlaBreached" not in await stream_types(platform, normal)

    # Same scheduler again, then a "restarted" one (new platform, same database).
    assert await check_sla(platform) == 0
    clock.advance(minutes=30)
    restarted = second_platform(database_url, clock, tmp_path)
    try:
        assert await check_sla(restarted) == 0
    finally:
        await restarted.close()
    assert (await stream_types(platform, urgent)).count("SlaBreached") == 1

    # The diagnosis answers the normal ticket; its resolution clock (simple: 4 h after
    # receipt) still runs. Two schedulers racing record the breach once.
    response = await intake.post(
        f"/tickets/{normal}/diagnosis",
        json={"category": "wear", "complexity": "simple", "resolution_path": "on_site"},
    )
    assert response.status_code == 200
    clock.advance(hours=2)  # 5 h 15 min after receipt
    other = second_platform(database_url, clock, tmp_path)
    try:
        counts = await asyncio.gather(check_sla(platform), check_sla(other))
    finally:
        await other.close()
    assert sum(counts) == 1
    assert [b["deadline"] for b in await events_of(platform, normal, "SlaBreached")] == [
        "resolution"
    ]
    assert (await stream_types(platform, normal)).count("TicketEscalated") == 1
    query = select(ticket_flags).order_by(ticket_flags.c.ticket_id)
    flags = await platform.db.read(lambda c: c.execute(query).all())
    assert {(f.ticket_id, f.escalation_cause) for f in flags} == {
        (urgent, "sla_breach"),
        (normal, "sla_breach"),
    }
    # The urgent ticket's resolution has no deadline yet (not diagnosed): nothing more.
    assert await check_sla(platform) == 0


async def test_a_deadline_met_late_while_the_scheduler_was_down_is_recorded(
    platform: Platform, intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    ticket = await open_ticket(intake, path=None, urgency="urgent")  # respond within 2 h
    clock.advance(hours=3)  # no scheduler ran meanwhile
    diagnosis = {"category": "misuse", "complexity": "simple", "resolution_path": "on_site"}
    response = await intake.post(f"/tickets/{ticket}/diagnosis", json=diagnosis)
    assert response.status_code == 200, response.text
    clock.advance(minutes=5)
    assert await check_sla(platform) == 1
    (breach,) = await events_of(platform, ticket, "SlaBreached")
    assert (breach["deadline"], breach["overdue_minutes"]) == ("response", 60)
    # Answered already: recorded for the record, not escalated.
    assert "TicketEscalated" not in await stream_types(platform, ticket)
    await platform.runner.catch_up(TICKET_FLAGS)
    assert await check_sla(platform) == 0


async def test_sla_job_runs_under_a_lease_until_stopped(
    platform: Platform, intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    ticket = await open_ticket(intake, path=None, urgency="critical")  # 30 min
    clock.advance(hours=1)
    platform.settings.dispatch.sla_poll_seconds = 0.05
    stop = asyncio.Event()
    job = asyncio.create_task(run_job(platform, stop))
    try:
        for _ in range(200):  # waits for the task, not for (manual) time
            if "SlaBreached" in await stream_types(platform, ticket):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(job, 10)
    assert (await stream_types(platform, ticket)).count("SlaBreached") == 1


async def test_repeat_repair_is_flagged_and_linked(
    platform: Platform,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    await build_network(admin)
    earlier = await open_ticket(intake, product__serial_number="SN-R1")
    await dispatch.post(f"/tickets/{earlier}/dispatch", json={"technician_id": "t-a"})
    await dispatch.post(f"/tickets/{earlier}/visit", json={"findings": "pump blocked"})
    response = await dispatch.post(f"/tickets/{earlier}/repair", json={"outcome": "fixed"})
    assert response.status_code == 200
    repaired_at = clock.now()

    clock.advance(days=12)
    repeat = await open_ticket(intake, product__serial_number="SN-R1")
    other_serial = await open_ticket(intake, product__serial_number="SN-R2")
    reactor = RepeatRepairReactor(platform)
    await platform.runner.catch_up(reactor)
    flagged = await events_of(platform, repeat, "RepeatRepairFlagged")
    assert flagged == [
        {
            "earlier_ticket_id": earlier,
            "earlier_repaired_at": "2026-11-02T09:00:00Z",
            "serial_number": "SN-R1",
            "window_days": 30,
        }
    ]
    assert await events_of(platform, other_serial, "RepeatRepairFlagged") == []
    assert await events_of(platform, earlier, "RepeatRepairFlagged") == []

    # Delivered again (a rebuilt checkpoint): nothing more.
    await platform.runner.reset(reactor)
    await platform.runner.catch_up(reactor)
    assert (await stream_types(platform, repeat)).count("RepeatRepairFlagged") == 1

    # The work list shows the link once the ticket is dispatched.
    await dispatch.post(f"/tickets/{repeat}/dispatch", json={"technician_id": "t-b"})
    items = (await dispatch.get("/technicians/t-b/assignments")).json()["items"]
    assert items[0]["repeat_of_ticket_id"] == earlier

    # Outside the window (30 days after the repair): not a repeat.
    clock.set(repaired_at)
    clock.advance(days=31)
    late = await open_ticket(intake, product__serial_number="SN-R1")
    await platform.runner.catch_up(reactor)
    assert await events_of(platform, late, "RepeatRepairFlagged") == []


async def test_projections_rebuild_equals_incremental(
    platform: Platform, intake: httpx.AsyncClient, admin: httpx.AsyncClient, clock: ManualClock
) -> None:
    await build_network(admin)
    await admin.post("/technicians/t-c/deactivation", json={"reason": "left"})
    narrower = {**POINTS[4], "postcodes": ["3100", "3101"], "reason": "took over 3101"}
    del narrower["id"]
    response = await admin.put("/service-points/sp-east-2", json=narrower)
    assert response.status_code == 200, response.text
    retrained = {"name": "A", "service_point_id": "sp-east-2", "skills": ["dryers"]}
    response = await admin.put("/technicians/t-a", json=retrained)
    assert response.status_code == 200, response.text
    ticket = await open_ticket(intake, path=None, urgency="critical")
    clock.advance(hours=1)
    await check_sla(platform)
    for projection in (NETWORK, TICKET_FLAGS):
        await platform.runner.catch_up(projection)

    def rows(conn: Connection) -> list:
        return [
            list(conn.execute(select(t).order_by(t.primary_key.columns[0])).all())
            for t in (service_points, technicians, ticket_flags)
        ]

    async def dump() -> list:
        return await platform.db.read(rows)

    incremental = await dump()
    for projection in (NETWORK, TICKET_FLAGS):
        await platform.runner.rebuild(projection)
    assert await dump() == incremental
    assert len(incremental[0]) == 6 and len(incremental[1]) == 4
    assert incremental[2][0].ticket_id == ticket
    point = next(r for r in incremental[0] if r.id == "sp-east-2")
    assert (point.postcodes, point.version) == (["3100", "3101"], 2)
    by_id = {r.id: r for r in incremental[1]}
    assert (by_id["t-a"].skills, by_id["t-a"].service_point_id) == (["dryers"], "sp-east-2")
    assert (by_id["t-c"].active, by_id["t-c"].version) == (False, 2)


@pytest.mark.kafka
async def test_dispatch_events_reach_the_broker(
    platform: Platform,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clock: ManualClock,
    broker: TestBroker,
) -> None:
    await ensure_topics(broker.bootstrap_servers, event_topics("ticketline"), partitions=2)
    await build_network(admin)
    ticket = await open_ticket(intake, complexity="simple")
    await dispatch.post(f"/tickets/{ticket}/dispatch", json={})
    await dispatch.post(f"/tickets/{ticket}/visit", json={"findings": "door seal torn"})
    clock.advance(hours=5)
    assert await check_sla(platform) == 1
    await dispatch.post(f"/tickets/{ticket}/repair", json={"outcome": "fixed"})

    await relay_all(platform.db, broker.bootstrap_servers, batch_size=50, owner="relay-dispatch")
    network = await consume_all(broker.bootstrap_servers, "ticketline.network")
    assert {(m["stream_type"], m["event_type"]) for m in network} == {
        ("service_point", "ServicePointRegistered"),
        ("technician", "TechnicianRegistered"),
    }
    assert len(network) == 10
    tickets = await consume_all(broker.bootstrap_servers, "ticketline.tickets")
    mine = [m["event_type"] for m in tickets if m["stream_id"] == ticket]
    assert mine == [
        "TicketReceived",
        "TicketDiagnosed",
        "TicketDispatched",
        "TicketVisited",
        "SlaBreached",
        "TicketEscalated",
        "TicketRepaired",
    ]
    dispatched = next(m for m in tickets if m["event_type"] == "TicketDispatched")
    assert dispatched["service"] == "dispatch" and dispatched["payload"]["technician_id"] == "t-a"


async def test_decisions_held_back_append_together_and_later_ones_see_them(
    platform: Platform, intake: httpx.AsyncClient
) -> None:
    """A reactor's batch holds its appends back to its end: appended one by one, the first
    would take the position counter every writer waits for and keep it through the rest
    of the batch. A decision on a stream with appends held back first makes them."""
    a = await open_ticket(intake, product__serial_number="SN-H1")
    b = await open_ticket(intake, product__serial_number="SN-H2")
    executor = platform.executor("dispatch")
    context = CommandContext(actor=Actor(subject="system", role="system"), service="dispatch")
    handling = Handling(executor, Invocation(context), platform.settings)

    def record(payload: EventPayload) -> Any:
        return lambda _command, _state: [payload]

    def work(conn: Connection) -> tuple[bool, bool]:
        with executor.appends_held_back(conn):
            handling.execute(
                conn, TICKETS, a, None, record(SlaPaused(reason="customer_unavailable"))
            )
            handling.execute(
                conn, TICKETS, b, None, record(SlaPaused(reason="customer_unavailable"))
            )
            held = not appended_here(conn.info)
            # On a stream with an append held back: made first, so this one follows it.
            handling.execute(conn, TICKETS, a, None, record(SlaResumed()))
            flushed = appended_here(conn.info)
        return held, flushed

    assert await platform.db.write(work) == (True, True)
    assert (await stream_types(platform, a))[-2:] == ["SlaPaused", "SlaResumed"]
    assert (await stream_types(platform, b))[-1:] == ["SlaPaused"]


async def test_a_failed_held_back_block_leaves_no_holder_behind(
    platform: Platform, intake: httpx.AsyncClient
) -> None:
    """A reactor that fails inside its block (a projector catches it and goes on in the
    same transaction) drops what it held back; the next block's appends are made."""
    a = await open_ticket(intake, product__serial_number="SN-F1")
    executor = platform.executor("dispatch")
    context = CommandContext(actor=Actor(subject="system", role="system"), service="dispatch")
    handling = Handling(executor, Invocation(context), platform.settings)
    pause = SlaPaused(reason="customer_unavailable")

    def work(conn: Connection) -> None:
        with contextlib.suppress(RuntimeError), executor.appends_held_back(conn):
            handling.execute(conn, TICKETS, a, None, lambda _c, _s: [pause])
            raise RuntimeError("a reactor's bug")
        with executor.appends_held_back(conn):
            handling.execute(conn, TICKETS, a, None, lambda _c, _s: [pause])

    await platform.db.write(work)
    assert (await stream_types(platform, a)).count("SlaPaused") == 1


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_unit_cancelled_inside_a_held_back_block_is_cancelled(
    platform: Platform,
) -> None:
    """A projector stopped mid-batch: the cancellation goes through (nothing is written,
    the writer goes on)."""
    from sqlalchemy import text

    executor = platform.executor("dispatch")

    def slow(conn: Connection) -> None:
        with executor.appends_held_back(conn):
            conn.execute(text("SELECT pg_sleep(2)"))

    task = asyncio.create_task(platform.db.write(slow))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await platform.db.write(lambda c: c.execute(text("SELECT 1")).scalar()) == 1

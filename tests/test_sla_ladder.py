"""The warning and escalation ladder on SQLite and PostgreSQL: each step recorded once
across restarts and racing schedulers, visible on the work lists, the SSE stream and
Kafka (docs/sla.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.dispatch.jobs import check_sla
from services.dispatch.projections import SLA_CLOCKS, TICKET_FLAGS
from services.intake.app import create_app as intake_app
from shared.app.config import Settings
from shared.app.platform import Platform
from shared.app.subscribe import subscribe_http
from shared.eventstore.kafka import ensure_topics, event_topics
from shared.kernel.clock import ManualClock
from tests.support.auth import TEST_AUTH, headers_for
from tests.support.broker import TestBroker
from tests.support.clients import service_client
from tests.support.dispatch_network import open_ticket
from tests.support.kafka import consume_all, relay_all
from tests.support.servers import serve_app

# Every clock 24×7; the resolution of a "general" ticket 4 hours: 75 % at 3 h (the
# service point is warned), the breach at 4 h (regional center), 150 % at 6 h (HQ).
ROUND_THE_CLOCK = {
    "name": "Round the clock",
    "resolution": {"simple": {"hours": 2}, "general": {"hours": 4}, "complex": {"hours": 72}},
    "calendar_by_urgency": {"normal": "24x7", "urgent": "24x7", "critical": "24x7"},
}


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client("dispatch", platform, role="admin") as client:
        yield client


async def payloads(platform: Platform, ticket_id: str, event_type: str) -> list[dict[str, Any]]:
    events = await platform.db.read(lambda c: platform.store.read_stream(c, ticket_id))
    return [e.payload for e in events if e.event_type == event_type]


def other_platform(database_url: str, clock: ManualClock, tmp_path: Path) -> Platform:
    """Another process on the same database and data directory (its master key): a
    restarted or a second scheduler."""
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", auth=TEST_AUTH)
    return Platform.from_settings(settings, clock=clock)


async def race(platform: Platform, other: Platform) -> int:
    return sum(await asyncio.gather(check_sla(platform), check_sla(other)))


async def test_each_step_of_the_ladder_is_recorded_once_across_restarts_and_races(
    platform: Platform,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clock: ManualClock,
    database_url: str,
    tmp_path: Path,
) -> None:
    response = await admin.put("/sla-policies/standard", json=ROUND_THE_CLOCK)
    assert response.status_code == 200, response.text
    ticket = await open_ticket(intake)  # diagnosed at once: the resolution clock runs
    assert await check_sla(platform) == 0
    other = other_platform(database_url, clock, tmp_path)
    try:
        clock.advance(hours=3, minutes=1)
        assert await race(platform, other) == 1
        (warning,) = await payloads(platform, ticket, "SlaWarning")
        assert (warning["deadline"], warning["percent"], warning["level"]) == (
            "resolution",
            75.0,
            "service_point",
        )
        assert warning["reached_at"] == "2026-11-02T12:00:00Z"
        assert await check_sla(other) == 0  # "restarted": already there

        clock.advance(hours=1)
        assert await race(platform, other) == 1
        (breach,) = await payloads(platform, ticket, "SlaBreached")
        assert (breach["due_at"], breach["overdue_minutes"]) == ("2026-11-02T13:00:00Z", 1)
        (escalation,) = await payloads(platform, ticket, "TicketEscalated")
        assert escalation["level"] == "regional_center"

        clock.advance(hours=2)
        assert await race(platform, other) == 1
        assert await race(platform, other) == 0
    finally:
        await other.close()
    warnings = await payloads(platform, ticket, "SlaWarning")
    assert [(w["percent"], w["level"]) for w in warnings] == [
        (75.0, "service_point"),
        (150.0, "headquarters"),
    ]
    escalations = await payloads(platform, ticket, "TicketEscalated")
    assert [e["level"] for e in escalations] == ["regional_center", "headquarters"]
    for projection in (SLA_CLOCKS, TICKET_FLAGS):
        await platform.runner.catch_up(projection)
    (item,) = (await dispatch.get("/dispatch-queue")).json()["items"]
    assert (item["sla_warning_level"], item["sla_warning_percent"]) == ("headquarters", 150.0)
    assert (item["escalation_level"], item["sla_breached"]) == ("headquarters", ["resolution"])


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_warnings_reach_the_sse_stream(
    platform: Platform, intake: httpx.AsyncClient, admin: httpx.AsyncClient, clock: ManualClock
) -> None:
    await admin.put("/sla-policies/standard", json=ROUND_THE_CLOCK)
    ticket = await open_ticket(intake)
    clock.advance(hours=3, minutes=30)
    assert await check_sla(platform) == 1
    seen: list[dict[str, Any]] = []
    async with serve_app(intake_app(platform)) as url:  # the streams are served there
        await asyncio.wait_for(
            subscribe_http(
                url,
                region="east",
                types=["SlaWarning"],
                from_beginning=True,
                position_file=None,
                emit=seen.append,
                max_events=1,
                headers=headers_for("regional_center", region="east"),
            ),
            20,
        )
    assert [(e["stream_id"], e["payload"]["level"]) for e in seen] == [(ticket, "service_point")]


@pytest.mark.kafka
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_warnings_and_pauses_reach_kafka(
    platform: Platform,
    intake: httpx.AsyncClient,
    dispatch: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    clock: ManualClock,
    broker: TestBroker,
) -> None:
    await ensure_topics(broker.bootstrap_servers, event_topics("ticketline"), partitions=2)
    await admin.put("/sla-policies/standard", json=ROUND_THE_CLOCK)
    ticket = await open_ticket(intake)
    clock.advance(hours=3, minutes=30)
    assert await check_sla(platform) == 1
    await dispatch.post(f"/tickets/{ticket}/sla/pause", json={"reason": "waiting_for_parts"})
    await relay_all(platform.db, broker.bootstrap_servers, batch_size=50, owner="relay-sla")
    tickets = await consume_all(broker.bootstrap_servers, "ticketline.tickets")
    mine = [m["event_type"] for m in tickets if m["stream_id"] == ticket]
    assert mine == [
        "TicketReceived",
        "SlaPolicyApplied",
        "TicketDiagnosed",
        "SlaWarning",
        "SlaPaused",
    ]
    network = await consume_all(broker.bootstrap_servers, "ticketline.network")
    assert [m["event_type"] for m in network] == ["SlaPolicyDefined"]

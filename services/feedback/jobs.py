"""Quality alerts: each day, repairs grouped by product model and fault category; a group
that reaches ``quality_alert_threshold`` raises one ``QualityAlertRaised``.

Each alert has its own stream, named after (model, category, day) and appended only at
version 0, so it is recorded once however many processes run the job or how often it
restarts. Counts come from the ledger's repair events and the inline ticket-state rows,
so the job never waits on an asynchronous projection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select

from services.feedback.projections import QUALITY_ALERTS
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.ledger import NO_STREAM, ConcurrencyError
from shared.eventstore.outbox import relay_owner_id
from shared.eventstore.tables import events
from shared.kernel.events.envelope import SYSTEM_ACTOR, CommandContext, EventEnvelope
from shared.kernel.events.quality import QualityAlertRaised
from shared.kernel.events.tickets import FaultCategory
from shared.readmodels.ticket_state import ticket_state

log = logging.getLogger(__name__)

SERVICE = "feedback"
ALERT_NAMESPACE = uuid.UUID("6f1d2c1e-6d0b-4c3e-9a55-7a2f0c1b9e47")


def alert_stream_id(product_model: str, category: str, day: date) -> str:
    key = f"{product_model}\x1f{category}\x1f{day.isoformat()}"
    return f"quality-{uuid.uuid5(ALERT_NAMESPACE, key)}"


async def repairs_on(platform: Platform, day: date) -> dict[tuple[str, str], list[str]]:
    """Tickets repaired on ``day`` (UTC) per (product model, fault category)."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    e, t = events.c, ticket_state.c
    query = (
        select(e.stream_id, t.product_model, t.category)
        .select_from(events.join(ticket_state, t.ticket_id == e.stream_id))
        .where(
            e.event_type == "TicketRepaired",
            e.occurred_at >= start,
            e.occurred_at < start + timedelta(days=1),
        )
        .order_by(e.position)
    )
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    async with platform.db.reading() as conn:
        for row in await conn.execute(query):
            tickets = groups[(row.product_model, row.category or FaultCategory.other.value)]
            if row.stream_id not in tickets:
                tickets.append(row.stream_id)
    return groups


async def raise_quality_alerts(platform: Platform, day: date) -> list[EventEnvelope]:
    """One pass for one day: record the alerts not yet recorded; returns those recorded."""
    threshold = platform.settings.feedback.quality_alert_threshold
    context = CommandContext(actor=SYSTEM_ACTOR, service=SERVICE)
    raised: list[EventEnvelope] = []
    groups = await repairs_on(platform, day)
    for (model, category), tickets in sorted(groups.items()):
        if len(tickets) < threshold:
            continue
        alert = QualityAlertRaised(
            product_model=model,
            fault_category=FaultCategory(category),
            day=day,
            count=len(tickets),
            threshold=threshold,
            ticket_ids=tickets,
        )
        stream_id = alert_stream_id(model, category, day)
        try:
            async with platform.db.transaction() as conn:
                version, _ = await platform.store.stream_head(conn, stream_id)
                if version != NO_STREAM:
                    continue
                written = await platform.store.append_to_stream(
                    conn, stream_id, NO_STREAM, [alert], context
                )
                await platform.runner.apply(conn, QUALITY_ALERTS, written)
            raised.extend(written)
        except ConcurrencyError:
            continue  # another process recorded it first
    return raised


def quality_lease(platform: Platform, owner: str | None = None) -> Lease:
    return Lease(
        platform.db,
        "feedback:quality-alerts",
        owner or relay_owner_id(),
        platform.settings.feedback.quality_job_lease_seconds,
        platform.clock,
    )


async def run_once(platform: Platform, lease: Lease) -> list[EventEnvelope]:
    """One pass, if this process holds the lease: yesterday (late records) and today (a
    threshold crossed now), by the platform clock's day (UTC)."""
    if not await lease.acquire():
        return []
    today = platform.clock.now().date()
    raised: list[EventEnvelope] = []
    for day in (today - timedelta(days=1), today):
        raised += await raise_quality_alerts(platform, day)
    return raised


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    lease = quality_lease(platform)
    while not stop.is_set():
        try:
            await run_once(platform, lease)
        except Exception:
            log.exception("quality alert pass failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                stop.wait(), platform.settings.feedback.quality_job_interval_seconds
            )

"""Quality alerts: each day, repairs grouped by product model and fault category; a group
that reaches ``quality_alert_threshold`` raises one ``QualityAlertRaised``.

Each alert has its own stream, named after (model, category, day); its decider records
the alert only while the stream is empty, so it is recorded once however many processes
run the job or how often it restarts (two racing appends: the second is a concurrency
conflict, and skipped). Counts come from the ledger's repair events and the inline
ticket-state rows, so the job never waits on an asynchronous projection.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta
from functools import partial

from services.feedback import commands, domain, read_models
from shared.app.executor import Handling
from shared.app.jobs import run_leased
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.ledger import ConcurrencyError
from shared.eventstore.outbox import relay_owner_id
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.tickets import FaultCategory

log = logging.getLogger(__name__)

SERVICE = "feedback"


async def raise_quality_alerts(platform: Platform, day: date) -> list[EventEnvelope]:
    """One pass for one day: record the alerts not yet recorded; returns those recorded."""
    threshold = platform.settings.feedback.quality_alert_threshold
    groups = await platform.db.read(lambda c: read_models.repairs_on(c, day))
    h = Handling.for_system(platform, SERVICE)
    raised: list[EventEnvelope] = []
    for (model, category), repairs in sorted(groups.items()):
        command = domain.RaiseQualityAlert(
            model, FaultCategory(category), day, tuple(repairs), threshold
        )
        if not domain.alert_due(command):
            continue  # no need for a write
        try:
            work = partial(commands.raise_quality_alert, h=h, command=command)
            outcome = await platform.db.write(work)
        except ConcurrencyError:
            continue  # another process recorded it first
        raised += outcome.events
    return raised


def quality_lease(platform: Platform, owner: str | None = None) -> Lease:
    return Lease(
        platform.db,
        "feedback:quality-alerts",
        owner or relay_owner_id(),
        platform.settings.feedback.quality_job_lease_seconds,
        platform.clock,
    )


async def raise_recent_alerts(platform: Platform) -> list[EventEnvelope]:
    """One pass: yesterday (late records) and today (a threshold crossed now), by the
    platform clock's day (UTC)."""
    today = platform.clock.now().date()
    raised: list[EventEnvelope] = []
    for day in (today - timedelta(days=1), today):
        raised += await raise_quality_alerts(platform, day)
    return raised


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    interval = platform.settings.feedback.quality_job_interval_seconds
    await run_leased(
        quality_lease(platform), stop, interval, partial(raise_recent_alerts, platform)
    )

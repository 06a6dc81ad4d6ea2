"""The SLA clock: a periodic scan for the steps of the ladder the tickets' clocks reached
(docs/sla.md) — warnings (``SlaWarning``), breaches (``SlaBreached``) and escalations
(``TicketEscalated``) — recorded once each on the ticket's stream.

Exactly once comes from the ticket's own stream, not from this process: each ticket is
decided from its folded state (``TicketState.breached``, ``sla_warned``) and appended at
the version it was read at, so a restarted scheduler finds the step already there and a
racing one fails on the expected version and records nothing. A lease keeps the usual
case to one scheduler at a time. The clock rows (``dispatch_sla_clocks.next_check_at``)
only narrow the scan.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from functools import partial

from services.dispatch import commands
from services.dispatch.read_models import sla_candidates
from shared.app.executor import Handling
from shared.app.jobs import run_leased
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.ledger import ConcurrencyError
from shared.eventstore.outbox import relay_owner_id
from shared.kernel.events.sla import SlaWarning
from shared.kernel.events.tickets import SlaBreached

log = logging.getLogger(__name__)
LEASE_NAME = "dispatch:sla_clock"


STEPS = frozenset({SlaBreached.event_type, SlaWarning.event_type})


async def record_breaches(platform: Platform, ticket_id: str, now: datetime) -> int:
    """One ticket, in its own transaction; how many steps (breaches and warnings) it
    recorded."""
    handling = Handling.for_system(platform, commands.SERVICE)
    try:
        outcome = await platform.db.write(
            lambda c: commands.record_sla_breaches(c, handling, ticket_id, now)
        )
    except ConcurrencyError:
        # Someone appended meanwhile (another scheduler, a technician): the next pass
        # decides again on the new state.
        log.info("SLA check of %s lost a race; retried next pass", ticket_id)
        return 0
    return sum(1 for e in outcome.events if e.event_type in STEPS)


async def check_sla(platform: Platform) -> int:
    """One pass over every ticket with a step of the ladder due and unrecorded; returns
    how many steps (breaches and warnings) it recorded."""
    limit = platform.settings.dispatch.sla_batch_size
    now = platform.clock.now()
    recorded = 0
    after = ""
    while True:
        batch = await platform.db.read(partial(sla_candidates, now=now, after=after, limit=limit))
        for ticket_id in batch:
            recorded += await record_breaches(platform, ticket_id, now)
        if len(batch) < limit:
            return recorded
        after = batch[-1]


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    settings = platform.settings.dispatch
    lease = Lease(
        platform.db, LEASE_NAME, relay_owner_id(), settings.sla_lease_seconds, platform.clock
    )

    async def one_pass() -> None:
        count = await check_sla(platform)
        if count:
            log.info("SLA clock recorded %d step(s)", count)

    await run_leased(lease, stop, settings.sla_poll_seconds, one_pass)

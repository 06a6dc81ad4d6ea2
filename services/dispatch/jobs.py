"""The SLA clock: a periodic scan for passed deadlines, recorded once each as
``SlaBreached`` + ``TicketEscalated`` on the ticket's stream.

Exactly once comes from the ticket's own stream, not from this process: each ticket is
decided from its folded state (``TicketState.breached``) and appended at the version it
was read at, so a restarted scheduler finds the breach already there and a racing one
fails on the expected version and records nothing. A lease keeps the usual case to one
scheduler at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.dispatch.commands import DispatchCommands
from services.dispatch.read_models import sla_candidates
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.ledger import ConcurrencyError
from shared.eventstore.outbox import relay_owner_id
from shared.kernel.events.envelope import SYSTEM_ACTOR, CommandContext

log = logging.getLogger(__name__)
LEASE_NAME = "dispatch:sla_clock"


async def check_sla(platform: Platform) -> int:
    """One pass over every ticket with a passed, unrecorded deadline; returns how many
    breaches it recorded. Each ticket is its own transaction."""
    settings = platform.settings.dispatch
    commands = DispatchCommands(platform)
    now = platform.clock.now()
    recorded = 0
    after = ""
    while True:
        async with platform.db.reading() as conn:
            batch = await sla_candidates(conn, now, after=after, limit=settings.sla_batch_size)
        for ticket_id in batch:
            context = CommandContext(actor=SYSTEM_ACTOR, service="dispatch")
            try:
                async with platform.db.transaction() as conn:
                    recorded += await commands.record_sla_breaches(conn, ticket_id, now, context)
            except ConcurrencyError:
                # Someone appended meanwhile (another scheduler, a technician): the next
                # pass decides again on the new state.
                log.info("SLA check of %s lost a race; retried next pass", ticket_id)
        if len(batch) < settings.sla_batch_size:
            return recorded
        after = batch[-1]


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    settings = platform.settings.dispatch
    lease = Lease(
        platform.db, LEASE_NAME, relay_owner_id(), settings.sla_lease_seconds, platform.clock
    )
    try:
        while not stop.is_set():
            try:
                if await lease.acquire():
                    count = await check_sla(platform)
                    if count:
                        log.info("SLA clock recorded %d breach(es)", count)
            except Exception:
                log.exception("SLA clock pass failed; retrying next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.sla_poll_seconds)
    finally:
        with contextlib.suppress(Exception):
            await lease.release()

"""Forgetting commands' answers once their keeping period is over
(``TICKETLINE_IDEMPOTENCY_KEEP_DAYS``): without it the table grows with every keyed
request for ever. One pass deletes in small transactions, so writers are not held up."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

from shared.app.jobs import run_leased
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.outbox import relay_owner_id
from shared.http.idempotency import forget_answers_before

log = logging.getLogger(__name__)

LEASE_NAME = "idempotency-expiry"
BATCH = 1000


async def forget_expired_answers(platform: Platform) -> int:
    """Delete every answer older than the keeping period; how many."""
    before = platform.clock.now() - timedelta(days=platform.settings.idempotency_keep_days)
    forgotten = 0
    while done := await platform.db.write(lambda c: forget_answers_before(c, before, BATCH)):
        forgotten += done
        if done < BATCH:
            break
    if forgotten:
        log.info("idempotency: %d answers older than %s forgotten", forgotten, before)
    return forgotten


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    settings = platform.settings
    lease = Lease(
        platform.db,
        LEASE_NAME,
        relay_owner_id(),
        settings.idempotency_expiry_lease_seconds,
        platform.clock,
    )
    await run_leased(
        lease,
        stop,
        settings.idempotency_expiry_interval_seconds,
        partial(forget_expired_answers, platform),
    )

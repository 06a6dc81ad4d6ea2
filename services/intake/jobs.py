"""Periodic intake work: retention of personal data (docs/personal-data.md).

``erase_expired_customers`` is one pass (tests drive it with a ManualClock); ``run_job``
repeats it under a lease, so two processes never work the same customers at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.intake import commands
from services.intake.read_models import retention_candidates
from shared.app.executor import Handling
from shared.app.jobs import run_leased
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.outbox import relay_owner_id
from shared.kernel.errors import RuleViolation

log = logging.getLogger(__name__)
SERVICE = "intake"


def _erase_if_due(conn: Connection, h: Handling, customer_id: str, cutoff: datetime) -> bool:
    """Erase one customer if still due (asked again in the erasing transaction: a ticket
    reopened or a hold placed since the scan keeps the data)."""
    if not retention_candidates(conn, cutoff, 1, customer_id):
        return False
    days = h.settings.privacy.retention_days
    outcome = commands.erase_customer(
        conn,
        h,
        customer_id,
        request_id=f"retention-{h.now():%Y-%m-%d}",
        legal_basis=f"retention: {days} days after the customer's last ticket closed",
        source="retention",
    )
    return bool(outcome.events)


async def erase_expired_customers(platform: Platform, *, limit: int | None = None) -> list[str]:
    """Erase every customer whose tickets are all closed since the retention period, and
    who is not under legal hold; returns them. One unit of work per customer."""
    privacy = platform.settings.privacy
    cutoff = platform.clock.now() - timedelta(days=privacy.retention_days)
    batch = limit or privacy.retention_batch_size
    h = Handling.for_system(platform, SERVICE)
    erased: list[str] = []
    while True:
        due = await platform.db.read(lambda c: retention_candidates(c, cutoff, batch))
        done = 0
        for customer_id in due:
            try:
                if await platform.db.write(
                    lambda c, cid=customer_id: _erase_if_due(c, h, cid, cutoff)
                ):
                    erased.append(customer_id)
                    done += 1
            except RuleViolation as exc:  # a hold or a reopen won the race: kept
                log.info("retention: customer %s kept: %s", customer_id, exc.rule)
        if len(due) < batch or done == 0 or limit is not None:
            return erased


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    privacy = platform.settings.privacy
    lease = Lease(
        platform.db,
        "privacy-retention",
        relay_owner_id(),
        privacy.retention_lease_seconds,
        platform.clock,
    )

    async def one_pass() -> None:
        erased = await erase_expired_customers(platform)
        if erased:
            log.info("retention: erased %d customers", len(erased))

    await run_leased(lease, stop, privacy.retention_poll_seconds, one_pass)

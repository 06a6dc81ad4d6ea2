"""Periodic parts work: detect old-part returns past their due date.

``check_overdue_returns`` is one pass (tests drive it with a ManualClock); ``run_job``
repeats it under a lease so that several processes never both record the same fact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import Connection

from services.parts import commands
from services.parts.domain import PendingReturn
from services.parts.read_models import due_returns
from shared.app.executor import Handling
from shared.app.jobs import run_leased
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.eventstore.outbox import relay_owner_id

log = logging.getLogger(__name__)
SERVICE = "parts"


async def check_overdue_returns(platform: Platform, *, limit: int = 500) -> int:
    """Record ``OldPartReturnOverdue`` once for every expected return now past due; returns
    how many were recorded. One unit of work per return: each claims its row in the
    transaction that records the event, so a second pass, a restart or a concurrent runner
    records nothing again."""
    now = platform.clock.now()
    due = await platform.db.read(lambda c: due_returns(c, now, limit))
    h = Handling.for_system(platform, SERVICE)

    def record(expected: PendingReturn) -> Callable[[Connection], bool]:
        return lambda conn: commands.record_overdue(conn, h, expected, now)

    return sum([await platform.db.write(record(expected)) for expected in due])


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    settings = platform.settings.parts
    lease = Lease(
        platform.db,
        "parts-overdue-returns",
        relay_owner_id(),
        settings.overdue_lease_seconds,
        platform.clock,
    )

    async def one_pass() -> None:
        count = await check_overdue_returns(platform)
        if count:
            log.info("recorded %d overdue old-part returns", count)

    await run_leased(lease, stop, settings.overdue_check_seconds, one_pass)

"""Periodic parts work: detect old-part returns past their due date.

``check_overdue_returns`` is one pass (tests drive it with a ManualClock); ``run_job``
repeats it under a lease so that several processes never both record the same fact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import uuid4

from sqlalchemy import update

from services.parts.projections import RETURNS
from services.parts.read_models import due_returns
from services.parts.tables import parts_returns
from shared.app.commands import execute_ticket_command
from shared.app.platform import Platform
from shared.eventstore.leases import Lease
from shared.kernel.events.envelope import SYSTEM_ACTOR, CommandContext, EventPayload
from shared.kernel.events.tickets import OldPartReturnOverdue
from shared.kernel.ticket import TicketState

log = logging.getLogger(__name__)
SERVICE = "parts"


async def check_overdue_returns(platform: Platform, *, limit: int = 500) -> int:
    """Record ``OldPartReturnOverdue`` once for every expected return now past due; returns
    how many were recorded."""
    now = platform.clock.now()
    async with platform.db.reading() as conn:
        rows = await due_returns(conn, now, limit)
    recorded = 0
    t = parts_returns.c
    for row in rows:
        async with platform.db.transaction() as conn:
            # Claim the row in the transaction that records the event: a second pass, a
            # restart or a concurrent runner finds it claimed and records nothing.
            claimed = await conn.execute(
                update(parts_returns)
                .where(
                    t.return_id == row.return_id,
                    t.status == "expected",
                    t.overdue_detected_at.is_(None),
                )
                .values(status="overdue", overdue_detected_at=now)
            )
            if claimed.rowcount != 1:
                continue
            payload = OldPartReturnOverdue(
                part_number=row.part_number,
                old_serial=row.old_serial,
                quantity=row.quantity - row.returned_quantity,
                service_point_id=row.service_point_id,
                due_at=row.due_at,
                detected_at=now,
            )

            def decide(_state: TicketState, p: EventPayload = payload) -> list[EventPayload]:
                return [p]

            result = await execute_ticket_command(
                platform,
                conn,
                row.ticket_id,
                CommandContext(actor=SYSTEM_ACTOR, service=SERVICE),
                decide,
            )
            # Same values as the claim; keeps the projection's stream bookkeeping current.
            await platform.runner.apply(conn, RETURNS, result.events)
        recorded += 1
    return recorded


async def run_job(platform: Platform, stop: asyncio.Event) -> None:
    settings = platform.settings.parts
    lease = Lease(
        platform.db,
        "parts-overdue-returns",
        f"parts-{uuid4().hex[:12]}",
        settings.overdue_lease_seconds,
        platform.clock,
    )
    try:
        while not stop.is_set():
            try:
                if await lease.acquire():
                    count = await check_overdue_returns(platform)
                    if count:
                        log.info("recorded %d overdue old-part returns", count)
            except Exception:  # keep the job alive; the next pass retries
                log.exception("overdue-return check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.overdue_check_seconds)
    finally:
        with contextlib.suppress(Exception):
            await lease.release()

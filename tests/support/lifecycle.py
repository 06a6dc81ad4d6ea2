"""Ticket steps beyond intake, written straight to the ticket stream with the existing
payloads (the dispatch service's HTTP API is built elsewhere; tests must not need it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from shared.commands import TicketCommandResult, execute_ticket_command
from shared.domain.ticket import TicketState
from shared.events.envelope import Actor, CommandContext, EventPayload
from shared.events.tickets import (
    CostBearer,
    RepairOutcome,
    TicketDispatched,
    TicketRepaired,
    TicketVisited,
    UsedPart,
)
from shared.platform import Platform


async def append_ticket_events(
    platform: Platform,
    ticket_id: str,
    payloads: Sequence[EventPayload],
    *,
    role: str = "dispatcher",
    service: str = "dispatch",
) -> TicketCommandResult:
    context = CommandContext(actor=Actor(subject=f"{role}-1", role=role), service=service)

    def decide(_state: TicketState) -> list[EventPayload]:
        return list(payloads)

    async with platform.db.transaction() as conn:
        return await execute_ticket_command(platform, conn, ticket_id, context, decide)


async def dispatch_ticket(
    platform: Platform,
    ticket_id: str,
    *,
    service_point_id: str,
    technician_id: str = "tech-1",
    region: str = "east",
) -> TicketCommandResult:
    now = platform.clock.now()
    return await append_ticket_events(
        platform,
        ticket_id,
        [
            TicketDispatched(
                region=region,
                service_point_id=service_point_id,
                technician_id=technician_id,
                appointment_start=now + timedelta(hours=2),
                appointment_end=now + timedelta(hours=4),
                reason="nearest service point with a free technician",
            )
        ],
    )


async def visit_ticket(
    platform: Platform, ticket_id: str, *, technician_id: str = "tech-1"
) -> TicketCommandResult:
    return await append_ticket_events(
        platform,
        ticket_id,
        [
            TicketVisited(
                technician_id=technician_id,
                arrived_at=platform.clock.now(),
                findings="motor bearings worn",
            )
        ],
        role="technician",
    )


async def repair_ticket(
    platform: Platform,
    ticket_id: str,
    parts_used: Sequence[UsedPart] = (),
    *,
    cost_borne_by: CostBearer = CostBearer.warranty,
    technician_id: str = "tech-1",
) -> TicketCommandResult:
    return await append_ticket_events(
        platform,
        ticket_id,
        [
            TicketRepaired(
                outcome=RepairOutcome.replaced if parts_used else RepairOutcome.fixed,
                parts_used=list(parts_used),
                labour_minutes=45,
                cost_borne_by=cost_borne_by,
                technician_id=technician_id,
            )
        ],
        role="technician",
    )

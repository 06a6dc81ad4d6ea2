"""Running a command against a ticket: load, decide (pure), append, project inline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.app.platform import Platform
from shared.eventstore.ledger import ConcurrencyError, PendingEvent
from shared.kernel.events.envelope import CommandContext, EventEnvelope, EventPayload
from shared.kernel.ticket import TicketState, evolve, fold

Decision = Callable[[TicketState], Sequence[EventPayload | PendingEvent]]


@dataclass(frozen=True)
class TicketCommandResult:
    before: TicketState
    after: TicketState
    events: list[EventEnvelope]


async def load_ticket(platform: Platform, conn: AsyncConnection, ticket_id: str) -> TicketState:
    return fold(ticket_id, await platform.store.read_stream(conn, ticket_id))


async def execute_ticket_command(
    platform: Platform,
    conn: AsyncConnection,
    ticket_id: str,
    context: CommandContext,
    decide: Decision,
    *,
    expected_version: int | None = None,
) -> TicketCommandResult:
    """``expected_version`` (from ``If-Match``) makes a stale caller fail with a conflict;
    without it the command still appends at the version it decided on."""
    before = await load_ticket(platform, conn, ticket_id)
    if expected_version is not None and expected_version != before.version:
        raise ConcurrencyError(ticket_id, expected_version, before.version)
    decided = [d if isinstance(d, PendingEvent) else PendingEvent(d) for d in decide(before)]
    after = before
    for item in decided:
        after = evolve(after, item.payload, occurred_at=item.occurred_at or platform.clock.now())
    written = await platform.store.append_to_stream(
        conn, ticket_id, before.version, decided, context, region=after.region
    )
    await platform.project_inline(conn, written)
    return TicketCommandResult(before, after, written)

"""Repeat repairs, flagged as a reactor on ``TicketReceived``.

Why a reactor and not at dispatch time: the flag belongs to the ticket from its intake
(the dispatcher and the scorecards see it before anyone is sent), and intake stays
unaware of repairs. The decision uses event times and only repairs recorded before the
ticket (ledger positions), so it is the same whenever it runs; the ticket's own stream
(an existing ``RepeatRepairFlagged``) plus the runner's per-stream versions make a second
delivery a no-op.
"""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch import domain
from services.dispatch.projections import TICKET_FLAGS
from services.dispatch.read_models import earlier_repairs
from shared.app.commands import execute_ticket_command, load_ticket
from shared.app.platform import Platform
from shared.eventstore.projection import Projection
from shared.kernel.events.envelope import SYSTEM_ACTOR, CommandContext, EventEnvelope, EventPayload
from shared.kernel.events.tickets import TicketReceived
from shared.kernel.ticket import TicketState


class RepeatRepairReactor:
    name: ClassVar[str] = "dispatch_repeat_repair"
    tables: ClassVar[tuple[Table, ...]] = ()
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        if event.event_type != TicketReceived.event_type:
            return
        serial = event.payload.get("product", {}).get("serial_number")
        if not serial:
            return
        window = self.platform.settings.dispatch.repeat_repair_window_days
        state = await load_ticket(self.platform, conn, event.stream_id)
        repairs = await earlier_repairs(
            conn,
            self.platform.store,
            serial,
            ticket_id=event.stream_id,
            before_position=event.position,
        )
        if not domain.decide_repeat_repair(state, repairs, window_days=window):
            return
        context = CommandContext(
            actor=SYSTEM_ACTOR,
            service="dispatch",
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )

        def decide(s: TicketState) -> list[EventPayload]:
            return domain.decide_repeat_repair(s, repairs, window_days=window)

        result = await execute_ticket_command(self.platform, conn, event.stream_id, context, decide)
        await self.platform.runner.apply(conn, TICKET_FLAGS, result.events)


def reactors(platform: Platform) -> list[Projection]:
    return [RepeatRepairReactor(platform)]

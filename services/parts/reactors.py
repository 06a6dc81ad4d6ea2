"""The parts service reacts to repairs: a ticket's TicketRepaired consumes the parts
issued for it (or the service point's shelf) and creates the expected old-part returns."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.parts import domain, read_models
from services.parts.commands import PartsCommands
from services.parts.tables import parts_reactor_triggers
from shared.app.platform import Platform
from shared.eventstore.ledger import PendingEvent
from shared.eventstore.projection import Projection
from shared.kernel.events.envelope import SYSTEM_ACTOR, CommandContext, EventEnvelope
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import TicketRepaired
from shared.kernel.ticket import fold

SERVICE = "parts"


class RepairReactor:
    name: ClassVar[str] = "parts_repair_reactor"
    # Nothing to reset: what it wrote is in the ledger, and forgetting the handled
    # triggers would consume the same repair twice.
    tables: ClassVar[tuple[Table, ...]] = ()
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        if event.event_type != TicketRepaired.event_type:
            return
        trigger = str(event.event_id)
        seen = await conn.execute(
            select(parts_reactor_triggers.c.event_id).where(
                parts_reactor_triggers.c.event_id == trigger
            )
        )
        if seen.first() is not None:
            return  # delivered before: its stock movements are already recorded
        await conn.execute(
            insert(parts_reactor_triggers).values(event_id=trigger, handled_at=event.recorded_at)
        )
        repair = typed_payload(event)
        assert isinstance(repair, TicketRepaired)
        if repair.parts_used:
            await self._consume(conn, event, repair)

    async def _consume(
        self, conn: AsyncConnection, event: EventEnvelope, repair: TicketRepaired
    ) -> None:
        store, commands = self.platform.store, PartsCommands(self.platform)
        # The ticket as it stood at the repair: its dispatch names the service point.
        ticket = fold(
            event.stream_id,
            await store.read_stream(conn, event.stream_id, to_version=event.stream_version),
        )
        service_point = ticket.dispatch.service_point_id if ticket.dispatch else None
        part_numbers = sorted({p.part_number.strip().upper() for p in repair.parts_used})
        return_required: dict[str, bool] = {}
        for number in part_numbers:
            row = await read_models.get_part(conn, number)
            return_required[number] = bool(row and row.return_required)
        requisitions = [
            await commands.load_requisition(conn, rid, None)
            for rid in await read_models.open_requisitions_for_ticket(conn, event.stream_id)
        ]
        levels: dict[tuple[str, str], domain.StockLevel] = {}
        keys = {(r.source_location_id, r.raised.part_number) for r in requisitions if r.raised}
        if service_point and await read_models.get_location(conn, service_point) is not None:
            keys |= {(service_point, number) for number in part_numbers}
        for location, number in sorted(k for k in keys if k[0] is not None):
            levels[(location, number)] = await commands.load_stock(conn, location, number)
        decided = domain.decide_consumption(
            domain.RepairContext(
                ticket_id=event.stream_id,
                trigger_event_id=str(event.event_id),
                repaired_at=event.occurred_at,
                repair=repair,
                service_point_id=service_point,
                region=ticket.region,
                return_required=return_required,
            ),
            requisitions,
            levels,
            return_days=self.platform.settings.parts.old_part_return_days,
        )
        versions = {domain.requisition_stream(r.requisition_id): r.version for r in requisitions}
        versions |= {domain.stock_stream(*k): lv.version for k, lv in levels.items()}
        context = CommandContext(
            actor=SYSTEM_ACTOR,
            service=SERVICE,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
        for stream_id, payloads in decided.items():
            region = await self._region(conn, stream_id, ticket.region)
            await commands.append(
                conn,
                stream_id,
                # The versions the decision read; the ticket's parts stream only grows.
                versions.get(stream_id, (await store.stream_head(conn, stream_id))[0]),
                [PendingEvent(p, occurred_at=event.occurred_at) for p in payloads],
                context,
                region,
            )

    @staticmethod
    async def _region(
        conn: AsyncConnection, stream_id: str, ticket_region: str | None
    ) -> str | None:
        if stream_id.startswith("stock:"):
            location = await read_models.get_location(conn, stream_id.split(":")[1])
            return location.region if location else None
        return ticket_region


def reactors(platform: Platform) -> list[Projection]:
    return [RepairReactor(platform)]

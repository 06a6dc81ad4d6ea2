"""The parts service reacts to repairs: a ticket's TicketRepaired consumes the parts
issued for it (or the service point's shelf) and creates the expected old-part returns;
its TicketClosed releases what is still only reserved for it.

Repairs imported from the replaced system's history are left alone: their parts were
used long ago (the import brings the usage history and today's stock on hand), and their
old-part returns were the old system's business (the compliance view says ``unknown``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from sqlalchemy import Connection, Table, insert, select

from services.parts import commands
from services.parts.tables import parts_reactor_triggers
from shared.app.executor import Handling
from shared.app.platform import Platform
from shared.eventstore.projection import Projection
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.tickets import TicketClosed, TicketRepaired
from shared.kernel.imports import is_imported

SERVICE = "parts"
_REACTIONS = {
    TicketRepaired.event_type: commands.consume_on_repair,
    TicketClosed.event_type: commands.release_on_close,
}


def first_delivery(conn: Connection, event: EventEnvelope) -> bool:
    """Record the trigger as handled; False when it was (its movements are recorded),
    whatever the runner's bookkeeping says."""
    t = parts_reactor_triggers.c
    trigger = str(event.event_id)
    if conn.execute(select(t.event_id).where(t.event_id == trigger)).first() is not None:
        return False
    conn.execute(
        insert(parts_reactor_triggers).values(event_id=trigger, handled_at=event.recorded_at)
    )
    return True


class RepairReactor:
    name: ClassVar[str] = "parts_repair_reactor"
    # Nothing to reset: what it wrote is in the ledger, and forgetting the handled
    # triggers would consume the same repair twice.
    tables: ClassVar[tuple[Table, ...]] = ()
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            react = _REACTIONS.get(event.event_type)
            if react is not None and not is_imported(event) and first_delivery(conn, event):
                react(conn, self.handling(event), event)

    def handling(self, event: EventEnvelope) -> Handling:
        """The parts service acting on its own, caused by ``event``."""
        return Handling.for_system(self.platform, SERVICE, event)


def reactors(platform: Platform) -> list[Projection]:
    return [RepairReactor(platform)]

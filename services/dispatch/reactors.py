"""Repeat repairs, flagged as a reactor on ``TicketReceived``.

Why a reactor and not at dispatch time: the flag belongs to the ticket from its intake
(the dispatcher and the scorecards see it before anyone is sent), and intake stays
unaware of repairs. The decision uses event times and only repairs recorded before the
ticket (ledger positions), so it is the same whenever it runs; the ticket's own stream
(an existing ``RepeatRepairFlagged``) plus the runner's per-stream versions make a second
delivery a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from sqlalchemy import Connection, Table

from services.dispatch import commands
from shared.app.platform import Platform
from shared.eventstore.projection import Projection
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.tickets import TicketReceived


class RepeatRepairReactor:
    name: ClassVar[str] = "dispatch_repeat_repair"
    tables: ClassVar[tuple[Table, ...]] = ()
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            if event.event_type == TicketReceived.event_type:
                handling = commands.system_handling(self.platform, cause=event)
                commands.flag_repeat_repair(conn, handling, event)


def reactors(platform: Platform) -> list[Projection]:
    return [RepeatRepairReactor(platform)]

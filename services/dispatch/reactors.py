"""Repeat repairs, flagged as a reactor on ``TicketReceived``.

Why a reactor and not at dispatch time: the flag belongs to the ticket from its intake
(the dispatcher and the scorecards see it before anyone is sent), and intake stays
unaware of repairs. The decision uses event times and only repairs recorded before the
ticket (ledger positions), so it is the same whenever it runs; the ticket's own stream
(an existing ``RepeatRepairFlagged``) plus the runner's per-stream versions make a second
delivery a no-op. An imported ticket's receipt was checked by the import, with the same
decide function, at the moment of its receipt (``services/dispatch/importing.py``).
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
from shared.kernel.imports import is_imported


class RepeatRepairReactor:
    name: ClassVar[str] = "dispatch_repeat_repair"
    tables: ClassVar[tuple[Table, ...]] = ()
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            if event.event_type == TicketReceived.event_type and not is_imported(event):
                handling = commands.system_handling(self.platform, cause=event)
                commands.flag_repeat_repair(conn, handling, event)


def reactors(platform: Platform) -> list[Projection]:
    return [RepeatRepairReactor(platform)]

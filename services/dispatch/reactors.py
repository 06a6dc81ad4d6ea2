"""Dispatch's reactors: repeat repairs flagged on ``TicketReceived``, and the SLA clock's
automatic pause while a requisition's part is on its way (docs/sla.md).

Repeat repairs, flagged as a reactor on ``TicketReceived``.

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
from typing import Any, ClassVar

from sqlalchemy import Connection, Table

from services.dispatch import commands
from shared.app.executor import Handling
from shared.app.platform import Platform
from shared.eventstore.projection import Projection
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.parts import (
    RequisitionCancelled,
    RequisitionIssued,
    RequisitionRaised,
    RequisitionReserved,
)
from shared.kernel.events.registry import payload_dict
from shared.kernel.events.tickets import TicketReceived
from shared.kernel.imports import is_imported


class RepeatRepairReactor:
    name: ClassVar[str] = "dispatch_repeat_repair"
    tables: ClassVar[tuple[Table, ...]] = ()
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        with self.platform.executor(commands.SERVICE).appends_held_back(conn):
            for event in events:
                if event.event_type == TicketReceived.event_type and not is_imported(event):
                    handling = Handling.for_system(self.platform, commands.SERVICE, event)
                    commands.flag_repeat_repair(conn, handling, event)


WAITING_FOR_PARTS = "waiting_for_parts"


class PartsPauseReactor:
    """The automatic pause for parts (``pause_for_parts`` in the ticket's policy): a
    requisition whose part is reserved at another location than the one that asked (the
    service point had none: it comes from the regional center or headquarters) pauses the
    ticket's clock, ``waiting_for_parts``; the part issued to the technician (or the
    requisition cancelled) resumes it — only that pause. Idempotent: a second delivery
    finds the clock already paused (or running) and records nothing."""

    name: ClassVar[str] = "dispatch_sla_parts"
    tables: ClassVar[tuple[Table, ...]] = ()
    stream_types: ClassVar[tuple[str, ...]] = ("requisition",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        with self.platform.executor(commands.SERVICE).appends_held_back(conn):
            self._react(conn, events)

    def _react(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            if event.event_type not in _PARTS_EVENTS:
                continue
            raised = _raised(conn, self.platform, event.stream_id)
            if raised is None:
                continue
            handling = Handling.for_system(self.platform, commands.SERVICE, event)
            ticket_id, requisition = str(raised["ticket_id"]), str(raised["requisition_id"])
            if event.event_type == RequisitionReserved.event_type:
                source = payload_dict(event)["source_location_id"]
                if source != raised["requesting_location_id"]:
                    note = f"part {raised['part_number']} comes from {source}"
                    commands.pause(conn, handling, ticket_id, WAITING_FOR_PARTS, note, requisition)
            else:
                note = f"requisition {event.event_type.removeprefix('Requisition').lower()}"
                commands.resume(conn, handling, ticket_id, note, requisition)


_PARTS_EVENTS = frozenset(
    {
        RequisitionReserved.event_type,
        RequisitionIssued.event_type,
        RequisitionCancelled.event_type,
    }
)


def _raised(conn: Connection, platform: Platform, stream_id: str) -> dict[str, Any] | None:
    """The requisition's ``RequisitionRaised`` (ticket, part, asking location)."""
    first = platform.store.read_stream(conn, stream_id, to_version=1)
    if not first or first[0].event_type != RequisitionRaised.event_type:
        return None
    return payload_dict(first[0])


def reactors(platform: Platform) -> list[Projection]:
    return [RepeatRepairReactor(platform), PartsPauseReactor(platform)]

"""Dispatch's read models as projections: the service network and the ticket flags.

Both are deterministic functions of the events (event times, never the wall clock), so a
rebuild gives the same rows. The service declares them inline (``service.py``): the
network for the network members' streams, the flags for tickets, so a dispatcher reads
what was just recorded; the asynchronous runs then find those events already applied.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

from sqlalchemy import Connection, Table

from services.dispatch.tables import service_points, technicians, ticket_flags
from shared.eventstore.projection import Row, RowProjection
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.network import (
    ServicePointRegistered,
    ServicePointUpdated,
    TechnicianDeactivated,
    TechnicianReactivated,
    TechnicianRegistered,
    TechnicianUpdated,
)
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import (
    RepeatRepairFlagged,
    SlaBreached,
    SlaDeadline,
    TicketEscalated,
    TicketReopened,
)


def _service_point_values(p: ServicePointRegistered | ServicePointUpdated) -> Row:
    return {
        "name": p.name,
        "level": p.level.value,
        "kind": p.kind.value if p.kind else None,
        "parent_id": p.parent_id,
        "region": p.region,
        "postcodes": list(p.postcodes),
        "address": p.address,
        "active": p.active,
    }


def _technician_values(p: TechnicianRegistered | TechnicianUpdated) -> Row:
    return {
        "name": p.name,
        "service_point_id": p.service_point_id,
        "skills": sorted(set(p.skills)),
        "working_hours": [s.model_dump(mode="json") for s in p.working_hours],
        "timezone": p.timezone,
    }


def _stamp(event: EventEnvelope) -> Row:
    return {"version": event.stream_version, "updated_at": event.recorded_at}


def _registered(event: EventEnvelope) -> Row:
    return {"id": event.stream_id, "registered_at": event.occurred_at, **_stamp(event)}


class ServicePointRows(RowProjection):
    table: ClassVar[Table] = service_points

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        return (event.stream_id,) if event.stream_type == "service_point" else None

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        payload = typed_payload(event)
        match payload:
            case ServicePointRegistered():
                return {**_registered(event), **_service_point_values(payload)}
            case ServicePointUpdated() if row is not None:
                return {**row, **_service_point_values(payload), **_stamp(event)}
        return row


class TechnicianRows(RowProjection):
    table: ClassVar[Table] = technicians

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        return (event.stream_id,) if event.stream_type == "technician" else None

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        payload = typed_payload(event)
        values: Row
        match payload:
            case TechnicianRegistered():
                return {**_registered(event), "active": True, **_technician_values(payload)}
            case TechnicianUpdated():
                values = _technician_values(payload)
            case TechnicianDeactivated():
                values = {"active": False}
            case TechnicianReactivated():
                values = {"active": True}
            case _:
                return row
        return None if row is None else {**row, **values, **_stamp(event)}


class NetworkProjection:
    """``dispatch_service_points`` and ``dispatch_technicians``: the network as it stands."""

    name: ClassVar[str] = "dispatch_network"
    tables: ClassVar[tuple[Table, ...]] = (service_points, technicians)
    stream_types: ClassVar[tuple[str, ...]] = ("service_point", "technician")
    parts: ClassVar[tuple[RowProjection, ...]] = (ServicePointRows(), TechnicianRows())

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        for part in self.parts:
            part.apply(conn, events)


_FLAG_EVENTS = frozenset(
    {
        SlaBreached.event_type,
        TicketEscalated.event_type,
        TicketReopened.event_type,
        RepeatRepairFlagged.event_type,
    }
)


def _flag_values(event: EventEnvelope) -> Row | None:
    """The flags one event sets on its ticket (None: it sets none)."""
    payload = typed_payload(event)
    match payload:
        case SlaBreached():
            response = payload.deadline is SlaDeadline.response
            return {
                "response_breached_at" if response else "resolution_breached_at": (
                    payload.detected_at
                )
            }
        case TicketEscalated():
            return {
                "escalated": True,
                "escalation_level": payload.level,
                "escalation_cause": payload.cause.value,
            }
        case TicketReopened() if payload.escalated:
            return {
                "escalated": True,
                "escalation_level": "regional_center",
                "escalation_cause": "reopened",
            }
        case RepeatRepairFlagged():
            return {"repeat_of_ticket_id": payload.earlier_ticket_id}
    return None


def _no_flags(ticket_id: str) -> Row:
    return {
        "ticket_id": ticket_id,
        "escalated": False,
        "escalation_level": None,
        "escalation_cause": None,
        "response_breached_at": None,
        "resolution_breached_at": None,
        "repeat_of_ticket_id": None,
    }


class TicketFlagsProjection(RowProjection):
    """Escalations, SLA breaches and repeat repairs per ticket, for the work lists. A row
    exists once a ticket has any flag."""

    name: ClassVar[str] = "dispatch_ticket_flags"
    table: ClassVar[Table] = ticket_flags
    tables: ClassVar[tuple[Table, ...]] = (ticket_flags,)
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        return (event.stream_id,) if event.event_type in _FLAG_EVENTS else None

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        values: dict[str, Any] | None = _flag_values(event)
        if values is None:
            return row
        return {**(row or _no_flags(event.stream_id)), **values, "updated_at": event.recorded_at}


NETWORK = NetworkProjection()
TICKET_FLAGS = TicketFlagsProjection()
PROJECTIONS = (NETWORK, TICKET_FLAGS)

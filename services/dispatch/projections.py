"""Dispatch's read models as projections: the service network and the ticket flags.

Both are deterministic functions of the events (event times, never the wall clock), so a
rebuild gives the same rows. The service declares them inline (``service.py``): the
network for the network members' streams, the flags for tickets, so a dispatcher reads
what was just recorded; the asynchronous runs then find those events already applied.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Connection, Table

from services.dispatch.tables import (
    service_points,
    sla_clocks,
    sla_terms,
    technicians,
    ticket_flags,
)
from shared.app.config import get_settings
from shared.eventstore.ledger import EventStore
from shared.eventstore.projection import Row, RowProjection, upsert_rows
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.network import (
    ServicePointRegistered,
    ServicePointUpdated,
    TechnicianDeactivated,
    TechnicianReactivated,
    TechnicianRegistered,
    TechnicianUpdated,
)
from shared.kernel.events.registry import payload_dict, typed_payload
from shared.kernel.events.tickets import (
    RepeatRepairFlagged,
    SlaBreached,
    SlaDeadline,
    TicketEscalated,
    TicketReopened,
)
from shared.kernel.sla import RESOLUTION, RESPONSE, SlaClock, sla_clock
from shared.kernel.ticket import TICKETS, TicketState
from shared.readmodels.sla import TermsReader


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


# --- SLA: the clock per ticket, and the terms as they stand ------------------------------


def clock_row(state: TicketState, clock: SlaClock, version: int, at: datetime) -> Row:
    """A ticket's clock row: the clock at its latest event (``at``)."""
    response, resolution = clock.deadline(RESPONSE), clock.deadline(RESOLUTION)
    assert response is not None
    pause = state.sla_pauses[-1] if clock.paused else None
    warned = sorted(
        (t.percent, t.level)
        for d in clock.deadlines
        for t in d.thresholds
        if t.recorded and not t.is_breach and t.level is not None
    )
    return {
        "ticket_id": state.ticket_id,
        "policy_id": clock.policy_id,
        "policy_version": clock.policy_version if clock.policy_id else None,
        "paused": clock.paused,
        "pause_reason": pause.reason if pause else None,
        "paused_since": pause.since if pause else None,
        "response_status": response.status,
        "response_due_at": response.due_at if response.open else None,
        "resolution_status": resolution.status if resolution else None,
        "resolution_due_at": resolution.due_at if resolution and resolution.open else None,
        "due_at": clock.due_at,
        "next_check_at": clock.next_check_at,
        "warning_level": warned[-1][1] if warned else None,
        "warning_percent": warned[-1][0] if warned else None,
        "version": version,
        "updated_at": at,
    }


class SlaClocksProjection:
    """``dispatch_sla_clocks``: each ticket's clock recomputed from its stream and the
    terms pinned on it (immutable versions), at its latest event — incremental and
    rebuilt rows are identical. The built-in policy's ladder is this process's setting."""

    name: ClassVar[str] = "dispatch_sla_clocks"
    tables: ClassVar[tuple[Table, ...]] = (sla_clocks,)
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)
    # Each clock is recomputed from its ticket's stream, read whole: rebuilt in stream order.
    recomputes_whole_streams: ClassVar[bool] = True

    def __init__(self) -> None:
        self.store = EventStore()

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        tickets = sorted({e.stream_id for e in events})
        if not tickets:
            return
        reader = TermsReader.configured(conn, self.store, get_settings().sla)
        rows = []
        streams = self.store.read_streams(conn, tickets)
        for ticket_id in tickets:
            stream = streams.get(ticket_id, [])
            state = TICKETS.fold(ticket_id, stream)
            if not state.exists or state.received_at is None:
                continue
            last = stream[-1]
            # As of the latest time the stream knows: an event may be dated before the one
            # it follows (an imported repeat-repair flag dates from the receipt, after the
            # diagnosis), and a clock read before the response left it "due" for ever.
            at = max(e.occurred_at for e in stream)
            clock = sla_clock(state, reader.for_ticket(state), at)
            rows.append(clock_row(state, clock, last.stream_version, at))
        upsert_rows(conn, sla_clocks, rows)


class SlaTermsProjection(RowProjection):
    """``dispatch_sla_terms``: each calendar's and policy's latest description."""

    name: ClassVar[str] = "dispatch_sla_terms"
    table: ClassVar[Table] = sla_terms
    tables: ClassVar[tuple[Table, ...]] = (sla_terms,)
    stream_types: ClassVar[tuple[str, ...]] = ("calendar", "sla_policy")

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        return (event.stream_type, event.stream_id.split(":", 1)[1])

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        description = payload_dict(event)
        return {
            "kind": event.stream_type,
            "id": event.stream_id.split(":", 1)[1],
            "name": description["name"],
            "version": event.stream_version,
            "description": description,
            "updated_at": event.recorded_at,
        }


SLA_CLOCKS = SlaClocksProjection()
SLA_TERMS = SlaTermsProjection()
PROJECTIONS = (NETWORK, TICKET_FLAGS, SLA_CLOCKS, SLA_TERMS)

"""Ticket-state projection: one row per ticket with status, key times, assignee, deadlines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import Column, Index, Integer, String, Table, func, insert, literal, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.eventstore.db import UtcDateTime, metadata
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import (
    ContactDetailsCorrected,
    FollowUpRecorded,
    TicketClosed,
    TicketDiagnosed,
    TicketDispatched,
    TicketReceived,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
)
from shared.kernel.ticket import TicketStatus

ticket_state = Table(
    "ticket_state",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("ticket_number", String(32), nullable=False, unique=True),
    Column("status", String(20), nullable=False),
    Column("region", String(32), nullable=False),
    Column("urgency", String(10), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("warranty_status", String(20), nullable=False),
    Column("customer_name", String(200), nullable=False),
    Column("customer_phone", String(32), nullable=False),
    Column("address_line", String(200), nullable=False),
    Column("product_model", String(200), nullable=False),
    Column("product_line", String(200), nullable=True),
    Column("serial_number", String(200), nullable=True),
    Column("category", String(20), nullable=True),
    Column("complexity", String(10), nullable=True),
    Column("resolution_path", String(20), nullable=True),
    Column("service_point_id", String(200), nullable=True),
    Column("technician_id", String(200), nullable=True),
    Column("appointment_start", UtcDateTime, nullable=True),
    Column("appointment_end", UtcDateTime, nullable=True),
    Column("repair_outcome", String(20), nullable=True),
    Column("satisfaction_score", Integer, nullable=True),
    Column("possible_duplicate_of", String(36), nullable=True),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("responded_at", UtcDateTime, nullable=True),
    Column("diagnosed_at", UtcDateTime, nullable=True),
    Column("dispatched_at", UtcDateTime, nullable=True),
    Column("visited_at", UtcDateTime, nullable=True),
    Column("repaired_at", UtcDateTime, nullable=True),
    Column("followed_up_at", UtcDateTime, nullable=True),
    Column("closed_at", UtcDateTime, nullable=True),
    Column("response_due_at", UtcDateTime, nullable=False),
    Column("resolution_due_at", UtcDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_ticket_state_created_at_ticket_id", "created_at", "ticket_id"),
    Index("ix_ticket_state_region_status", "region", "status"),
    Index("ix_ticket_state_customer_phone", "customer_phone"),
    Index("ix_ticket_state_serial_number", "serial_number"),
)


@dataclass(frozen=True)
class KeepFirst:
    """Set the column only if it has no value yet."""

    value: Any


@dataclass(frozen=True)
class Increment:
    by: int = 1


def ticket_state_changes(event: EventEnvelope) -> tuple[bool, dict[str, Any]]:
    """What one event does to its ticket's row: (is the row new, column values). Pure, so
    the projection and as-of reads (folding a stream up to a time) share one definition."""
    payload = typed_payload(event)
    at = event.occurred_at
    common = {"version": event.stream_version, "updated_at": event.recorded_at}
    values: dict[str, Any]
    match payload:
        case TicketReceived():
            return True, {
                "ticket_id": event.stream_id,
                "ticket_number": payload.ticket_number,
                "status": TicketStatus.received.value,
                "region": payload.address.region,
                "urgency": payload.urgency.value,
                "channel": payload.channel.value,
                "warranty_status": payload.warranty_status.value,
                "customer_name": payload.customer.name,
                "customer_phone": payload.customer.phone,
                "address_line": payload.address.line,
                "product_model": payload.product.model,
                "product_line": payload.product.product_line,
                "serial_number": payload.product.serial_number,
                "category": None,
                "complexity": None,
                "resolution_path": None,
                "service_point_id": None,
                "technician_id": None,
                "appointment_start": None,
                "appointment_end": None,
                "repair_outcome": None,
                "satisfaction_score": None,
                "possible_duplicate_of": payload.possible_duplicate_of,
                "reopen_count": 0,
                "created_at": at,
                "responded_at": None,
                "diagnosed_at": None,
                "dispatched_at": None,
                "visited_at": None,
                "repaired_at": None,
                "followed_up_at": None,
                "closed_at": None,
                "response_due_at": payload.response_due_at,
                "resolution_due_at": None,
                **common,
            }
        case ContactDetailsCorrected():
            values = {}
            if payload.customer:
                values |= {
                    "customer_name": payload.customer.name,
                    "customer_phone": payload.customer.phone,
                }
            if payload.address:
                values |= {"address_line": payload.address.line, "region": payload.address.region}
        case TicketDiagnosed():
            values = {
                "status": TicketStatus.diagnosed.value,
                "category": payload.category.value,
                "complexity": payload.complexity.value,
                "resolution_path": payload.resolution_path.value,
                "diagnosed_at": at,
                "resolution_due_at": payload.resolution_due_at,
                # First contact with the customer is the (first) diagnosis call.
                "responded_at": KeepFirst(at),
            }
        case TicketDispatched():
            values = {
                "status": TicketStatus.dispatched.value,
                "service_point_id": payload.service_point_id,
                "technician_id": payload.technician_id,
                "appointment_start": payload.appointment_start,
                "appointment_end": payload.appointment_end,
                "dispatched_at": at,
            }
        case TicketVisited():
            values = {"status": TicketStatus.visited.value, "visited_at": payload.arrived_at}
        case TicketRepaired():
            values = {
                "status": TicketStatus.repaired.value,
                "repair_outcome": payload.outcome.value,
                "repaired_at": at,
            }
        case FollowUpRecorded():
            values = {
                "status": TicketStatus.followed_up.value,
                "satisfaction_score": payload.satisfaction_score,
                "followed_up_at": at,
            }
        case TicketReopened():
            values = {
                "status": TicketStatus.reopened.value,
                "reopen_count": Increment(),
                "closed_at": None,
            }
        case TicketClosed():
            values = {"status": TicketStatus.closed.value, "closed_at": at}
        case _:
            values = {}
    return False, {**values, **common}


def apply_changes(row: dict[str, Any] | None, event: EventEnvelope) -> dict[str, Any] | None:
    """The row after one more event, computed in memory (as-of reads)."""
    is_new, values = ticket_state_changes(event)
    if is_new:
        return dict(values)
    if row is None:
        return None
    out = dict(row)
    for column, value in values.items():
        if isinstance(value, KeepFirst):
            out[column] = out[column] if out[column] is not None else value.value
        elif isinstance(value, Increment):
            out[column] = out[column] + value.by
        else:
            out[column] = value
    return out


def _as_sql(column: str, value: Any) -> Any:
    c = ticket_state.c[column]
    if isinstance(value, KeepFirst):
        return func.coalesce(c, literal(value.value, c.type))
    if isinstance(value, Increment):
        return c + value.by
    return value


class TicketStateProjection:
    name: ClassVar[str] = "ticket_state"
    tables: ClassVar[tuple[Table, ...]] = (ticket_state,)
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        is_new, values = ticket_state_changes(event)
        if is_new:
            await conn.execute(insert(ticket_state).values(**values))
            return
        await conn.execute(
            update(ticket_state)
            .where(ticket_state.c.ticket_id == event.stream_id)
            .values({column: _as_sql(column, v) for column, v in values.items()})
        )

"""Dispatch's read models as projections: the service network and the ticket flags.

Both are deterministic functions of the events (event times, never the wall clock), so a
rebuild gives the same rows. The network is also applied inline by the network commands
and the flags by the SLA clock and the repeat-repair reactor, so a dispatcher reads what
was just recorded; the asynchronous runs then find those events already applied.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch.tables import service_points, technicians, ticket_flags
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


def _service_point_values(p: ServicePointRegistered | ServicePointUpdated) -> dict[str, Any]:
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


def _technician_values(p: TechnicianRegistered | TechnicianUpdated) -> dict[str, Any]:
    return {
        "name": p.name,
        "service_point_id": p.service_point_id,
        "skills": sorted(set(p.skills)),
        "working_hours": [s.model_dump(mode="json") for s in p.working_hours],
        "timezone": p.timezone,
    }


class NetworkProjection:
    name: ClassVar[str] = "dispatch_network"
    tables: ClassVar[tuple[Table, ...]] = (service_points, technicians)
    stream_types: ClassVar[tuple[str, ...]] = ("service_point", "technician")

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        payload = typed_payload(event)
        stamp = {"version": event.stream_version, "updated_at": event.recorded_at}
        match payload:
            case ServicePointRegistered():
                await conn.execute(
                    insert(service_points).values(
                        id=event.stream_id,
                        registered_at=event.occurred_at,
                        **_service_point_values(payload),
                        **stamp,
                    )
                )
            case ServicePointUpdated():
                await self._update(
                    conn, service_points, event, {**_service_point_values(payload), **stamp}
                )
            case TechnicianRegistered():
                await conn.execute(
                    insert(technicians).values(
                        id=event.stream_id,
                        registered_at=event.occurred_at,
                        active=True,
                        **_technician_values(payload),
                        **stamp,
                    )
                )
            case TechnicianUpdated():
                await self._update(
                    conn, technicians, event, {**_technician_values(payload), **stamp}
                )
            case TechnicianDeactivated():
                await self._update(conn, technicians, event, {"active": False, **stamp})
            case TechnicianReactivated():
                await self._update(conn, technicians, event, {"active": True, **stamp})

    @staticmethod
    async def _update(
        conn: AsyncConnection, table: Table, event: EventEnvelope, values: dict[str, Any]
    ) -> None:
        await conn.execute(update(table).where(table.c.id == event.stream_id).values(**values))


class TicketFlagsProjection:
    """Escalations, SLA breaches and repeat repairs per ticket, for the work lists."""

    name: ClassVar[str] = "dispatch_ticket_flags"
    tables: ClassVar[tuple[Table, ...]] = (ticket_flags,)
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        payload = typed_payload(event)
        values: dict[str, Any]
        match payload:
            case SlaBreached():
                column = (
                    "response_breached_at"
                    if payload.deadline is SlaDeadline.response
                    else "resolution_breached_at"
                )
                values = {column: payload.detected_at}
            case TicketEscalated():
                values = {
                    "escalated": True,
                    "escalation_level": payload.level,
                    "escalation_cause": payload.cause.value,
                }
            case TicketReopened() if payload.escalated:
                values = {
                    "escalated": True,
                    "escalation_level": "regional_center",
                    "escalation_cause": "reopened",
                }
            case RepeatRepairFlagged():
                values = {"repeat_of_ticket_id": payload.earlier_ticket_id}
            case _:
                return
        values["updated_at"] = event.recorded_at
        t = ticket_flags
        exists = (
            await conn.execute(select(t.c.ticket_id).where(t.c.ticket_id == event.stream_id))
        ).first()
        if exists is None:
            await conn.execute(
                insert(t).values({"ticket_id": event.stream_id, "escalated": False, **values})
            )
        else:
            await conn.execute(update(t).where(t.c.ticket_id == event.stream_id).values(values))


NETWORK = NetworkProjection()
TICKET_FLAGS = TicketFlagsProjection()
PROJECTIONS = (NETWORK, TICKET_FLAGS)

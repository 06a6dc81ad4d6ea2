"""Parts read models, each a deterministic function of the events (rebuilt by replay).

The command handlers and the repair reactor also apply them inline, in the transaction
that appends the events, so callers read their own writes; the runner's per-stream
version bookkeeping makes the asynchronous second application a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import Table, and_, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.parts.tables import (
    parts_catalogue,
    parts_locations,
    parts_monthly_usage,
    parts_requisitions,
    parts_returns,
    parts_stock,
)
from shared.app.platform import Platform
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.parts import (
    LocationRegistered,
    OldPartReturnExpected,
    PartCatalogued,
    PartUpdated,
    RequisitionCancelled,
    RequisitionConsumed,
    RequisitionIssued,
    RequisitionRaised,
    RequisitionReserved,
    RequisitionReturned,
    StockAdjusted,
    StockConsumed,
    StockIssued,
    StockReceived,
    StockReleased,
    StockReserved,
    StockReturned,
)
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import OldPartReturned, OldPartReturnOverdue


class CatalogueProjection:
    name: ClassVar[str] = "parts_catalogue"
    tables: ClassVar[tuple[Table, ...]] = (parts_catalogue, parts_locations)
    stream_types: ClassVar[tuple[str, ...]] = ("part", "location")

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        payload = typed_payload(event)
        match payload:
            case PartCatalogued() | PartUpdated():
                values = {
                    "name": payload.name,
                    "fits_models": json.dumps(sorted(payload.fits_models)),
                    "unit_cost": payload.unit_cost,
                    "return_required": payload.return_required,
                    "version": event.stream_version,
                    "updated_at": event.occurred_at,
                }
                if isinstance(payload, PartCatalogued):
                    await conn.execute(
                        insert(parts_catalogue).values(part_number=payload.part_number, **values)
                    )
                else:
                    await conn.execute(
                        update(parts_catalogue)
                        .where(parts_catalogue.c.part_number == payload.part_number)
                        .values(**values)
                    )
            case LocationRegistered():
                await conn.execute(
                    insert(parts_locations).values(
                        location_id=payload.location_id,
                        name=payload.name,
                        level=payload.level.value,
                        parent_id=payload.parent_id,
                        region=payload.region,
                        registered_at=event.occurred_at,
                    )
                )


def _upsert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class StockProjection:
    """Stock level per (location, part) and consumption per month."""

    name: ClassVar[str] = "parts_stock"
    tables: ClassVar[tuple[Table, ...]] = (parts_stock, parts_monthly_usage)
    stream_types: ClassVar[tuple[str, ...]] = ("stock",)

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        payload = typed_payload(event)
        on_hand = reserved = issued = 0
        match payload:
            case StockReceived():
                on_hand = payload.quantity
            case StockReserved():
                reserved = payload.quantity
            case StockReleased():
                reserved = -payload.quantity
            case StockIssued():
                on_hand, reserved, issued = -payload.quantity, -payload.quantity, payload.quantity
            case StockConsumed():
                if payload.from_issued:
                    issued = -payload.quantity
                else:
                    on_hand = -payload.quantity
                month = event.occurred_at.strftime("%Y-%m")
                u = parts_monthly_usage
                statement = _upsert(conn)(u).values(
                    location_id=payload.location_id,
                    part_number=payload.part_number,
                    month=month,
                    quantity=payload.quantity,
                )
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[u.c.location_id, u.c.part_number, u.c.month],
                        set_={"quantity": u.c.quantity + payload.quantity},
                    )
                )
            case StockReturned():
                on_hand, issued = payload.quantity, -payload.quantity
            case StockAdjusted():
                on_hand = payload.delta
            case _:
                return
        s = parts_stock
        # Update first: an upsert's insert values would meet the CHECKs on their own.
        updated = await conn.execute(
            update(s)
            .where(s.c.location_id == payload.location_id, s.c.part_number == payload.part_number)
            .values(
                on_hand=s.c.on_hand + on_hand,
                reserved=s.c.reserved + reserved,
                issued=s.c.issued + issued,
                version=event.stream_version,
                updated_at=event.occurred_at,
            )
        )
        if updated.rowcount == 0:
            # A negative result violates the table's CHECKs: the transaction fails.
            await conn.execute(
                insert(s).values(
                    location_id=payload.location_id,
                    part_number=payload.part_number,
                    on_hand=on_hand,
                    reserved=reserved,
                    issued=issued,
                    version=event.stream_version,
                    updated_at=event.occurred_at,
                )
            )


class RequisitionProjection:
    name: ClassVar[str] = "parts_requisitions"
    tables: ClassVar[tuple[Table, ...]] = (parts_requisitions,)
    stream_types: ClassVar[tuple[str, ...]] = ("requisition",)

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        if not event.stream_id.startswith("req:"):
            return
        payload = typed_payload(event)
        r = parts_requisitions
        rid = event.stream_id.removeprefix("req:")
        common = {"version": event.stream_version, "updated_at": event.occurred_at}
        if isinstance(payload, RequisitionRaised):
            await conn.execute(
                insert(r).values(
                    requisition_id=rid,
                    ticket_id=payload.ticket_id,
                    kind=payload.kind.value,
                    part_number=payload.part_number,
                    quantity=payload.quantity,
                    requesting_location_id=payload.requesting_location_id,
                    source_location_id=None,
                    technician_id=payload.technician_id,
                    status="raised",
                    issued_quantity=0,
                    consumed_quantity=0,
                    returned_quantity=0,
                    created_at=event.occurred_at,
                    **common,
                )
            )
            return
        row = (await conn.execute(select(r).where(r.c.requisition_id == rid))).one()
        issued, consumed, returned = (
            row.issued_quantity,
            row.consumed_quantity,
            row.returned_quantity,
        )
        values: dict[str, Any] = dict(common)
        match payload:
            case RequisitionReserved():
                values |= {"status": "reserved", "source_location_id": payload.source_location_id}
            case RequisitionIssued():
                issued += payload.quantity
                values |= {"technician_id": payload.technician_id}
            case RequisitionConsumed():
                consumed += payload.quantity
            case RequisitionReturned():
                returned += payload.quantity
            case RequisitionCancelled():
                values |= {"status": "cancelled"}
        if isinstance(payload, RequisitionIssued | RequisitionConsumed | RequisitionReturned):
            outstanding = issued - consumed - returned
            status = "issued" if outstanding > 0 else ("consumed" if consumed else "returned")
            values |= {
                "status": status,
                "issued_quantity": issued,
                "consumed_quantity": consumed,
                "returned_quantity": returned,
            }
        await conn.execute(update(r).where(r.c.requisition_id == rid).values(**values))


PENDING = ("expected", "overdue")


async def match_pending_return(
    conn: AsyncConnection, ticket_id: str, part_number: str, old_serial: str | None
) -> Any:
    """The expected return an OldPartReturned settles: the same serial if one is pending,
    otherwise the earliest-due pending return of that part for the ticket. The return
    command and the projection share this, so both pick the same row."""
    t = parts_returns.c
    query = (
        select(parts_returns)
        .where(t.ticket_id == ticket_id, t.part_number == part_number, t.status.in_(PENDING))
        .order_by(t.due_at, t.return_id)
    )
    rows = list((await conn.execute(query)).all())
    if old_serial is not None:
        same = [row for row in rows if row.old_serial == old_serial]
        if same:
            return same[0]
    return rows[0] if rows else None


class ReturnsProjection:
    """Expected vs returned old parts per ticket and service point."""

    name: ClassVar[str] = "parts_returns"
    tables: ClassVar[tuple[Table, ...]] = (parts_returns,)
    stream_types: ClassVar[tuple[str, ...]] = ("requisition", "ticket")

    async def handle(self, conn: AsyncConnection, event: EventEnvelope) -> None:
        if event.event_type not in {
            "OldPartReturnExpected",
            "OldPartReturned",
            "OldPartReturnOverdue",
        }:
            return
        payload = typed_payload(event)
        t = parts_returns.c
        match payload:
            case OldPartReturnExpected():
                await conn.execute(
                    insert(parts_returns).values(
                        return_id=f"{event.stream_id}:{event.stream_version}",
                        ticket_id=payload.ticket_id,
                        part_number=payload.part_number,
                        old_serial=payload.old_serial,
                        quantity=payload.quantity,
                        returned_quantity=0,
                        service_point_id=payload.service_point_id,
                        region=payload.region,
                        due_at=payload.due_at,
                        status="expected",
                        returned_at=None,
                        returned_location_id=None,
                        late=False,
                        grade=None,
                        overdue_detected_at=None,
                        expected_at=event.occurred_at,
                    )
                )
            case OldPartReturned():
                row = await match_pending_return(
                    conn, event.stream_id, payload.part_number, payload.old_serial
                )
                if row is None:
                    return  # a return nobody expected: the ticket stream keeps it
                returned = row.returned_quantity + payload.quantity
                await conn.execute(
                    update(parts_returns)
                    .where(t.return_id == row.return_id)
                    .values(
                        returned_quantity=returned,
                        status="returned" if returned >= row.quantity else row.status,
                        returned_at=event.occurred_at,
                        returned_location_id=payload.location_id,
                        late=row.late or payload.late,
                        grade=payload.grade.value if payload.grade else row.grade,
                    )
                )
            case OldPartReturnOverdue():
                serial = (
                    t.old_serial.is_(None)
                    if payload.old_serial is None
                    else t.old_serial == payload.old_serial
                )
                row = (
                    await conn.execute(
                        select(parts_returns)
                        .where(
                            and_(
                                t.ticket_id == event.stream_id,
                                t.part_number == payload.part_number,
                                t.due_at == payload.due_at,
                                serial,
                                t.overdue_detected_at.is_(None),
                            )
                        )
                        .order_by(t.return_id)
                        .limit(1)
                    )
                ).first()
                if row is None:
                    return
                await conn.execute(
                    update(parts_returns)
                    .where(t.return_id == row.return_id)
                    .values(
                        overdue_detected_at=payload.detected_at,
                        status="overdue" if row.status == "expected" else row.status,
                    )
                )


CATALOGUE = CatalogueProjection()
STOCK = StockProjection()
REQUISITIONS = RequisitionProjection()
RETURNS = ReturnsProjection()
PROJECTIONS = (CATALOGUE, STOCK, REQUISITIONS, RETURNS)


async def project_inline(
    platform: Platform, conn: AsyncConnection, events: Sequence[EventEnvelope]
) -> None:
    """Apply the parts read models to events just appended, in the same transaction."""
    for projection in PROJECTIONS:
        await platform.runner.apply(conn, projection, events)

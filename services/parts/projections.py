"""Parts read models, each a deterministic function of the events (rebuilt by replay).

Batch folds: the rows a batch touches are loaded with one SELECT, every event is folded in
memory, the rows are written back with one upsert. The parts service keeps them inline
(``service.py``), in the transaction that appends the events, so callers read their own
writes; the runner's per-stream version bookkeeping makes the asynchronous second
application a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import ClassVar

from sqlalchemy import Connection, Table
from sqlalchemy.exc import IntegrityError

from services.parts.domain import (
    StockLevel,
    choose_pending_return,
    evolve_stock,
    return_id,
    settled_status,
)
from services.parts.read_models import PENDING, pending_return_of
from services.parts.tables import (
    parts_catalogue,
    parts_locations,
    parts_monthly_usage,
    parts_requisitions,
    parts_returns,
    parts_stock,
)
from shared.eventstore.ledger import EventStore
from shared.eventstore.projection import (
    Projection,
    Row,
    RowProjection,
    delete_where_in,
    lock_tickets,
    upsert_rows,
)
from shared.kernel.errors import RuleViolation
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
    StockConsumed,
    StockMovement,
    UsageHistoryRecorded,
)
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import OldPartReturned, OldPartReturnOverdue
from shared.kernel.parts import normalise_part_number, ticket_parts_stream

# --- catalogue and locations --------------------------------------------------------------


class _PartRows(RowProjection):
    table = parts_catalogue

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        if event.event_type not in (PartCatalogued.event_type, PartUpdated.event_type):
            return None
        return (event.payload["part_number"],)

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        payload = typed_payload(event)
        assert isinstance(payload, PartCatalogued | PartUpdated)
        return {
            "part_number": payload.part_number,
            "name": payload.name,
            "fits_models": json.dumps(sorted(payload.fits_models)),
            "unit_cost": payload.unit_cost,
            "return_required": payload.return_required,
            "version": event.stream_version,
            "updated_at": event.occurred_at,
        }


class _LocationRows(RowProjection):
    table = parts_locations

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        if event.event_type != LocationRegistered.event_type:
            return None
        return (event.payload["location_id"],)

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        payload = typed_payload(event)
        assert isinstance(payload, LocationRegistered)
        return {
            "location_id": payload.location_id,
            "name": payload.name,
            "level": payload.level.value,
            "parent_id": payload.parent_id,
            "region": payload.region,
            "registered_at": event.occurred_at,
        }


class CatalogueProjection:
    name: ClassVar[str] = "parts_catalogue"
    tables: ClassVar[tuple[Table, ...]] = (parts_catalogue, parts_locations)
    stream_types: ClassVar[tuple[str, ...]] = ("part", "location")

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        _PartRows().apply(conn, events)
        _LocationRows().apply(conn, events)


# --- stock levels and monthly usage -------------------------------------------------------


def _movement(event: EventEnvelope) -> tuple[str, str] | None:
    if event.stream_type != "stock":
        return None
    return (event.payload["location_id"], event.payload["part_number"])


class _StockRows(RowProjection):
    """The fold of each stock stream: the same ``evolve_stock`` the decisions use."""

    table = parts_stock

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        return _movement(event)

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        location_id, part_number = event.payload["location_id"], event.payload["part_number"]
        level = StockLevel(location_id, part_number)
        if row is not None:
            level = StockLevel(
                location_id,
                part_number,
                on_hand=row["on_hand"],
                reserved=row["reserved"],
                issued=row["issued"],
            )
        level = evolve_stock(level, typed_payload(event))
        return {
            "location_id": location_id,
            "part_number": part_number,
            "on_hand": level.on_hand,
            "reserved": level.reserved,
            "issued": level.issued,
            "version": event.stream_version,
            "updated_at": event.occurred_at,
        }


def _usage_month(event: EventEnvelope) -> str | None:
    """The month a usage event counts in: a consumption's (UTC) month, or the month an
    imported usage history names."""
    if event.event_type == StockConsumed.event_type:
        return event.occurred_at.strftime("%Y-%m")
    if event.event_type == UsageHistoryRecorded.event_type:
        return str(event.payload["month"])
    return None


class _UsageRows(RowProjection):
    """Consumption per location, part and calendar month (UTC) of the repair, plus the
    usage history imported from the replaced system."""

    table = parts_monthly_usage

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        month = _usage_month(event)
        if month is None:
            return None
        p = event.payload
        return (p["location_id"], p["part_number"], month)

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        payload = typed_payload(event)
        assert isinstance(payload, StockMovement | UsageHistoryRecorded)
        return {
            "location_id": payload.location_id,
            "part_number": payload.part_number,
            "month": _usage_month(event),
            "quantity": (row["quantity"] if row else 0) + payload.quantity,
        }


class StockProjection:
    """Stock level per (location, part) and consumption per month. The stock table's
    CHECKs are the second line of defence behind the stream version check: a movement
    that would take stock below zero fails the whole transaction with the rule
    ``stock_cannot_go_negative`` (here, the one place that says so)."""

    name: ClassVar[str] = "parts_stock"
    tables: ClassVar[tuple[Table, ...]] = (parts_stock, parts_monthly_usage)
    stream_types: ClassVar[tuple[str, ...]] = ("stock",)

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        try:
            _StockRows().apply(conn, events)
        except IntegrityError as exc:
            raise RuleViolation(
                "stock_cannot_go_negative", "this movement would take stock below zero"
            ) from exc
        _UsageRows().apply(conn, events)


# --- requisitions -------------------------------------------------------------------------


def _raised_row(payload: RequisitionRaised, event: EventEnvelope) -> Row:
    return {
        "requisition_id": event.stream_id.removeprefix("req:"),
        "ticket_id": payload.ticket_id,
        "kind": payload.kind.value,
        "part_number": payload.part_number,
        "quantity": payload.quantity,
        "requesting_location_id": payload.requesting_location_id,
        "region": event.region,  # the requesting location's (the stream's region)
        "source_location_id": None,
        "technician_id": payload.technician_id,
        "status": "raised",
        "issued_quantity": 0,
        "consumed_quantity": 0,
        "returned_quantity": 0,
        "created_at": event.occurred_at,
    }


class RequisitionProjection(RowProjection):
    name: ClassVar[str] = "parts_requisitions"
    tables: ClassVar[tuple[Table, ...]] = (parts_requisitions,)
    stream_types: ClassVar[tuple[str, ...]] = ("requisition",)
    table = parts_requisitions

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        if not event.stream_id.startswith("req:"):
            return None  # a ticket's parts paperwork (tparts:) shares the stream type
        return (event.stream_id.removeprefix("req:"),)

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        payload = typed_payload(event)
        if isinstance(payload, RequisitionRaised):
            row = _raised_row(payload, event)
        assert row is not None
        row = {**row, "version": event.stream_version, "updated_at": event.occurred_at}
        match payload:
            case RequisitionReserved():
                row |= {"status": "reserved", "source_location_id": payload.source_location_id}
            case RequisitionIssued():
                row |= {"technician_id": payload.technician_id}
                row["issued_quantity"] += payload.quantity
            case RequisitionConsumed():
                row["consumed_quantity"] += payload.quantity
            case RequisitionReturned():
                row["returned_quantity"] += payload.quantity
            case RequisitionCancelled():
                row["status"] = "cancelled"
        if isinstance(payload, RequisitionIssued | RequisitionConsumed | RequisitionReturned):
            row["status"] = settled_status(
                row["issued_quantity"], row["consumed_quantity"], row["returned_quantity"]
            )
        return row


# --- old-part returns ---------------------------------------------------------------------

_RETURN_EVENTS = frozenset(
    {
        OldPartReturnExpected.event_type,
        OldPartReturned.event_type,
        OldPartReturnOverdue.event_type,
    }
)


def _ticket_of(event: EventEnvelope) -> str:
    if event.event_type == OldPartReturnExpected.event_type:
        return str(event.payload["ticket_id"])
    return event.stream_id


def _expected_row(payload: OldPartReturnExpected, event: EventEnvelope) -> Row:
    return {
        "return_id": return_id(event.stream_id, event.stream_version),
        "ticket_id": payload.ticket_id,
        "part_number": payload.part_number,
        "old_serial": payload.old_serial,
        "quantity": payload.quantity,
        "returned_quantity": 0,
        "service_point_id": payload.service_point_id,
        "region": payload.region,
        "due_at": payload.due_at,
        "status": "expected",
        "returned_at": None,
        "returned_location_id": None,
        "late": False,
        "late_quantity": 0,
        "grade": None,
        "overdue_detected_at": None,
        "expected_at": event.occurred_at,
    }


def _returned(rows: list[Row], payload: OldPartReturned, event: EventEnvelope) -> Row | None:
    """The expected return the old part settles (the rule the return command used)."""
    pending = [pending_return_of(r) for r in rows if r["status"] in PENDING]
    chosen = choose_pending_return(
        pending, payload.part_number, payload.old_serial, payload.service_point_id
    )
    if chosen is None:
        return None  # a return nobody expected: the ticket stream keeps it
    row = next(r for r in rows if r["return_id"] == chosen.return_id)
    returned = row["returned_quantity"] + payload.quantity
    row |= {
        "returned_quantity": returned,
        "status": "returned" if returned >= row["quantity"] else row["status"],
        "returned_at": event.occurred_at,
        "returned_location_id": payload.location_id,
        "late": row["late"] or payload.late,
        "late_quantity": row["late_quantity"] + (payload.quantity if payload.late else 0),
        "grade": payload.grade.value if payload.grade else row["grade"],
    }
    return row


def _overdue(rows: list[Row], payload: OldPartReturnOverdue) -> Row | None:
    part = normalise_part_number(payload.part_number)
    for row in sorted(rows, key=lambda r: r["return_id"]):
        if (
            normalise_part_number(row["part_number"]) == part
            and row["due_at"] == payload.due_at
            and row["old_serial"] == payload.old_serial
            and row["overdue_detected_at"] is None
        ):
            status = "overdue" if row["status"] == "expected" else row["status"]
            row |= {"overdue_detected_at": payload.detected_at, "status": status}
            return row
    return None


def _ticket_returns(
    ticket: Sequence[EventEnvelope], paperwork: Sequence[EventEnvelope]
) -> list[Row]:
    """A ticket's return rows from its two streams, in ledger order: its parts paperwork
    (where a repair expects an old part back) and the ticket (where the part is handed in,
    or found overdue)."""
    rows: list[Row] = []
    for event in sorted((*ticket, *paperwork), key=lambda e: e.position):
        if event.event_type not in _RETURN_EVENTS:
            continue
        payload = typed_payload(event)
        if isinstance(payload, OldPartReturnExpected):
            rows.append(_expected_row(payload, event))
        elif isinstance(payload, OldPartReturned):
            _returned(rows, payload, event)
        elif isinstance(payload, OldPartReturnOverdue):
            _overdue(rows, payload)
    return rows


class ReturnsProjection:
    """Expected vs returned old parts per ticket and service point. Each ticket a batch
    touches is recomputed from its two streams read whole, so the rows do not depend on
    the order the streams arrive in (from Kafka: two topics), as compliance does."""

    name: ClassVar[str] = "parts_returns"
    tables: ClassVar[tuple[Table, ...]] = (parts_returns,)
    stream_types: ClassVar[tuple[str, ...]] = ("requisition", "ticket")
    recomputes_whole_streams: ClassVar[bool] = True

    def __init__(self) -> None:
        self.store = EventStore()

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        tickets = sorted({_ticket_of(e) for e in events if e.event_type in _RETURN_EVENTS})
        if not tickets:
            return
        lock_tickets(conn, self.name, tickets)
        streams = self.store.read_streams(
            conn, [s for t in tickets for s in (t, ticket_parts_stream(t))]
        )
        rows = [
            row
            for t in tickets
            for row in _ticket_returns(streams.get(t, []), streams.get(ticket_parts_stream(t), []))
        ]
        delete_where_in(conn, parts_returns, "ticket_id", tickets)
        upsert_rows(conn, parts_returns, rows)


CATALOGUE = CatalogueProjection()
STOCK = StockProjection()
REQUISITIONS = RequisitionProjection()
RETURNS = ReturnsProjection()
PROJECTIONS: tuple[Projection, ...] = (CATALOGUE, STOCK, REQUISITIONS, RETURNS)

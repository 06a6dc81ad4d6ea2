"""Parts decisions: pure functions of (stream state, command) → events. No I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.envelope import EventEnvelope, EventPayload
from shared.kernel.events.parts import (
    OldPartReturnExpected,
    PartUsageUnmatched,
    RequisitionCancelled,
    RequisitionConsumed,
    RequisitionIssued,
    RequisitionKind,
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
from shared.kernel.events.tickets import CostBearer, TicketRepaired


def part_stream(part_number: str) -> str:
    return f"part:{part_number}"


def location_stream(location_id: str) -> str:
    return f"location:{location_id}"


def stock_stream(location_id: str, part_number: str) -> str:
    return f"stock:{location_id}:{part_number}"


def requisition_stream(requisition_id: str) -> str:
    return f"req:{requisition_id}"


def ticket_parts_stream(ticket_id: str) -> str:
    return f"tparts:{ticket_id}"


# --- stock level: the fold of a stock stream --------------------------------------------


@dataclass(frozen=True)
class StockLevel:
    location_id: str
    part_number: str
    version: int = 0
    on_hand: int = 0  # physically at the location, reserved units included
    reserved: int = 0
    issued: int = 0  # handed to technicians, not yet consumed or returned

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


def evolve_stock(level: StockLevel, payload: EventPayload) -> StockLevel:
    s = replace(level, version=level.version + 1)
    match payload:
        case StockReceived():
            return replace(s, on_hand=s.on_hand + payload.quantity)
        case StockReserved():
            return replace(s, reserved=s.reserved + payload.quantity)
        case StockReleased():
            return replace(s, reserved=s.reserved - payload.quantity)
        case StockIssued():
            q = payload.quantity
            return replace(s, on_hand=s.on_hand - q, reserved=s.reserved - q, issued=s.issued + q)
        case StockConsumed():
            if payload.from_issued:
                return replace(s, issued=s.issued - payload.quantity)
            return replace(s, on_hand=s.on_hand - payload.quantity)
        case StockReturned():
            q = payload.quantity
            return replace(s, issued=s.issued - q, on_hand=s.on_hand + q)
        case StockAdjusted():
            return replace(s, on_hand=s.on_hand + payload.delta)
    return s


def fold_stock(location_id: str, part_number: str, events: Sequence[EventEnvelope]) -> StockLevel:
    level = StockLevel(location_id, part_number)
    for event in events:
        level = evolve_stock(level, typed_payload(event))
    return level


def decide_receive_stock(
    level: StockLevel, quantity: int, reference: str | None
) -> list[EventPayload]:
    return [
        StockReceived(
            location_id=level.location_id,
            part_number=level.part_number,
            quantity=quantity,
            reference=reference,
        )
    ]


def decide_adjust_stock(level: StockLevel, delta: int, reason: str) -> list[EventPayload]:
    if delta == 0:
        raise InvalidCommand("delta", "an adjustment must change the stock")
    if level.on_hand + delta < level.reserved:
        raise RuleViolation(
            "stock_below_reserved",
            f"on hand would be {level.on_hand + delta}, below the {level.reserved} reserved",
        )
    return [
        StockAdjusted(
            location_id=level.location_id,
            part_number=level.part_number,
            delta=delta,
            reason=reason,
        )
    ]


# --- requisitions -----------------------------------------------------------------------


@dataclass(frozen=True)
class RequisitionState:
    requisition_id: str
    version: int = 0
    raised: RequisitionRaised | None = None
    source_location_id: str | None = None
    technician_id: str | None = None
    status: str = "new"  # reserved | issued | consumed | returned | cancelled
    issued: int = 0
    consumed: int = 0
    returned: int = 0

    @property
    def outstanding(self) -> int:
        """Issued to the technician and neither consumed nor brought back."""
        return self.issued - self.consumed - self.returned


def _settled_status(s: RequisitionState) -> str:
    if s.outstanding > 0:
        return "issued"
    return "consumed" if s.consumed else "returned"


def evolve_requisition(state: RequisitionState, payload: EventPayload) -> RequisitionState:
    s = replace(state, version=state.version + 1)
    match payload:
        case RequisitionRaised():
            return replace(s, raised=payload, status="raised", technician_id=payload.technician_id)
        case RequisitionReserved():
            return replace(s, status="reserved", source_location_id=payload.source_location_id)
        case RequisitionIssued():
            s = replace(s, technician_id=payload.technician_id, issued=s.issued + payload.quantity)
            return replace(s, status=_settled_status(s))
        case RequisitionConsumed():
            s = replace(s, consumed=s.consumed + payload.quantity)
            return replace(s, status=_settled_status(s))
        case RequisitionReturned():
            s = replace(s, returned=s.returned + payload.quantity)
            return replace(s, status=_settled_status(s))
        case RequisitionCancelled():
            return replace(s, status="cancelled")
    return s


def fold_requisition(requisition_id: str, events: Sequence[EventEnvelope]) -> RequisitionState:
    state = RequisitionState(requisition_id)
    for event in events:
        state = evolve_requisition(state, typed_payload(event))
    return state


@dataclass(frozen=True)
class RaiseRequisition:
    ticket_id: str
    kind: RequisitionKind
    part_number: str
    quantity: int
    requesting_location_id: str
    technician_id: str | None = None
    notes: str | None = None


def choose_source(levels: Sequence[StockLevel], quantity: int) -> StockLevel:
    """The nearest location (the list is in tree order: the requesting point, its regional
    center, headquarters) whose available stock covers the whole quantity."""
    for level in levels:
        if level.available >= quantity:
            return level
    searched = ", ".join(f"{lv.location_id} ({lv.available} available)" for lv in levels)
    raise RuleViolation("out_of_stock", f"no location holds {quantity} available: {searched}")


def decide_raise(
    requisition_id: str, command: RaiseRequisition, source: StockLevel
) -> tuple[list[EventPayload], list[EventPayload]]:
    """(requisition stream events, source stock stream events)."""
    if source.available < command.quantity:
        raise RuleViolation("out_of_stock", f"{source.location_id} cannot cover the quantity")
    ref = {"requisition_id": requisition_id, "ticket_id": command.ticket_id}
    return (
        [
            RequisitionRaised(
                requisition_id=requisition_id,
                ticket_id=command.ticket_id,
                kind=command.kind,
                part_number=command.part_number,
                quantity=command.quantity,
                requesting_location_id=command.requesting_location_id,
                technician_id=command.technician_id,
                notes=command.notes,
            ),
            RequisitionReserved(source_location_id=source.location_id, quantity=command.quantity),
        ],
        [
            StockReserved(
                location_id=source.location_id,
                part_number=command.part_number,
                quantity=command.quantity,
                **ref,
            )
        ],
    )


def _ref(req: RequisitionState) -> dict[str, str]:
    assert req.raised is not None
    return {"requisition_id": req.requisition_id, "ticket_id": req.raised.ticket_id}


def decide_issue(
    req: RequisitionState, level: StockLevel, technician_id: str
) -> tuple[list[EventPayload], list[EventPayload]]:
    if req.status != "reserved":
        raise RuleViolation("requisition_not_reserved", f"the requisition is {req.status}")
    assert req.raised is not None
    q = req.raised.quantity
    if level.reserved < q or level.on_hand < q:
        raise RuleViolation("stock_not_reserved", "the reserved stock is no longer there")
    return (
        [RequisitionIssued(technician_id=technician_id, quantity=q)],
        [
            StockIssued(
                location_id=level.location_id,
                part_number=level.part_number,
                quantity=q,
                technician_id=technician_id,
                **_ref(req),
            )
        ],
    )


def decide_cancel(
    req: RequisitionState, level: StockLevel, reason: str
) -> tuple[list[EventPayload], list[EventPayload]]:
    if req.status != "reserved":
        raise RuleViolation(
            "requisition_not_cancellable",
            f"only a reserved requisition can be cancelled; this one is {req.status} "
            "(return issued parts instead)",
        )
    assert req.raised is not None
    return (
        [RequisitionCancelled(reason=reason)],
        [
            StockReleased(
                location_id=level.location_id,
                part_number=level.part_number,
                quantity=req.raised.quantity,
                reason=reason,
                **_ref(req),
            )
        ],
    )


def decide_return_unused(
    req: RequisitionState, level: StockLevel, quantity: int | None, reason: str | None
) -> tuple[list[EventPayload], list[EventPayload]]:
    if req.status != "issued" or req.outstanding <= 0:
        raise RuleViolation(
            "nothing_to_return", f"no issued parts are outstanding (requisition {req.status})"
        )
    q = req.outstanding if quantity is None else quantity
    if q > req.outstanding:
        raise InvalidCommand("quantity", f"only {req.outstanding} issued parts are outstanding")
    return (
        [RequisitionReturned(quantity=q, reason=reason)],
        [
            StockReturned(
                location_id=level.location_id,
                part_number=level.part_number,
                quantity=q,
                **_ref(req),
            )
        ],
    )


# --- consumption on repair --------------------------------------------------------------


@dataclass(frozen=True)
class RepairContext:
    ticket_id: str
    trigger_event_id: str
    repaired_at: datetime
    repair: TicketRepaired
    service_point_id: str | None
    region: str | None
    return_required: dict[str, bool]  # catalogue flag per part number used


def decide_consumption(
    ctx: RepairContext,
    requisitions: Sequence[RequisitionState],
    levels: dict[tuple[str, str], StockLevel],
    *,
    return_days: float,
) -> dict[str, list[EventPayload]]:
    """Events per stream id for one TicketRepaired: consume what was issued (or is still
    reserved) for the ticket first, then the service point's shelf; what neither covers is recorded as
    unmatched (stock never goes negative). Warranty parts get an expected return."""
    out: dict[str, list[EventPayload]] = {}
    levels = dict(levels)
    reqs = {r.requisition_id: r for r in requisitions}

    def emit(stream_id: str, payload: EventPayload) -> None:
        out.setdefault(stream_id, []).append(payload)

    for line in ctx.repair.parts_used:
        part = line.part_number.strip().upper()
        remaining = line.quantity
        for rid in sorted(reqs):
            req = reqs[rid]
            if remaining == 0:
                break
            if req.raised is None or req.raised.part_number != part:
                continue
            source = req.source_location_id
            assert source is not None
            ref = {"requisition_id": rid, "ticket_id": ctx.ticket_id}
            if req.status == "reserved":
                # Fitted before the clerk recorded the hand-over: the repair proves it.
                technician = ctx.repair.technician_id or req.technician_id or "unrecorded"
                quantity = req.raised.quantity
                handed = RequisitionIssued(technician_id=technician, quantity=quantity)
                emit(requisition_stream(rid), handed)
                stock_issued = StockIssued(
                    location_id=source,
                    part_number=part,
                    quantity=quantity,
                    technician_id=technician,
                    **ref,
                )
                emit(stock_stream(source, part), stock_issued)
                req = evolve_requisition(req, handed)
                if (source, part) in levels:
                    levels[(source, part)] = evolve_stock(levels[(source, part)], stock_issued)
            if req.outstanding <= 0:
                reqs[rid] = req
                continue
            take = min(req.outstanding, remaining)
            remaining -= take
            used = RequisitionConsumed(quantity=take, trigger_event_id=ctx.trigger_event_id)
            emit(requisition_stream(rid), used)
            consumed = StockConsumed(
                location_id=source,
                part_number=part,
                quantity=take,
                from_issued=True,
                trigger_event_id=ctx.trigger_event_id,
                **ref,
            )
            emit(stock_stream(source, part), consumed)
            reqs[rid] = evolve_requisition(req, used)
            if (source, part) in levels:
                levels[(source, part)] = evolve_stock(levels[(source, part)], consumed)
        if remaining and ctx.service_point_id:
            key = (ctx.service_point_id, part)
            level = levels.get(key)
            if level is not None and level.available > 0:
                take = min(level.available, remaining)
                remaining -= take
                consumed = StockConsumed(
                    location_id=level.location_id,
                    part_number=part,
                    quantity=take,
                    ticket_id=ctx.ticket_id,
                    from_issued=False,
                    trigger_event_id=ctx.trigger_event_id,
                )
                emit(stock_stream(level.location_id, part), consumed)
                levels[key] = evolve_stock(level, consumed)
        if remaining:
            emit(
                ticket_parts_stream(ctx.ticket_id),
                PartUsageUnmatched(
                    ticket_id=ctx.ticket_id,
                    part_number=part,
                    quantity=remaining,
                    service_point_id=ctx.service_point_id,
                    trigger_event_id=ctx.trigger_event_id,
                ),
            )
        borne_by_warranty = ctx.repair.cost_borne_by is CostBearer.warranty
        if line.under_warranty or (borne_by_warranty and ctx.return_required.get(part, False)):
            emit(
                ticket_parts_stream(ctx.ticket_id),
                OldPartReturnExpected(
                    ticket_id=ctx.ticket_id,
                    part_number=part,
                    old_serial=line.old_serial,
                    quantity=line.quantity,
                    service_point_id=ctx.service_point_id,
                    region=ctx.region,
                    due_at=ctx.repaired_at + timedelta(days=return_days),
                    trigger_event_id=ctx.trigger_event_id,
                ),
            )
    return out


# --- replenishment ----------------------------------------------------------------------


def previous_months(now: datetime, count: int) -> list[str]:
    """The ``count`` full calendar months before ``now``'s month, oldest first."""
    year, month = now.year, now.month
    months: list[str] = []
    for _ in range(count):
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        months.append(f"{year:04d}-{month:02d}")
    return list(reversed(months))


@dataclass(frozen=True)
class Suggestion:
    average_monthly_usage: Decimal
    raw: Decimal
    suggested_quantity: int


def suggest_order(
    usage_by_month: Sequence[int],
    *,
    months_of_cover: float,
    seasonal_coefficient: float,
    current_stock: int,
) -> Suggestion:
    """``months_of_cover × average monthly usage × seasonal coefficient − current stock``,
    never below zero, rounded up to whole units. Decimal arithmetic so that hand-computed
    figures (3 × 4.2 × 1.5) are not pushed over a whole number by binary floats."""
    months = len(usage_by_month)
    average = Decimal(sum(usage_by_month)) / Decimal(months) if months else Decimal(0)
    raw = Decimal(str(months_of_cover)) * average * Decimal(str(seasonal_coefficient)) - Decimal(
        current_stock
    )
    suggested = max(0, math.ceil(raw)) if raw > 0 else 0
    return Suggestion(
        average.quantize(Decimal("0.0001")), raw.quantize(Decimal("0.0001")), suggested
    )

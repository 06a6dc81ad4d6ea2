"""Parts command handlers: gather the facts a decision needs (read models, other streams,
settings, the time), build the command, run it through the service's executor — inside
the caller's unit of work (one transaction). The rules are in ``domain``.

Stock and requisition states are *placed* before a decision: their events do not carry
the location's region, so the handler adds it from the locations read model (the reach
rule and the events' envelopes read it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from services.parts import domain, read_models
from shared.app.executor import Handling, Loaded, Outcome, require_version
from shared.eventstore.db import take_locks
from shared.eventstore.ledger import StreamAppend
from shared.kernel.errors import InvalidCommand, NotFound
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.parts import LocationLevel
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import TicketRepaired
from shared.kernel.lifecycle import TicketStatus
from shared.kernel.network import id_lock
from shared.kernel.parts import normalise_part_number
from shared.kernel.ticket import TICKETS, TicketState, require_ticket

# --- plumbing -----------------------------------------------------------------------------


def commit(
    conn: Connection, h: Handling, decision: domain.Decision, *read: Loaded[Any]
) -> list[EventEnvelope]:
    """Append a decision spanning streams, each after the head the decision read."""
    heads = {loaded.stream_id: loaded.head for loaded in read}
    appends = [
        StreamAppend(m.stream_id, m.events, heads.get(m.stream_id), m.region) for m in decision
    ]
    return h.executor.commit(conn, h.invocation.context, appends)


def visible_location(conn: Connection, h: Handling, location_id: str, field: str) -> domain.Place:
    """The location as registered; 422 when none is, 404 outside the caller's reach."""
    place = read_models.find_place(conn, location_id)
    if place is None:
        raise InvalidCommand(field, f"no location {location_id!r} is registered")
    if not domain.location_in_reach(h.invocation.reach, place):
        raise NotFound("location_not_found", f"no location {location_id}")
    return place


def placed_stock(
    conn: Connection, h: Handling, place: domain.Place, part_number: str
) -> Loaded[domain.StockLevel]:
    stream = domain.stock_stream(place.location_id, part_number)
    loaded = h.executor.load(conn, domain.STOCK_LEVELS, stream)
    return Loaded(stream, replace(loaded.state, region=place.region), loaded.head)


def placed_requisition(
    conn: Connection, h: Handling, requisition_id: str
) -> Loaded[domain.RequisitionState]:
    stream = domain.requisition_stream(requisition_id)
    loaded = h.executor.load(conn, domain.REQUISITIONS, stream)
    raised = loaded.state.raised
    place = read_models.find_place(conn, raised.requesting_location_id) if raised else None
    state = replace(loaded.state, region=place.region if place else None)
    return Loaded(stream, state, loaded.head)


def ordered_requisition(
    conn: Connection, h: Handling, requisition_id: str
) -> Loaded[domain.RequisitionState]:
    """``placed_requisition`` with the ledger position it was raised at (the order of a
    ticket's requisitions: ``domain.consumption_order``)."""
    loaded = placed_requisition(conn, h, requisition_id)
    first = h.executor.store.read_stream(conn, loaded.stream_id, to_version=1)
    position = first[0].position if first else None
    return Loaded(loaded.stream_id, replace(loaded.state, raised_position=position), loaded.head)


def _source_stock(
    conn: Connection, h: Handling, req: domain.RequisitionState
) -> Loaded[domain.StockLevel]:
    raised = domain.require_requisition(req)
    assert req.source_location_id is not None
    return placed_stock(conn, h, _place(conn, req.source_location_id), raised.part_number)


# --- catalogue and locations --------------------------------------------------------------


def put_part(
    conn: Connection, h: Handling, part_number: str, spec: domain.PartSpec
) -> Outcome[domain.PartEntry]:
    stream = domain.part_stream(part_number)
    return h.execute(
        conn, domain.PART_ENTRIES, stream, domain.PutPart(spec), domain.decide_put_part
    )


def register_location(
    conn: Connection, h: Handling, location_id: str, request: domain.NewLocation
) -> Outcome[domain.LocationState]:
    take_locks(conn, [id_lock("location", location_id)])
    registered = read_models.find_place(conn, location_id)
    parent = read_models.find_place(conn, request.parent_id) if request.parent_id else None
    command = domain.RegisterLocation(
        request, parent, registered.location_id if registered else None
    )
    stream = domain.location_stream(location_id)
    return h.execute(conn, domain.LOCATIONS, stream, command, domain.decide_register_location)


# --- stock --------------------------------------------------------------------------------


def receive_stock(
    conn: Connection, h: Handling, receipt: domain.StockReceipt
) -> Outcome[domain.StockLevel]:
    location_id = domain.acting_location(receipt.location_id, h.invocation.reach.location)
    place = visible_location(conn, h, location_id, "location_id")
    catalogued = read_models.get_part(conn, receipt.part_number) is not None
    stock = placed_stock(conn, h, place, receipt.part_number)
    command = domain.ReceiveStock(receipt, catalogued)
    return h.execute(
        conn,
        domain.STOCK_LEVELS,
        stock.stream_id,
        command,
        domain.decide_receive_stock,
        loaded=stock,
    )


def adjust_stock(
    conn: Connection, h: Handling, count: domain.StockCount
) -> Outcome[domain.StockLevel]:
    place = visible_location(conn, h, count.location_id, "location_id")
    catalogued = read_models.get_part(conn, count.part_number) is not None
    stock = placed_stock(conn, h, place, count.part_number)
    command = domain.AdjustStock(count, catalogued)
    return h.execute(
        conn,
        domain.STOCK_LEVELS,
        stock.stream_id,
        command,
        domain.decide_adjust_stock,
        loaded=stock,
    )


# --- requisitions -------------------------------------------------------------------------


def _stock_chain(
    conn: Connection, h: Handling, location_id: str | None, part_number: str
) -> list[Loaded[domain.StockLevel]]:
    """The part's stock at the requesting location and up the tree (nearest first)."""
    if location_id is None:
        return []
    visible_location(conn, h, location_id, "location_id")
    chain = read_models.location_chain(conn, location_id)
    return [placed_stock(conn, h, place, part_number) for place in chain]


def _serves_region(conn: Connection, location_id: str | None) -> str | None:
    """The region a location's stock serves: its own; None for headquarters (every
    region) or a location not registered (refused where it is named)."""
    place = read_models.find_place(conn, location_id) if location_id else None
    if place is None or place.level is LocationLevel.headquarters:
        return None
    return place.region


def _require_clerks_region(conn: Connection, clerk_at: str | None, ticket: TicketState) -> None:
    """A clerk's location serves its region: another region's ticket does not exist for
    it — the same 404 as an unknown one, before any stock or return answers whether it
    does."""
    if not domain.serves_ticket(_serves_region(conn, clerk_at), ticket):
        raise NotFound("ticket_not_found", f"no ticket {ticket.ticket_id}")


def raise_requisition(conn: Connection, h: Handling, request: domain.PartsRequest) -> str:
    """Returns the new requisition's id."""
    ticket = h.visible(conn, TICKETS, request.ticket_id).state
    domain.require_own_requisition(request, h.invocation.reach.technician)
    clerk_at = h.invocation.reach.location
    _require_clerks_region(conn, clerk_at, ticket)
    location_id = domain.requesting_location(request, ticket, clerk_at)
    chain = _stock_chain(conn, h, location_id, request.part_number)
    part = read_models.part_spec(conn, request.part_number)
    command = domain.RaiseRequisition(
        request,
        ticket,
        part,
        tuple(s.state for s in chain),
        h.invocation.reach.technician,
        _serves_region(conn, location_id),
    )
    new = placed_requisition(conn, h, str(uuid.uuid4()))
    decision = domain.decide_raise(command, new.state)
    require_version(h.invocation, new)  # If-Match on a new stream: 409, as every create
    commit(conn, h, decision, new, *chain)
    return new.state.requisition_id


def open_requisition(
    conn: Connection, h: Handling, requisition_id: str
) -> Loaded[domain.RequisitionState]:
    """The requisition a command addresses, with the technician its ticket is assigned to
    now (as the ticket's stream says: whom it sits with, ``domain.requisition_place``):
    404 when it does not exist for the caller, 409 when ``If-Match`` names another
    version."""
    placed = placed_requisition(conn, h, requisition_id)
    raised = placed.state.raised
    ticket = h.executor.load(conn, TICKETS, raised.ticket_id).state if raised else None
    assignee = domain.ticket_technician(ticket) if ticket else None
    closed = ticket is not None and ticket.status is TicketStatus.closed
    placed_state = replace(placed.state, assignee=assignee, ticket_closed=closed)
    loaded = Loaded(placed.stream_id, placed_state, placed.head)
    h.executor.require_reach(domain.REQUISITIONS, loaded, h.invocation.reach)
    domain.require_requisition(loaded.state)
    require_version(h.invocation, loaded)
    return loaded


def issue(conn: Connection, h: Handling, requisition_id: str, technician_id: str | None) -> str:
    """Hands the parts to the ticket's current technician (as its stream says now: a
    re-dispatch since the requisition was raised moves them to the new one)."""
    req = open_requisition(conn, h, requisition_id)
    source = _source_stock(conn, h, req.state)
    command = domain.IssueRequisition(source.state, technician_id, req.state.assignee)
    commit(conn, h, domain.decide_issue(command, req.state), req, source)
    return requisition_id


def cancel(conn: Connection, h: Handling, requisition_id: str, reason: str) -> str:
    req = open_requisition(conn, h, requisition_id)
    source = _source_stock(conn, h, req.state)
    command = domain.CancelRequisition(source.state, reason)
    commit(conn, h, domain.decide_cancel(command, req.state), req, source)
    return requisition_id


def return_unused(
    conn: Connection, h: Handling, requisition_id: str, quantity: int | None, reason: str | None
) -> str:
    req = open_requisition(conn, h, requisition_id)
    source = _source_stock(conn, h, req.state)
    command = domain.ReturnUnused(source.state, quantity, reason)
    commit(conn, h, domain.decide_return_unused(command, req.state), req, source)
    return requisition_id


# --- consumption on repair (the repair reactor) -------------------------------------------


def _ticket_at(conn: Connection, h: Handling, event: EventEnvelope) -> TicketState:
    """The ticket as it stood at the event: its dispatch names the service point."""
    events = h.executor.store.read_stream(conn, event.stream_id, to_version=event.stream_version)
    return TICKETS.fold(event.stream_id, events)


def _place(conn: Connection, location_id: str) -> domain.Place:
    """The location as registered (a stream of a location since gone: no region)."""
    return read_models.find_place(conn, location_id) or domain.Place(location_id)


def _consumed_stock(
    conn: Connection,
    h: Handling,
    requisitions: Sequence[domain.RequisitionState],
    shelf: domain.Place | None,
    part_numbers: Sequence[str],
) -> list[Loaded[domain.StockLevel]]:
    """The stock a consumption may move: the requisitions' sources, the shelf."""
    keys = {(r.source_location_id, r.raised.part_number) for r in requisitions if r.raised}
    if shelf is not None:
        keys |= {(shelf.location_id, number) for number in part_numbers}
    return [
        placed_stock(conn, h, _place(conn, location_id), number)
        for location_id, number in sorted((loc, n) for loc, n in keys if loc is not None)
    ]


def _return_required(conn: Connection, part_numbers: Sequence[str]) -> dict[str, bool]:
    specs = {number: read_models.part_spec(conn, number) for number in part_numbers}
    return {number: bool(spec and spec.return_required) for number, spec in specs.items()}


def _consumption(
    conn: Connection, h: Handling, event: EventEnvelope, repair: TicketRepaired
) -> tuple[domain.ConsumeOnRepair, list[Loaded[Any]]]:
    """The facts of a consumption, and the streams it read."""
    ticket = _ticket_at(conn, h, event)
    dispatched_to = ticket.dispatch.service_point_id if ticket.dispatch else None
    shelf = read_models.find_place(conn, dispatched_to) if dispatched_to else None
    numbers = sorted({normalise_part_number(p.part_number) for p in repair.parts_used})
    reqs = [
        ordered_requisition(conn, h, rid)
        for rid in read_models.open_requisitions_for_ticket(conn, event.stream_id)
    ]
    stock = _consumed_stock(conn, h, [r.state for r in reqs], shelf, numbers)
    command = domain.ConsumeOnRepair(
        ticket_id=event.stream_id,
        trigger_event_id=str(event.event_id),
        repaired_at=event.occurred_at,
        repair=repair,
        region=ticket.region,
        service_point_id=shelf.location_id if shelf else dispatched_to,
        return_days=h.settings.parts.old_part_return_days,
        return_required=_return_required(conn, numbers),
        requisitions=tuple(r.state for r in reqs),
        levels={(s.state.location_id, s.state.part_number): s.state for s in stock},
    )
    return command, [*reqs, *stock]


def consume_on_repair(conn: Connection, h: Handling, event: EventEnvelope) -> None:
    """A TicketRepaired consumes the parts issued for the ticket (or the shelf's) and
    records the expected old-part returns."""
    repair = typed_payload(event)
    assert isinstance(repair, TicketRepaired)
    if not repair.parts_used:
        return
    command, read = _consumption(conn, h, event, repair)
    stream = domain.ticket_parts_stream(event.stream_id)
    paperwork = h.executor.load(conn, domain.TICKET_PARTS, stream)
    commit(conn, h, domain.decide_consumption(command, paperwork.state), paperwork, *read)


def release_on_close(conn: Connection, h: Handling, event: EventEnvelope) -> None:
    """A closed ticket's requisitions still only reserved are cancelled, their stock
    released: no part can be requested for a closed ticket, so nothing would ever use
    them. Skipped when the ticket was reopened before this ran (its work goes on)."""
    if h.executor.load(conn, TICKETS, event.stream_id).state.status is not TicketStatus.closed:
        return
    for requisition_id in read_models.open_requisitions_for_ticket(conn, event.stream_id):
        req = placed_requisition(conn, h, requisition_id)
        if req.state.status != "reserved":
            continue
        source = _source_stock(conn, h, req.state)
        command = domain.CancelRequisition(source.state, domain.CLOSED_TICKET_REASON)
        commit(conn, h, domain.decide_cancel(command, req.state), req, source)


# --- old-part returns ---------------------------------------------------------------------


def record_old_part_return(conn: Connection, h: Handling, handed_in: domain.HandedIn) -> str:
    """Returns the id of the expected return it settled."""
    # An unknown ticket (or one outside the caller's reach) is 404, as for requisitions.
    ticket = require_ticket(h.visible(conn, TICKETS, handed_in.ticket_id).state)
    _require_clerks_region(conn, h.invocation.reach.location, ticket)
    location_id = domain.acting_location(handed_in.location_id, h.invocation.reach.location)
    place = visible_location(conn, h, location_id, "location_id")
    # A clerk's reach: the expected returns of its location's service point; others do
    # not exist for it (as in GET /returns).
    expected = domain.choose_pending_return(
        read_models.pending_returns(conn, handed_in.ticket_id),
        handed_in.part_number,
        handed_in.old_serial,
        service_point_id=h.invocation.reach.location,
    )
    serves = _serves_region(conn, place.location_id)
    command = domain.RecordOldPartReturn(handed_in, place.location_id, expected, h.now(), serves)
    h.execute(conn, TICKETS, handed_in.ticket_id, command, domain.decide_old_part_return)
    assert expected is not None  # the decision refused otherwise
    return expected.return_id


def record_overdue(
    conn: Connection, h: Handling, expected: domain.PendingReturn, now: datetime
) -> bool:
    """Record that an expected return is past due, once: False when another pass did."""
    if not read_models.claim_overdue(conn, expected.return_id, now):
        return False
    command = domain.RecordOverdue(expected, detected_at=now)
    h.execute(conn, TICKETS, expected.ticket_id, command, domain.decide_overdue)
    return True

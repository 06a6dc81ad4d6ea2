"""Parts reads: catalogue, locations, stock, requisitions, returns, monthly usage — plain
functions of a ``Connection``, run inside a unit of work (``platform.db.read``/``write``).

Location ids compare case-insensitively (``domain.location_key``): a lookup by any spelling
finds the location as registered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    case,
    func,
    or_,
    select,
    union,
    update,
)

from services.parts.domain import PartSpec, PendingReturn, Place, location_key
from services.parts.tables import (
    parts_catalogue,
    parts_locations,
    parts_monthly_usage,
    parts_requisitions,
    parts_returns,
    parts_stock,
)
from shared.kernel.events.parts import LocationLevel
from shared.readmodels.paging import after_cursor, next_page
from shared.readmodels.ticket_state import ticket_state


def same_location(column: Any, location_id: str) -> ColumnElement[bool]:
    """``column`` names the location ``location_id`` (in any case)."""
    return func.lower(column) == location_key(location_id)


# --- catalogue ----------------------------------------------------------------------------


def part_dict(row: Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    data["fits_models"] = json.loads(data["fits_models"])
    return data


def get_part(conn: Connection, part_number: str) -> Row[Any] | None:
    c = parts_catalogue.c
    return conn.execute(select(parts_catalogue).where(c.part_number == part_number)).first()


def part_spec(conn: Connection, part_number: str) -> PartSpec | None:
    row = get_part(conn, part_number)
    if row is None:
        return None
    fits = tuple(json.loads(row.fits_models))
    return PartSpec(row.name, fits, row.unit_cost, bool(row.return_required))


def list_parts(conn: Connection, model: str | None) -> list[dict[str, Any]]:
    rows = conn.execute(select(parts_catalogue).order_by(parts_catalogue.c.part_number)).all()
    parts = [part_dict(r) for r in rows]
    if model:
        parts = [p for p in parts if not p["fits_models"] or model in p["fits_models"]]
    return parts


# --- locations ----------------------------------------------------------------------------


def get_location(conn: Connection, location_id: str) -> Row[Any] | None:
    """The location as registered; the exact spelling first should two differ in case
    only."""
    c = parts_locations.c
    query = (
        select(parts_locations)
        .where(same_location(c.location_id, location_id))
        .order_by(case((c.location_id == location_id, 0), else_=1), c.location_id)
        .limit(1)
    )
    return conn.execute(query).first()


def place_of(row: Row[Any]) -> Place:
    return Place(row.location_id, LocationLevel(row.level), row.region, row.parent_id)


def find_place(conn: Connection, location_id: str) -> Place | None:
    row = get_location(conn, location_id)
    return place_of(row) if row is not None else None


def list_locations(conn: Connection, region: str | None) -> list[Row[Any]]:
    """Within ``region`` (None: all): its locations and headquarters, which serves every
    region."""
    query = select(parts_locations).order_by(parts_locations.c.location_id)
    if region:
        c = parts_locations.c
        headquarters = c.level == LocationLevel.headquarters.value
        # A location of no region (one registered before the tree's one rule) is every
        # reader's, as GET /locations/{id} has it (shared/kernel/reach.py).
        query = query.where(or_(c.region == region, c.region.is_(None), headquarters))
    return list(conn.execute(query).all())


def location_chain(conn: Connection, location_id: str) -> list[Place]:
    """The location, then its parent, and so on up to headquarters (nearest first)."""
    chain: list[Place] = []
    current: str | None = location_id
    while current is not None and len(chain) < 10:
        if any(location_key(p.location_id) == location_key(current) for p in chain):
            break
        place = find_place(conn, current)
        if place is None:
            break
        chain.append(place)
        current = place.parent_id
    return chain


# --- stock --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StockFilters:
    location_id: str | None = None
    part_number: str | None = None
    region: str | None = None
    # A parts clerk's reach: its location only.
    reach_location: str | None = None


def list_stock(conn: Connection, filters: StockFilters) -> list[Row[Any]]:
    s, loc = parts_stock.c, parts_locations.c
    query = (
        select(parts_stock, loc.region, loc.level)
        .join(parts_locations, loc.location_id == s.location_id)
        .order_by(s.location_id, s.part_number)
    )
    conditions = []
    for location in (filters.location_id, filters.reach_location):
        if location:
            conditions.append(same_location(s.location_id, location))
    if filters.part_number:
        conditions.append(s.part_number == filters.part_number)
    if filters.region:
        conditions.append(loc.region == filters.region)
    if conditions:
        query = query.where(and_(*conditions))
    return list(conn.execute(query).all())


def usage_by_part(
    conn: Connection, location_id: str, months: Sequence[str]
) -> dict[str, dict[str, int]]:
    u = parts_monthly_usage.c
    query = select(u.part_number, u.month, u.quantity).where(
        u.location_id == location_id, u.month.in_(list(months))
    )
    found: dict[str, dict[str, int]] = {}
    for row in conn.execute(query):
        found.setdefault(row.part_number, {})[row.month] = row.quantity
    return found


# --- requisitions -------------------------------------------------------------------------


def get_requisition(conn: Connection, requisition_id: str) -> Row[Any] | None:
    """The requisition with its requesting location's region (where it sits)."""
    r, loc, ts = parts_requisitions.c, parts_locations.c, ticket_state.c
    query = (
        select(parts_requisitions, loc.region, ts.technician_id.label("assignee"))
        .outerjoin(parts_locations, loc.location_id == r.requesting_location_id)
        .outerjoin(ticket_state, ts.ticket_id == r.ticket_id)
        .where(r.requisition_id == requisition_id)
    )
    return conn.execute(query).first()


def assigned_tickets(technician_id: str) -> Select[tuple[str]]:
    """The tickets assigned to ``technician_id`` now: a technician reaches their
    requisitions and expected returns (after a re-dispatch, the new technician does)."""
    ts = ticket_state.c
    return select(ts.ticket_id).where(ts.technician_id == technician_id)


@dataclass(frozen=True)
class RequisitionFilters:
    ticket_id: str | None = None
    location_id: str | None = None  # requesting or source
    status: str | None = None
    # The caller's reach: a technician's assigned tickets' (``assigned_tickets``), a region
    # (of the requesting location), a parts clerk's location (requesting or source).
    technician_id: str | None = None
    region: str | None = None
    reach_location: str | None = None


def _at_either_end(location_id: str) -> ColumnElement[bool]:
    r = parts_requisitions.c
    return same_location(r.requesting_location_id, location_id) | same_location(
        r.source_location_id, location_id
    )


def _requisition_conditions(filters: RequisitionFilters) -> list[ColumnElement[bool]]:
    """Every filter but the first location's (the page's way in, see below)."""
    r = parts_requisitions.c
    conditions = [_at_either_end(loc) for loc in _locations(filters)[1:]]
    if filters.ticket_id:
        conditions.append(r.ticket_id == filters.ticket_id)
    if filters.status:
        conditions.append(r.status == filters.status)
    if filters.technician_id:
        conditions.append(r.ticket_id.in_(assigned_tickets(filters.technician_id)))
    if filters.region:
        conditions.append(r.region == filters.region)
    return conditions


def _locations(filters: RequisitionFilters) -> list[str]:
    return [loc for loc in (filters.location_id, filters.reach_location) if loc]


def list_requisitions(
    conn: Connection, filters: RequisitionFilters, limit: int, cursor: str | None = None
) -> tuple[list[Row[Any]], str | None]:
    """Newest first, a page and the next one's cursor. A location's page is the newest of
    two index walks, one per end: one walk by "either end" would sort the location's whole
    history (a central warehouse is the source of most requisitions) for every page."""
    r = parts_requisitions.c
    conditions = _requisition_conditions(filters)
    if cursor:
        conditions.append(after_cursor(cursor, r.created_at, r.requisition_id, descending=True))
    ends: list[ColumnElement[bool] | None] = [None]
    if locations := _locations(filters):
        at = locations[0]
        ends = [
            same_location(r.requesting_location_id, at),
            same_location(r.source_location_id, at),
        ]

    def walk(end: ColumnElement[bool] | None) -> Select[Any]:
        query = select(parts_requisitions).order_by(r.created_at.desc(), r.requisition_id.desc())
        found = [*conditions, *([end] if end is not None else [])]
        return (query.where(and_(*found)) if found else query).limit(limit + 1)

    walks = [walk(end) for end in ends]
    if len(walks) == 1:
        query = walks[0]
    else:
        both = union(*(select(walk.subquery()) for walk in walks)).subquery()
        query = (
            select(both)
            .order_by(both.c.created_at.desc(), both.c.requisition_id.desc())
            .limit(limit + 1)
        )
    return next_page(list(conn.execute(query).all()), limit, "created_at", "requisition_id")


def open_requisitions_for_ticket(conn: Connection, ticket_id: str) -> list[str]:
    r = parts_requisitions.c
    query = (
        select(r.requisition_id)
        .where(r.ticket_id == ticket_id, r.status.in_(("reserved", "issued")))
        .order_by(r.requisition_id)
    )
    return list(conn.execute(query).scalars())


# --- old-part returns ---------------------------------------------------------------------

PENDING = ("expected", "overdue")


@dataclass(frozen=True)
class ReturnFilters:
    service_point_id: str | None = None
    status: str | None = None
    ticket_id: str | None = None
    # The caller's reach: a region, a technician's assigned tickets, a parts clerk's
    # location (the service point the part is expected back at).
    region: str | None = None
    technician_id: str | None = None
    reach_location: str | None = None


def _return_conditions(filters: ReturnFilters) -> list[ColumnElement[bool]]:
    t = parts_returns.c
    conditions = []
    for location in (filters.service_point_id, filters.reach_location):
        if location:
            conditions.append(same_location(t.service_point_id, location))
    if filters.status:
        conditions.append(t.status == filters.status)
    if filters.ticket_id:
        conditions.append(t.ticket_id == filters.ticket_id)
    if filters.region:
        conditions.append(t.region == filters.region)
    if filters.technician_id:
        conditions.append(t.ticket_id.in_(assigned_tickets(filters.technician_id)))
    return conditions


def list_returns(
    conn: Connection, filters: ReturnFilters, limit: int, cursor: str | None = None
) -> tuple[list[Row[Any]], str | None]:
    """Earliest due first, a page and the next one's cursor."""
    t = parts_returns.c
    query = select(parts_returns).order_by(t.due_at, t.return_id).limit(limit + 1)
    conditions = _return_conditions(filters)
    if cursor:
        conditions.append(after_cursor(cursor, t.due_at, t.return_id, descending=False))
    if conditions:
        query = query.where(and_(*conditions))
    return next_page(list(conn.execute(query).all()), limit, "due_at", "return_id")


def get_return(conn: Connection, return_id: str) -> Row[Any] | None:
    query = select(parts_returns).where(parts_returns.c.return_id == return_id)
    return conn.execute(query).first()


def returns_summary(conn: Connection, filters: ReturnFilters) -> list[Any]:
    """Per service point: parts expected back, returned, returned late, still out, and
    how many of those still out are overdue."""
    t = parts_returns.c

    def total(condition: Any, column: Any) -> Any:
        return func.coalesce(func.sum(case((condition, column), else_=0)), 0)

    query = (
        select(
            t.service_point_id,
            func.coalesce(func.sum(t.quantity), 0).label("expected"),
            func.coalesce(func.sum(t.returned_quantity), 0).label("returned"),
            func.coalesce(func.sum(t.late_quantity), 0).label("returned_late"),
            total(t.status == "overdue", t.quantity - t.returned_quantity).label("overdue"),
        )
        .group_by(t.service_point_id)
        .order_by(t.service_point_id)
    )
    if conditions := _return_conditions(filters):
        query = query.where(and_(*conditions))
    return list(conn.execute(query).all())


def pending_return_of(row: Any) -> PendingReturn:
    """A returns row (or its dict) as the decisions see it."""
    r = row if isinstance(row, dict) else row._mapping
    return PendingReturn(
        return_id=r["return_id"],
        ticket_id=r["ticket_id"],
        part_number=r["part_number"],
        old_serial=r["old_serial"],
        quantity=r["quantity"],
        returned_quantity=r["returned_quantity"],
        due_at=r["due_at"],
        service_point_id=r["service_point_id"],
    )


def pending_returns(conn: Connection, ticket_id: str) -> list[PendingReturn]:
    t = parts_returns.c
    query = select(parts_returns).where(t.ticket_id == ticket_id, t.status.in_(PENDING))
    return [pending_return_of(r) for r in conn.execute(query)]


def due_returns(conn: Connection, now: datetime, limit: int) -> list[PendingReturn]:
    """Expected returns past their due date, not yet recorded overdue."""
    t = parts_returns.c
    query = (
        select(parts_returns)
        .where(t.status == "expected", t.due_at < now, t.overdue_detected_at.is_(None))
        .order_by(t.due_at, t.return_id)
        .limit(limit)
    )
    return [pending_return_of(r) for r in conn.execute(query)]


def claim_overdue(conn: Connection, return_id: str, now: datetime) -> bool:
    """Mark an expected return overdue (as the returns read model will on the event), in
    the transaction that records the event: a second pass, a restart or a concurrent
    runner finds it claimed. False when it was claimed (or settled) already."""
    t = parts_returns.c
    claimed = conn.execute(
        update(parts_returns)
        .where(t.return_id == return_id, t.status == "expected", t.overdue_detected_at.is_(None))
        .values(status="overdue", overdue_detected_at=now)
    )
    return claimed.rowcount == 1

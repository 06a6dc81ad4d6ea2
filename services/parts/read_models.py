"""Parts reads: catalogue, locations, stock, requisitions, returns, monthly usage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.parts.tables import (
    parts_catalogue,
    parts_locations,
    parts_monthly_usage,
    parts_requisitions,
    parts_returns,
    parts_stock,
)
from shared.readmodels.ticket_state import ticket_state


def part_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["fits_models"] = json.loads(data["fits_models"])
    return data


async def get_part(conn: AsyncConnection, part_number: str) -> Any:
    c = parts_catalogue.c
    return (await conn.execute(select(parts_catalogue).where(c.part_number == part_number))).first()


async def list_parts(conn: AsyncConnection, model: str | None) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(select(parts_catalogue).order_by(parts_catalogue.c.part_number))
    ).all()
    parts = [part_dict(r) for r in rows]
    if model:
        parts = [p for p in parts if not p["fits_models"] or model in p["fits_models"]]
    return parts


async def get_location(conn: AsyncConnection, location_id: str) -> Any:
    c = parts_locations.c
    return (await conn.execute(select(parts_locations).where(c.location_id == location_id))).first()


async def list_locations(conn: AsyncConnection, region: str | None) -> list[Any]:
    query = select(parts_locations).order_by(parts_locations.c.location_id)
    if region:
        query = query.where(parts_locations.c.region == region)
    return list((await conn.execute(query)).all())


async def location_chain(conn: AsyncConnection, location_id: str) -> list[Any]:
    """The location, then its parent, and so on up to headquarters (nearest first)."""
    chain: list[Any] = []
    current: str | None = location_id
    while current is not None and len(chain) < 10 and current not in {r.location_id for r in chain}:
        row = await get_location(conn, current)
        if row is None:
            break
        chain.append(row)
        current = row.parent_id
    return chain


@dataclass(frozen=True)
class StockFilters:
    location_id: str | None = None
    part_number: str | None = None
    region: str | None = None


async def list_stock(conn: AsyncConnection, filters: StockFilters) -> list[Any]:
    s, loc = parts_stock.c, parts_locations.c
    query = (
        select(parts_stock, loc.region, loc.level)
        .join(parts_locations, loc.location_id == s.location_id)
        .order_by(s.location_id, s.part_number)
    )
    conditions = []
    if filters.location_id:
        conditions.append(s.location_id == filters.location_id)
    if filters.part_number:
        conditions.append(s.part_number == filters.part_number)
    if filters.region:
        conditions.append(loc.region == filters.region)
    if conditions:
        query = query.where(and_(*conditions))
    return list((await conn.execute(query)).all())


async def get_ticket(conn: AsyncConnection, ticket_id: str) -> Any:
    t = ticket_state.c
    return (await conn.execute(select(ticket_state).where(t.ticket_id == ticket_id))).first()


async def get_requisition(conn: AsyncConnection, requisition_id: str) -> Any:
    r = parts_requisitions.c
    query = select(parts_requisitions).where(r.requisition_id == requisition_id)
    return (await conn.execute(query)).first()


@dataclass(frozen=True)
class RequisitionFilters:
    ticket_id: str | None = None
    location_id: str | None = None  # requesting or source
    status: str | None = None
    technician_id: str | None = None
    region: str | None = None  # of the requesting location


async def list_requisitions(
    conn: AsyncConnection, filters: RequisitionFilters, limit: int
) -> list[Any]:
    r = parts_requisitions.c
    query = select(parts_requisitions).order_by(r.created_at.desc(), r.requisition_id).limit(limit)
    conditions = []
    if filters.ticket_id:
        conditions.append(r.ticket_id == filters.ticket_id)
    if filters.location_id:
        conditions.append(
            (r.requesting_location_id == filters.location_id)
            | (r.source_location_id == filters.location_id)
        )
    if filters.status:
        conditions.append(r.status == filters.status)
    if filters.technician_id:
        conditions.append(r.technician_id == filters.technician_id)
    if filters.region:
        loc = parts_locations.c
        requesting = select(loc.location_id).where(loc.region == filters.region)
        conditions.append(r.requesting_location_id.in_(requesting))
    if conditions:
        query = query.where(and_(*conditions))
    return list((await conn.execute(query)).all())


async def open_requisitions_for_ticket(conn: AsyncConnection, ticket_id: str) -> list[str]:
    r = parts_requisitions.c
    query = (
        select(r.requisition_id)
        .where(r.ticket_id == ticket_id, r.status.in_(("reserved", "issued")))
        .order_by(r.requisition_id)
    )
    return list((await conn.execute(query)).scalars())


@dataclass(frozen=True)
class ReturnFilters:
    service_point_id: str | None = None
    status: str | None = None
    ticket_id: str | None = None
    region: str | None = None
    technician_id: str | None = None  # a technician's reach: tickets assigned to them


def _return_conditions(filters: ReturnFilters) -> list[Any]:
    t = parts_returns.c
    conditions = []
    if filters.service_point_id:
        conditions.append(t.service_point_id == filters.service_point_id)
    if filters.status:
        conditions.append(t.status == filters.status)
    if filters.ticket_id:
        conditions.append(t.ticket_id == filters.ticket_id)
    if filters.region:
        conditions.append(t.region == filters.region)
    if filters.technician_id:
        assigned = select(ticket_state.c.ticket_id).where(
            ticket_state.c.technician_id == filters.technician_id
        )
        conditions.append(t.ticket_id.in_(assigned))
    return conditions


async def list_returns(conn: AsyncConnection, filters: ReturnFilters, limit: int) -> list[Any]:
    t = parts_returns.c
    query = select(parts_returns).order_by(t.due_at, t.return_id).limit(limit)
    if conditions := _return_conditions(filters):
        query = query.where(and_(*conditions))
    return list((await conn.execute(query)).all())


async def returns_summary(conn: AsyncConnection, filters: ReturnFilters) -> list[Any]:
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
            total(t.late.is_(True), t.returned_quantity).label("returned_late"),
            total(t.status == "overdue", t.quantity - t.returned_quantity).label("overdue"),
        )
        .group_by(t.service_point_id)
        .order_by(t.service_point_id)
    )
    if conditions := _return_conditions(filters):
        query = query.where(and_(*conditions))
    return list((await conn.execute(query)).all())


async def due_returns(conn: AsyncConnection, now: Any, limit: int) -> list[Any]:
    t = parts_returns.c
    query = (
        select(parts_returns)
        .where(t.status == "expected", t.due_at < now, t.overdue_detected_at.is_(None))
        .order_by(t.due_at, t.return_id)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def usage_by_part(
    conn: AsyncConnection, location_id: str, months: list[str]
) -> dict[str, dict[str, int]]:
    u = parts_monthly_usage.c
    query = select(u.part_number, u.month, u.quantity).where(
        u.location_id == location_id, u.month.in_(months)
    )
    found: dict[str, dict[str, int]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.part_number, {})[row.month] = row.quantity
    return found

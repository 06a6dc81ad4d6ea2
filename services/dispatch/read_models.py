"""Dispatch's reads: the network tables, ticket_state (loads, work lists) and flags."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, func, not_, or_, select, union

from services.dispatch.domain import (
    WORK_SHOWN,
    EarlierRepair,
    Network,
    ServicePointInfo,
    TechnicianInfo,
)
from services.dispatch.tables import (
    service_points,
    sla_clocks,
    sla_terms,
    technicians,
    ticket_flags,
)
from shared.eventstore.driver import Statement
from shared.eventstore.ledger import EventStore
from shared.kernel.events.network import NetworkLevel, Shift
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import RepairOutcome, TicketRepaired
from shared.kernel.lifecycle import CLOCK_STATUSES, TicketStatus, stored
from shared.kernel.network import id_key
from shared.readmodels.paging import after_cursor, next_page
from shared.readmodels.ticket_state import ticket_state

# A ticket is on its technician's list from dispatch until the repair; a reopened ticket
# stays on it (flagged) until it is dispatched again.
OPEN_ASSIGNMENT_STATUSES = (
    TicketStatus.dispatched.value,
    TicketStatus.visited.value,
    TicketStatus.reopened.value,
)
AWAITING_DISPATCH_STATUSES = (TicketStatus.diagnosed.value, TicketStatus.reopened.value)


def point_info(row: Any) -> ServicePointInfo:
    return ServicePointInfo(
        id=row.id,
        name=row.name,
        level=NetworkLevel(row.level),
        region=row.region,
        parent_id=row.parent_id,
        postcodes=tuple(row.postcodes),
        active=row.active,
    )


def technician_info(row: Any) -> TechnicianInfo:
    return TechnicianInfo(
        id=row.id,
        name=row.name,
        service_point_id=row.service_point_id,
        skills=frozenset(row.skills),
        working_hours=tuple(Shift.model_validate(s) for s in row.working_hours),
        timezone=row.timezone,
        active=row.active,
    )


def get_service_point_row(conn: Connection, point_id: str) -> Any:
    query = select(service_points).where(service_points.c.id == point_id)
    return conn.execute(query).first()


def get_service_point(conn: Connection, point_id: str | None) -> ServicePointInfo | None:
    if point_id is None:
        return None
    row = get_service_point_row(conn, point_id)
    return point_info(row) if row else None


def registered_point_id(conn: Connection, point_id: str) -> str | None:
    """The id a service point is registered under that differs from ``point_id`` in case
    only (network ids compare without case: ``id_key``); None when there is none."""
    return _registered_as(conn, service_points, point_id)


def registered_technician_id(conn: Connection, technician_id: str) -> str | None:
    """As ``registered_point_id``, for technicians (their ids are their sign-in subjects:
    two that differ in case only are a trap with identity providers that fold case)."""
    return _registered_as(conn, technicians, technician_id)


def _registered_as(conn: Connection, table: Table, member_id: str) -> str | None:
    c = table.c
    query = select(c.id).where(func.lower(c.id) == id_key(member_id), c.id != member_id)
    return conn.execute(query.order_by(c.id).limit(1)).scalar()


def list_service_point_rows(
    conn: Connection, *, region: str | None, level: str | None, regionless: bool = False
) -> list[Any]:
    """``regionless``: with ``region``, the members of no region too (headquarters: every
    regional caller's, shared/kernel/reach.py)."""
    sp = service_points.c
    query = select(service_points).order_by(sp.id)
    if region:
        in_region = sp.region == region
        query = query.where(or_(in_region, sp.region.is_(None)) if regionless else in_region)
    if level:
        query = query.where(sp.level == level)
    return list(conn.execute(query).all())


def get_technician_row(conn: Connection, technician_id: str) -> Any:
    query = (
        select(technicians, service_points.c.region)
        .select_from(
            technicians.outerjoin(
                service_points, service_points.c.id == technicians.c.service_point_id
            )
        )
        .where(technicians.c.id == technician_id)
    )
    return conn.execute(query).first()


def list_technician_rows(
    conn: Connection,
    *,
    region: str | None,
    service_point_id: str | None,
    skill: str | None,
    active: bool | None,
) -> list[Any]:
    t = technicians.c
    query = (
        select(technicians, service_points.c.region)
        .select_from(
            technicians.outerjoin(service_points, service_points.c.id == t.service_point_id)
        )
        .order_by(t.id)
    )
    if region:
        query = query.where(service_points.c.region == region)
    if service_point_id:
        query = query.where(t.service_point_id == service_point_id)
    if active is not None:
        query = query.where(t.active == active)
    rows = list(conn.execute(query).all())
    if skill:  # skills are a JSON list: filtered here, the same on both databases
        rows = [r for r in rows if skill.lower() in r.skills]
    return rows


def network_in_region(
    conn: Connection, region: str | None
) -> tuple[list[ServicePointInfo], list[TechnicianInfo]]:
    """The service points of ``region`` and the technicians working at them (nothing for
    a ticket without a region)."""
    if region is None:
        return [], []
    points = [point_info(r) for r in list_service_point_rows(conn, region=region, level=None)]
    ids = [p.id for p in points]
    if not ids:
        return points, []
    query = (
        select(technicians)
        .where(technicians.c.service_point_id.in_(ids))
        .order_by(technicians.c.id)
    )
    return points, [technician_info(r) for r in conn.execute(query).all()]


def named_technician(
    conn: Connection, technician_id: str
) -> tuple[list[ServicePointInfo], list[TechnicianInfo]]:
    """The technician (when registered) and the service point it works at."""
    row = get_technician_row(conn, technician_id)
    if row is None:
        return [], []
    technician = technician_info(row)
    point = get_service_point(conn, technician.service_point_id)
    return [point] if point else [], [technician]


def dispatch_network(
    conn: Connection, region: str | None, technician_id: str | None, *, except_ticket: str
) -> Network:
    """What a dispatch of a ticket in ``region`` looks at: the named technician, or the
    region's points and technicians; with their open assignments (this ticket's not
    counted)."""
    if technician_id is not None:
        points, techs = named_technician(conn, technician_id)
    else:
        points, techs = network_in_region(conn, region)
    loads = open_loads(conn, [t.id for t in techs], except_ticket=except_ticket)
    return Network(tuple(points), tuple(techs), loads)


def technician_region(conn: Connection, technician_id: str) -> str | None:
    """The region of the service point the technician works at."""
    row = get_technician_row(conn, technician_id)
    return row.region if row is not None else None


def open_loads(
    conn: Connection, technician_ids: Sequence[str], *, except_ticket: str | None = None
) -> dict[str, int]:
    """Open assignments per technician (the ticket being dispatched not counted)."""
    if not technician_ids:
        return {}
    t = ticket_state.c
    query = (
        select(t.technician_id, func.count())
        .where(t.technician_id.in_(list(technician_ids)), t.status.in_(OPEN_ASSIGNMENT_STATUSES))
        .group_by(t.technician_id)
    )
    if except_ticket:
        query = query.where(t.ticket_id != except_ticket)
    return {r[0]: int(r[1]) for r in conn.execute(query).all()}


# A work list's order: the clock's nearest open deadline (moved by pauses) once the clock
# row is there, else the deadline recorded on the events.
DEADLINE = func.coalesce(
    sla_clocks.c.due_at,
    func.coalesce(ticket_state.c.resolution_due_at, ticket_state.c.response_due_at),
).label("deadline")


def _work_list_query() -> Any:
    """Work-list rows: the ticket, its flags and its SLA clock (``DEADLINE``)."""
    t, c = ticket_state.c, sla_clocks.c
    current = and_(c.ticket_id == t.ticket_id, c.version == t.version)
    return select(
        t.ticket_id,
        t.ticket_number,
        t.status,
        t.region,
        t.urgency,
        t.product_model,
        t.product_line,
        t.customer_id,
        t.address_line,
        t.service_point_id,
        t.technician_id,
        t.appointment_start,
        t.appointment_end,
        t.resolution_path,
        t.reopen_count,
        t.response_due_at,
        t.resolution_due_at,
        DEADLINE,
        func.coalesce(ticket_flags.c.escalated, False).label("escalated"),
        ticket_flags.c.escalation_cause,
        ticket_flags.c.escalation_level,
        ticket_flags.c.response_breached_at,
        ticket_flags.c.resolution_breached_at,
        ticket_flags.c.repeat_of_ticket_id,
        func.coalesce(c.paused, False).label("sla_paused"),
        c.pause_reason.label("sla_pause_reason"),
        c.warning_level.label("sla_warning_level"),
        c.warning_percent.label("sla_warning_percent"),
    ).select_from(
        ticket_state.outerjoin(ticket_flags, ticket_flags.c.ticket_id == t.ticket_id).outerjoin(
            sla_clocks, current
        )
    )


def open_ticket_regions(
    conn: Connection, *, technician_id: str | None = None, service_point_id: str | None = None
) -> frozenset[str]:
    """The regions of the open tickets assigned to a technician, or held at a service point
    (dispatched through it, or assigned to a technician now working there)."""
    t = ticket_state.c
    if technician_id is not None:
        held = [t.technician_id == technician_id]
    else:
        there = select(technicians.c.id).where(technicians.c.service_point_id == service_point_id)
        held = [t.service_point_id == service_point_id, t.technician_id.in_(there)]
    # One query per way of holding, each seeking its (…, status) index: under an OR,
    # SQLite walked every open ticket.
    open_ = t.status.in_(OPEN_ASSIGNMENT_STATUSES)
    query = union(*(select(t.region).where(way, open_) for way in held))
    return frozenset(r for (r,) in conn.execute(query) if r is not None)


def work_under_way(
    conn: Connection,
    *,
    technician_id: str | None = None,
    service_point_id: str | None = None,
    limit: int = WORK_SHOWN + 1,
) -> tuple[str, ...]:
    """The open tickets a technician is dispatched to, or dispatched through a service
    point, and not yet repaired (a reopened one waits in the queue for its next dispatch:
    not under way) — the first ``limit`` by id (one more than a refusal names: it says
    whether there are more)."""
    t = ticket_state.c
    way = (
        t.technician_id == technician_id
        if technician_id is not None
        else t.service_point_id == service_point_id
    )
    under_way = (TicketStatus.dispatched.value, TicketStatus.visited.value)
    query = select(t.ticket_id).where(way, t.status.in_(under_way))
    return tuple(conn.execute(query.order_by(t.ticket_id).limit(limit)).scalars())


def child_regions(conn: Connection, point_id: str) -> frozenset[str]:
    """The regions of the service points under a regional center."""
    p = service_points.c
    query = select(p.region).distinct().where(p.parent_id == point_id)
    return frozenset(r for (r,) in conn.execute(query) if r is not None)


def technician_assignments(conn: Connection, technician_id: str) -> list[Any]:
    t = ticket_state.c
    query = (
        _work_list_query()
        .where(t.technician_id == technician_id, t.status.in_(OPEN_ASSIGNMENT_STATUSES))
        .order_by("deadline", t.ticket_id)
    )
    return list(conn.execute(query).all())


def dispatch_queue(
    conn: Connection, region: str | None, limit: int, cursor: str | None = None
) -> tuple[list[Any], str | None]:
    """Nearest deadline first, a page and the next one's cursor."""
    t = ticket_state.c
    query = (
        _work_list_query()
        .where(
            t.status.in_(AWAITING_DISPATCH_STATUSES),
            # Remote guidance is solved by phone unless the ticket comes back reopened.
            or_(t.status == TicketStatus.reopened.value, t.resolution_path != "remote_guidance"),
        )
        .order_by("deadline", t.ticket_id)
        .limit(limit + 1)
    )
    if region:
        query = query.where(t.region == region)
    if cursor:
        query = query.where(after_cursor(cursor, DEADLINE, t.ticket_id, descending=False))
    return next_page(list(conn.execute(query).all()), limit, "deadline", "ticket_id")


SLA_OPEN_STATUSES = stored(CLOCK_STATUSES)


def sla_candidates(conn: Connection, now: datetime, *, after: str, limit: int) -> list[str]:
    """Tickets the SLA job decides on (their stream decides; this only narrows the scan):
    those whose clock row, current with the ticket, has its next step due; and those
    without a current row yet (its projection lags) that may still have a step to record —
    a clock running, or a deadline recorded on the events met after it."""
    t, c = ticket_state.c, sla_clocks.c
    f = ticket_flags.c
    current = and_(c.ticket_id.is_not(None), c.version == t.version)
    due = and_(current, c.next_check_at <= now)
    met_late = or_(
        and_(t.responded_at > t.response_due_at, f.response_breached_at.is_(None)),
        and_(t.repaired_at > t.resolution_due_at, f.resolution_breached_at.is_(None)),
    )
    lagging = and_(not_(current), or_(t.status.in_(SLA_OPEN_STATUSES), met_late))
    query = (
        select(t.ticket_id)
        .select_from(
            ticket_state.outerjoin(sla_clocks, c.ticket_id == t.ticket_id).outerjoin(
                ticket_flags, f.ticket_id == t.ticket_id
            )
        )
        .where(or_(due, lagging), t.ticket_id > after)
        .order_by(t.ticket_id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def list_terms(conn: Connection, kind: str) -> list[Any]:
    query = select(sla_terms).where(sla_terms.c.kind == kind).order_by(sla_terms.c.id)
    return list(conn.execute(query).all())


# On the driver: every received ticket asks it (the repeat-repair reactor).
_SAME_SERIAL = Statement(
    "SELECT ticket_id FROM ticket_state WHERE upper(serial_number) = upper(:serial) "
    "AND ticket_id != :ticket_id"
)


def earlier_repairs(
    conn: Connection,
    store: EventStore,
    serial: str | None,
    *,
    ticket_id: str,
    before_position: int,
) -> list[EarlierRepair]:
    """Repairs of other tickets with this serial, recorded before ``before_position`` (so
    the answer does not depend on when the question is asked). None without a serial."""
    if not serial:
        return []
    found: list[EarlierRepair] = []
    for (other,) in _SAME_SERIAL.rows(conn, serial, ticket_id):
        for e in store.read_stream(conn, other):
            if e.position >= before_position or e.event_type != TicketRepaired.event_type:
                continue
            payload = typed_payload(e)
            assert isinstance(payload, TicketRepaired)
            found.append(EarlierRepair(other, e.occurred_at, RepairOutcome(payload.outcome)))
    return found

"""Dispatch's imports: the service network (service points, technicians) and its steps of
an imported ticket's history (repeat-repair check, dispatch, visit, repair, SLA breaches),
each decided by dispatch's own decide functions. Formats: ``docs/import/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter
from sqlalchemy import Connection, case, func, select

from services.dispatch import domain, read_models
from services.dispatch.tables import service_points, technicians
from shared.app.config import Settings
from shared.app.importing.fields import Column, Fields
from shared.app.importing.kinds import (
    Kind,
    KindContext,
    Parsed,
    Segment,
    Verdict,
    conflict,
    each,
    guarded,
    run_at,
)
from shared.app.importing.tickets import Decided, HistoryStep, TicketHistoryView, TicketRow
from shared.eventstore.ledger import EventStore
from shared.eventstore.tables import events
from shared.kernel.events.envelope import PendingEvent
from shared.kernel.events.network import (
    WEEKDAYS,
    NetworkId,
    ServicePointDescription,
    Shift,
    TechnicianDescription,
    Weekday,
)
from shared.kernel.events.tickets import (
    CostBearer,
    RepairOutcome,
    TicketDispatched,
    TicketRepaired,
    TicketVisited,
    UsedPart,
)
from shared.kernel.network import id_key
from shared.kernel.parts import normalise_serial_number
from shared.kernel.sla import SlaTerms
from shared.kernel.ticket import TICKETS, TicketState
from shared.readmodels.ticket_state import ticket_state

SERVICE = "dispatch"
_ID = TypeAdapter(NetworkId)
_DAYS = {w.value: i for i, w in enumerate(WEEKDAYS)}
_SHIFT = re.compile(r"^([a-z,\-]+)\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})$")


def network_id(f: Fields, column: str, *, required: bool = False) -> str | None:
    return f.identifier(
        column, _ID, max_length=100, allowed="letters, digits and . _ @ -", required=required
    )


def at_column(f: Fields, column: str, context: KindContext) -> datetime:
    """When the member was registered (default: the import; never after it)."""
    at = f.timestamp(column)
    if at is not None and at > context.now:
        f.problem(column, "in the future")
    return at or context.now


# --- working hours: "mon-fri 08:00-18:00; sat 09:00-12:00" ---------------------------------


def parse_shifts(f: Fields, column: str) -> list[Shift]:
    value = f.values.get(column)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return [s for v in value if (s := f.model(Shift, {}, within=column, **v)) is not None]
    shifts: list[Shift] = []
    for text in f.items(column):
        found = _SHIFT.match(text.lower())
        days = _days(found.group(1)) if found else None
        if not found or days is None:
            f.problem(column, f"{text!r}: expected e.g. 'mon-fri 08:00-18:00'")
            continue
        try:
            start, end = (
                time.fromisoformat(found.group(2).zfill(5)),
                time.fromisoformat(found.group(3).zfill(5)),
            )
        except ValueError:
            f.problem(column, f"{text!r}: not a time of day")
            continue
        shifts += [
            s
            for d in days
            if (s := f.model(Shift, {}, within=column, weekday=d, start=start, end=end))
        ]
    return shifts


def _days(text: str) -> list[Weekday] | None:
    out: list[Weekday] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            return None
        a, b = _DAYS[first], _DAYS[last or first]
        if b < a:
            return None
        out += WEEKDAYS[a : b + 1]
    return out


def format_shifts(shifts: Sequence[dict[str, Any]] | Sequence[Shift]) -> str:
    """Consecutive days with the same hours written as a range."""
    items = [s if isinstance(s, Shift) else Shift.model_validate(s) for s in shifts]
    items.sort(key=lambda s: (s.start, s.end, _DAYS[s.weekday.value]))
    out: list[str] = []
    run: list[Shift] = []
    for shift in [*items, None]:
        if run and (
            shift is None
            or (shift.start, shift.end) != (run[-1].start, run[-1].end)
            or _DAYS[shift.weekday.value] != _DAYS[run[-1].weekday.value] + 1
        ):
            days = run[0].weekday.value + ("" if len(run) == 1 else f"-{run[-1].weekday.value}")
            out.append(f"{days} {run[0].start:%H:%M}-{run[0].end:%H:%M}")
            run = []
        if shift is not None:
            run.append(shift)
    return "; ".join(out)


# --- service points ----------------------------------------------------------------------


@dataclass(frozen=True)
class PointRow:
    point_id: str
    description: ServicePointDescription
    registered_at: datetime


_POINT_FIELDS = {
    "parent_id": "parent_id",
    "region": "region",
    "kind": "kind",
    "level": "level",
    # Rules the decision names → the column at fault.
    "parent_level": "parent_id",
    "parent_region": "region",
    "already_registered": "id",
}


class ServicePoints(Kind):
    name = "service_points"
    service = SERVICE
    title = "Service network: headquarters, regional centers, service points"
    key_column = "id"
    columns = (
        Column("id", True, "The member's id (letters, digits, . _ @ -)."),
        Column("name", True),
        Column("level", True, "headquarters, regional_center, service_point."),
        Column("kind", False, "own_outlet or dealer (service points only)."),
        Column("parent_id", False, "Its regional center (or headquarters); on an earlier line."),
        Column("region", False, "Region code (not for headquarters)."),
        Column("postcodes", False, "Postcode prefixes covered, ';'-separated; empty: all."),
        Column("address"),
        Column("active", False, "true (default) or false."),
        Column("registered_at", False, "When it joined the network (default: the import)."),
    )

    def parse(self, f: Fields, context: KindContext) -> PointRow | None:
        point_id = network_id(f, "id", required=True)
        values = {
            "name": f.text("name", required=True, max_length=200),
            "level": f.text("level", required=True),
            "kind": f.text("kind"),
            "parent_id": network_id(f, "parent_id"),
            "region": f.text("region"),
            "postcodes": f.items("postcodes"),
            "address": f.text("address", max_length=200),
            "active": f.boolean("active") is not False,
        }
        columns = {k: k for k in values}
        description = f.model(ServicePointDescription, columns, **values)
        registered_at = at_column(f, "registered_at", context)
        if point_id is None or description is None:
            return None
        return PointRow(point_id, description, registered_at)

    def key(self, item: PointRow) -> str:
        return item.point_id

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        memory: dict[str, domain.ServicePointInfo] = context.memory.setdefault("points", {})
        # The ids imported so far, by ``id_key`` (network ids compare without case).
        spellings: dict[str, str] = context.memory.setdefault("point_ids", {})

        def point(point_id: str | None) -> domain.ServicePointInfo | None:
            if point_id is None:
                return None
            return memory.get(point_id) or read_models.get_service_point(conn, point_id)

        def one(parsed: Parsed) -> Verdict:
            row: PointRow = parsed.item
            existing = read_models.get_service_point_row(conn, row.point_id)
            if existing is not None:
                stored = _description_of(existing)
                if stored != row.description:
                    raise conflict(
                        parsed.line,
                        "id",
                        f"service point {row.point_id}",
                        stored,
                        row.description,
                        remedy=f"change it with PUT /service-points/{row.point_id}",
                    )
                return Verdict(parsed.line, present=True)
            spelled = spellings.get(id_key(row.point_id), row.point_id)  # earlier in the file
            taken = read_models.registered_point_id(conn, row.point_id)
            command = domain.RegisterServicePoint(
                row.description,
                point(row.description.parent_id),
                taken or (spelled if spelled != row.point_id else None),
            )
            state = domain.NetworkMember(row.point_id)
            events, after = guarded(
                parsed.line,
                "level",
                lambda: run_at(
                    domain.SERVICE_POINTS,
                    state,
                    command,
                    domain.decide_register_service_point,
                    row.registered_at,
                ),
                _POINT_FIELDS,
            )
            memory[row.point_id] = _info(row.point_id, row.description)
            spellings[id_key(row.point_id)] = row.point_id
            segment = Segment(SERVICE, row.point_id, tuple(events), after.region)
            return Verdict(parsed.line, segments=(segment,))

        return each(batch, one)

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any]]:
        sp = service_points.c
        order = case({"headquarters": 0, "regional_center": 1}, value=sp.level, else_=2)
        for row in conn.execute(select(service_points).order_by(order, sp.id)):
            yield {
                "id": row.id,
                "name": row.name,
                "level": row.level,
                "kind": row.kind,
                "parent_id": row.parent_id,
                "region": row.region,
                "postcodes": list(row.postcodes),
                "address": row.address,
                "active": row.active,
                "registered_at": row.registered_at,
            }


def _description_of(row: Any) -> ServicePointDescription:
    return ServicePointDescription(
        name=row.name,
        level=row.level,
        kind=row.kind,
        parent_id=row.parent_id,
        region=row.region,
        postcodes=list(row.postcodes),
        address=row.address,
        active=row.active,
    )


def _info(point_id: str, d: ServicePointDescription) -> domain.ServicePointInfo:
    return domain.ServicePointInfo(
        point_id, d.name, d.level, d.region, d.parent_id, tuple(d.postcodes), d.active
    )


# --- technicians -------------------------------------------------------------------------


@dataclass(frozen=True)
class TechnicianRow:
    technician_id: str
    description: TechnicianDescription
    active: bool
    registered_at: datetime


class Technicians(Kind):
    name = "technicians"
    service = SERVICE
    title = "Technicians: their service point, skills, working hours, time zone"
    key_column = "id"
    columns = (
        Column("id", True, "The technician's login subject."),
        Column("name", True),
        Column("service_point_id", True, "A registered service point."),
        Column("skills", False, "Product lines, ';'-separated."),
        Column("working_hours", False, "e.g. 'mon-fri 08:00-18:00; sat 09:00-12:00' (local time)."),
        Column(
            "timezone", False, "IANA time zone, e.g. Asia/Shanghai (default: the configured one)."
        ),
        Column("active", False, "true (default) or false (left: kept for the history)."),
        Column("registered_at", False, "When they joined (default: the import)."),
    )

    def parse(self, f: Fields, context: KindContext) -> TechnicianRow | None:
        technician_id = network_id(f, "id", required=True)
        zone = f.timezone("timezone") or context.settings.dispatch.default_timezone
        values = {
            "name": f.text("name", required=True, max_length=200),
            "service_point_id": network_id(f, "service_point_id", required=True),
            "skills": f.items("skills"),
            "working_hours": parse_shifts(f, "working_hours"),
            "timezone": zone,
        }
        description = f.model(TechnicianDescription, {k: k for k in values}, **values)
        active = f.boolean("active") is not False
        registered_at = at_column(f, "registered_at", context)
        if technician_id is None or description is None:
            return None
        return TechnicianRow(technician_id, description, active, registered_at)

    def key(self, item: TechnicianRow) -> str:
        return item.technician_id

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        # The ids imported so far, by ``id_key`` (ids compare without case).
        spellings: dict[str, str] = context.memory.setdefault("technician_ids", {})
        return each(batch, lambda parsed: _technician(conn, parsed, spellings))

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any]]:
        for row in conn.execute(select(technicians).order_by(technicians.c.id)):
            yield {
                "id": row.id,
                "name": row.name,
                "service_point_id": row.service_point_id,
                "skills": list(row.skills),
                "working_hours": format_shifts(row.working_hours),
                "timezone": row.timezone,
                "active": row.active,
                "registered_at": row.registered_at,
            }


def _hours_as_set(info: domain.TechnicianInfo) -> domain.TechnicianInfo:
    """Shifts compare in any order (an export lists them as stored, a sheet as typed)."""
    order = sorted(info.working_hours, key=lambda s: (WEEKDAYS.index(s.weekday), s.start, s.end))
    return replace(info, working_hours=tuple(order))


def _technician(conn: Connection, parsed: Parsed, spellings: dict[str, str]) -> Verdict:
    row: TechnicianRow = parsed.item
    existing = read_models.get_technician_row(conn, row.technician_id)
    if existing is not None:
        stored = _hours_as_set(read_models.technician_info(existing))
        given = _hours_as_set(
            replace(_technician_info(row.technician_id, row.description), active=row.active)
        )
        if stored != given:
            raise conflict(
                parsed.line,
                "id",
                f"technician {row.technician_id}",
                stored,
                given,
                remedy=f"change it with PUT /technicians/{row.technician_id}",
            )
        return Verdict(parsed.line, present=True)
    point = read_models.get_service_point(conn, row.description.service_point_id)
    decider = domain.technicians_in(point.region if point else None)
    state = domain.NetworkMember(row.technician_id)
    spelled = spellings.setdefault(id_key(row.technician_id), row.technician_id)
    taken = read_models.registered_technician_id(conn, row.technician_id)
    register = domain.RegisterTechnician(
        row.description, point, taken or (spelled if spelled != row.technician_id else None)
    )
    fields = {
        "service_point_id": "service_point_id",
        "timezone": "timezone",
        "working_hours": "working_hours",
        "already_registered": "id",
    }
    events, state = guarded(
        parsed.line,
        "service_point_id",
        lambda: run_at(
            decider, state, register, domain.decide_register_technician, row.registered_at
        ),
        fields,
    )
    if not row.active:
        leave = domain.SetTechnicianActive(False, "inactive in the replaced system (imported)")
        more, state = run_at(
            decider, state, leave, domain.decide_set_technician_active, row.registered_at
        )
        events += more
    return Verdict(
        parsed.line,
        segments=(
            Segment(SERVICE, row.technician_id, tuple(events), point.region if point else None),
        ),
    )


def _technician_info(technician_id: str, d: TechnicianDescription) -> domain.TechnicianInfo:
    return domain.TechnicianInfo(
        technician_id,
        d.name,
        d.service_point_id,
        frozenset(s.strip().lower() for s in d.skills),
        tuple(d.working_hours),
        d.timezone,
    )


SERVICE_POINTS = ServicePoints()
TECHNICIANS = Technicians()
KINDS: tuple[Kind, ...] = (SERVICE_POINTS, TECHNICIANS)


# --- an imported ticket's field work ------------------------------------------------------

NOT_RECORDED = "not recorded (imported)"
# Repairs decided by a validating pass, by serial (``KindContext.remembered``).
REPAIRS = "dispatch.repairs"
_PART = re.compile(
    r"^(?P<part>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\s*[x*]\s*(?P<qty>\d+))?(?P<rest>(?:\s+\S+)*)$"
)
HISTORY_COLUMNS = (
    Column("dispatched_at", False, "When the technician was assigned."),
    Column("service_point_id", False, "The technician's service point (checked)."),
    Column("technician_id", False, "A registered technician (required with dispatched_at)."),
    Column("appointment_start", False, "The appointment window promised (with dispatched_at)."),
    Column("appointment_end"),
    Column("visited_at", False, "The technician's check-in on site."),
    Column("findings", False, f"Default: {NOT_RECORDED}."),
    Column("repaired_at"),
    Column("outcome", False, "fixed, replaced, not_fixable, customer_declined."),
    Column("parts_used", False, "e.g. 'MOTOR-WM700 x1 new=SN1 old=SN2 warranty; BELT-22 x2'."),
    Column("labour_minutes"),
    Column("cost_borne_by", False, "warranty or customer (default: from the warranty)."),
    Column("cost_amount"),
    Column("repair_notes"),
)


@dataclass(frozen=True)
class FieldWork:
    """The row's dispatch, visit and repair (each None when the row has none)."""

    dispatched_at: datetime | None = None
    request: domain.DispatchRequest | None = None
    visited_at: datetime | None = None
    findings: str | None = None
    repaired_at: datetime | None = None
    repair: domain.RecordRepair | None = None


def parse_parts(f: Fields, column: str) -> tuple[UsedPart, ...]:
    """``PART [xN] [new=SERIAL] [old=SERIAL] [warranty]`` items, or JSON objects."""
    value = f.values.get(column)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return tuple(p for v in value if (p := f.model(UsedPart, {}, **v)) is not None)
    out: list[UsedPart] = []
    for text in f.items(column):
        found = _PART.match(text)
        attributes: dict[str, Any] = {}
        for word in found.group("rest").split() if found else []:
            key, _, val = word.partition("=")
            if word == "warranty":
                attributes["under_warranty"] = True
            elif key in ("new", "old") and val:
                attributes[f"{key}_serial"] = val
            else:
                found = None
        if found is None:
            f.problem(column, f"{text!r}: expected e.g. 'MOTOR-WM700 x1 new=SN1 old=SN2 warranty'")
            continue
        quantity = int(found.group("qty") or 1)
        used = f.model(
            UsedPart, {}, part_number=found.group("part"), quantity=quantity, **attributes
        )
        if used is not None:
            out.append(used)
    return tuple(out)


def format_parts(parts: Sequence[UsedPart]) -> str:
    out = []
    for p in parts:
        words = [p.part_number, f"x{p.quantity}"]
        words += [f"new={p.new_serial}"] if p.new_serial else []
        words += [f"old={p.old_serial}"] if p.old_serial else []
        words += ["warranty"] if p.under_warranty else []
        out.append(" ".join(words))
    return "; ".join(out)


def _dispatch_request(f: Fields) -> tuple[datetime | None, domain.DispatchRequest | None]:
    columns = ("service_point_id", "technician_id", "appointment_start", "appointment_end")
    at = f.timestamp("dispatched_at")
    if at is None:
        f.given_without("dispatched_at", columns)
        return None, None
    technician = network_id(f, "technician_id", required=True)
    point = network_id(f, "service_point_id")
    start = f.timestamp("appointment_start", required=True)
    end = f.timestamp("appointment_end", required=True)
    if technician is None or start is None or end is None:
        return at, None
    reason = "imported from the replaced system"
    return at, domain.DispatchRequest(technician, point, (start, end), reason)


def _repair(f: Fields) -> tuple[datetime | None, domain.RecordRepair | None]:
    columns = (
        "outcome",
        "parts_used",
        "labour_minutes",
        "cost_borne_by",
        "cost_amount",
        "repair_notes",
    )
    at = f.timestamp("repaired_at")
    if at is None:
        f.given_without("repaired_at", columns)
        return None, None
    outcome = f.choice("outcome", RepairOutcome, required=True)
    repair = domain.RecordRepair(
        outcome=outcome or RepairOutcome.fixed,
        parts_used=parse_parts(f, "parts_used"),
        labour_minutes=f.integer("labour_minutes", minimum=0, maximum=10_000) or 0,
        cost_borne_by=f.choice("cost_borne_by", CostBearer),
        cost_amount=repair_cost(f),
        notes=f.text("repair_notes"),
    )
    return at, repair if outcome is not None else None


def repair_cost(f: Fields) -> float:
    amount = f.number("cost_amount", minimum=0) or 0.0
    if (problem := domain.cost_problem(amount)) is not None:
        f.problem("cost_amount", problem)
    return amount


def parse_field_work(f: Fields, _context: KindContext) -> FieldWork:
    dispatched_at, request = _dispatch_request(f)
    visited_at = f.timestamp("visited_at")
    findings = f.text("findings")
    if visited_at is None:
        f.given_without("visited_at", ("findings",))
    repaired_at, repair = _repair(f)
    return FieldWork(dispatched_at, request, visited_at, findings, repaired_at, repair)


def field_work_times(part: FieldWork) -> list[tuple[str, datetime | None]]:
    return [
        ("dispatched_at", part.dispatched_at),
        ("visited_at", part.visited_at),
        ("repaired_at", part.repaired_at),
    ]


@dataclass
class FieldFacts:
    """What a batch of rows' field work is decided with: the named technicians and their
    points (as registered, active then: the work was done), the earlier repairs of the
    rows' serials (recorded, and decided in this batch so far), the settings."""

    settings: Settings
    network: dict[str, tuple[domain.TechnicianInfo, domain.ServicePointInfo | None]]
    repairs: dict[str, list[domain.EarlierRepair]]


def gather_field_work(
    conn: Connection, rows: Sequence[TicketRow], context: KindContext
) -> FieldFacts:
    network = context.memory.setdefault("dispatch.network", {})
    named = {
        w.request.technician_id
        for r in rows
        if (w := r.parts[SERVICE]).request is not None and w.request.technician_id
    }
    for technician_id in sorted(named - set(network)):
        found = read_models.named_technician(conn, technician_id)
        if found[1]:
            # As registered, and active then: the history shows they did the work.
            point = replace(found[0][0], active=True) if found[0] else None
            network[technician_id] = (replace(found[1][0], active=True), point)
    serials = {
        normalise_serial_number(str(s)) for r in rows if (s := r.values.get("serial_number"))
    }
    repairs = earlier_repairs(conn, serials)
    if context.remembered is not None:  # validating: earlier batches' repairs not written yet
        for serial, found in context.remembered.find(REPAIRS, serials).items():
            repairs.setdefault(serial, []).extend(found)
    return FieldFacts(context.settings, network, repairs)


def earlier_repairs(conn: Connection, serials: set[str]) -> dict[str, list[domain.EarlierRepair]]:
    """The recorded repairs of tickets with these serials (one query for the batch), by
    normalised serial."""
    found: dict[str, list[domain.EarlierRepair]] = {}
    if not serials:
        return found
    t, e = ticket_state.c, events.c
    query = (
        select(t.serial_number, e.stream_id, e.occurred_at, e.payload)
        .select_from(ticket_state.join(events, e.stream_id == t.ticket_id))
        .where(
            # Folded by the database on both sides (PostgreSQL's upper() may fold more
            # than ASCII under its collation): the same answer as the live lookup's.
            func.upper(t.serial_number).in_([func.upper(s) for s in sorted(serials)]),
            e.event_type == TicketRepaired.event_type,
        )
    )
    for serial, ticket_id, at, payload in conn.execute(query):
        outcome = RepairOutcome(orjson.loads(payload)["outcome"])
        repair = domain.EarlierRepair(ticket_id, at, outcome)
        found.setdefault(normalise_serial_number(serial), []).append(repair)
    return found


_DISPATCH_FIELDS = {
    "technician_id": "technician_id",
    "service_point_id": "service_point_id",
    "appointment_start": "appointment_start",
    "appointment_end": "appointment_end",
}


def _dispatch(row: TicketRow, state: TicketState, facts: FieldFacts, work: FieldWork) -> Decided:
    assert work.request is not None and work.dispatched_at is not None
    named = facts.network.get(work.request.technician_id or "")
    network = domain.Network(
        points=tuple(p for p in (named[1] if named else None,) if p is not None),
        technicians=(named[0],) if named else (),
    )
    settings = facts.settings.dispatch
    command = domain.DispatchTicket(
        work.request,
        network,
        now=work.dispatched_at,
        window_length=timedelta(hours=settings.appointment_window_hours),
        horizon_days=settings.suggestion_horizon_days,
    )
    return guarded(
        row.line,
        "dispatched_at",
        lambda: run_at(TICKETS, state, command, domain.decide_dispatch, work.dispatched_at),
        _DISPATCH_FIELDS,
    )


def _visit_and_repair(row: TicketRow, state: TicketState, work: FieldWork) -> Decided:
    events: list[PendingEvent] = []
    if work.visited_at is not None:
        visit = domain.RecordVisit(
            domain.Visit(work.findings or NOT_RECORDED, work.visited_at), now=work.visited_at
        )
        events, state = guarded(
            row.line,
            "visited_at",
            lambda: run_at(TICKETS, state, visit, domain.decide_visit, work.visited_at),
        )
    if work.repair is not None and work.repaired_at is not None:
        repaired, state = guarded(
            row.line,
            "repaired_at",
            lambda: run_at(TICKETS, state, work.repair, domain.decide_repair, work.repaired_at),
            {"parts_used": "parts_used", "cost_borne_by": "cost_borne_by"},
        )
        events += repaired
    return events, state


def decide_field_work(
    row: TicketRow, state: TicketState, facts: FieldFacts, _context: KindContext
) -> Decided:
    """Repeat-repair check as of the receipt, then dispatch, visit, repair, then the SLA
    deadlines as of the last step (breaches met late are recorded as the clock would)."""
    work: FieldWork = row.parts[SERVICE]
    assert state.received is not None and state.received_at is not None
    serial = state.received.product.serial_number
    flag = domain.FlagRepeatRepair(
        tuple(facts.repairs.get(normalise_serial_number(serial or ""), ())),
        facts.settings.dispatch.repeat_repair_window_days,
    )
    events, state = run_at(TICKETS, state, flag, domain.decide_repeat_repair, state.received_at)
    if work.request is not None:
        dispatched, state = _dispatch(row, state, facts, work)
        events += dispatched
    done, state = _visit_and_repair(row, state, work)
    events += done
    last = max(
        t
        for t in (state.received_at, state.responded_at, *[t for _, t in field_work_times(work)])
        if t
    )
    # Imported tickets run on the built-in policy (their receipt pins none).
    sla = facts.settings.sla
    check = domain.CheckSla(last, SlaTerms(sla.builtin_policy(), {}, sla.horizon))
    breaches, state = run_at(TICKETS, state, check, domain.decide_sla, last)
    return events + breaches, state


def accept_field_work(
    row: TicketRow, state: TicketState, facts: FieldFacts, context: KindContext
) -> None:
    """A row's repair is an earlier repair for the file's later rows (repeat repairs)."""
    work: FieldWork = row.parts[SERVICE]
    assert state.received is not None
    serial = state.received.product.serial_number
    if serial and work.repair is not None and work.repaired_at is not None:
        repair = domain.EarlierRepair(row.ticket_id, work.repaired_at, work.repair.outcome)
        key = normalise_serial_number(serial)
        facts.repairs.setdefault(key, []).append(repair)
        if context.remembered is not None:
            context.remembered.add(REPAIRS, key, repair)


def export_field_work(view: TicketHistoryView) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (dispatched := view.latest.get(TicketDispatched.event_type)) is not None:
        d, at = dispatched
        assert isinstance(d, TicketDispatched)
        out |= {
            "dispatched_at": at,
            "service_point_id": d.service_point_id,
            "technician_id": d.technician_id,
            "appointment_start": d.appointment_start,
            "appointment_end": d.appointment_end,
        }
    if (visited := view.latest.get(TicketVisited.event_type)) is not None:
        v = visited[0]
        assert isinstance(v, TicketVisited)
        out |= {"visited_at": v.arrived_at, "findings": v.findings}
    if (repaired := view.latest.get(TicketRepaired.event_type)) is not None:
        r, at = repaired
        assert isinstance(r, TicketRepaired)
        out |= {
            "repaired_at": at,
            "outcome": r.outcome.value,
            "parts_used": format_parts(r.parts_used),
            "labour_minutes": r.labour_minutes,
            "cost_borne_by": r.cost_borne_by.value,
            "cost_amount": r.cost_amount,
            "repair_notes": r.notes,
        }
    return out


HISTORY = HistoryStep(
    SERVICE,
    HISTORY_COLUMNS,
    parse_field_work,
    field_work_times,
    gather_field_work,
    decide_field_work,
    export_field_work,
    accepted=accept_field_work,
)

"""Dispatch decisions: pure functions of (state, command, facts) → events. No I/O, no clock
reads (``now`` is passed in)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.kernel.errors import InvalidCommand, NotFound, RuleViolation
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.network import (
    WEEKDAYS,
    NetworkLevel,
    ServicePointDescription,
    ServicePointRegistered,
    ServicePointUpdated,
    Shift,
    TechnicianDeactivated,
    TechnicianDescription,
    TechnicianReactivated,
    TechnicianRegistered,
    TechnicianUpdated,
    normalise_postcode,
)
from shared.kernel.events.tickets import (
    CostBearer,
    RepairOutcome,
    RepeatRepairFlagged,
    ResolutionPath,
    SlaBreached,
    SlaDeadline,
    TicketDispatched,
    TicketEscalated,
    TicketRepaired,
    TicketVisited,
    UsedPart,
    WarrantyStatus,
)
from shared.kernel.ticket import TicketState, TicketStatus, require_open

# ---------------------------------------------------------------------------------------
# The service network


@dataclass(frozen=True)
class ServicePointInfo:
    id: str
    name: str
    level: NetworkLevel
    region: str | None
    parent_id: str | None = None
    postcodes: tuple[str, ...] = ()
    active: bool = True


@dataclass(frozen=True)
class TechnicianInfo:
    id: str
    name: str
    service_point_id: str
    skills: frozenset[str] = frozenset()
    working_hours: tuple[Shift, ...] = ()
    timezone: str = "UTC"
    active: bool = True


@dataclass(frozen=True)
class NetworkMember:
    """What the stream of a network id holds: nothing yet, or a member of some type."""

    stream_type: str | None
    version: int
    active: bool = True


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidCommand("timezone", f"unknown timezone {name!r}") from None


def _check_service_point(
    point_id: str, d: ServicePointDescription, parent: ServicePointInfo | None
) -> None:
    if d.level is NetworkLevel.headquarters:
        if d.parent_id is not None:
            raise InvalidCommand("parent_id", "headquarters has no parent")
        if d.kind is not None:
            raise InvalidCommand("kind", "only service points are own outlets or dealers")
        return
    if d.region is None:
        raise InvalidCommand("region", f"a {d.level.value} serves one region")
    if d.level is NetworkLevel.service_point and d.kind is None:
        raise InvalidCommand("kind", "a service point is an own_outlet or a dealer")
    if d.level is NetworkLevel.regional_center and d.kind is not None:
        raise InvalidCommand("kind", "only service points are own outlets or dealers")
    if d.parent_id is None:
        if d.level is NetworkLevel.service_point:
            raise InvalidCommand("parent_id", "a service point belongs to a regional center")
        return
    if d.parent_id == point_id:
        raise InvalidCommand("parent_id", "a member cannot be its own parent")
    if parent is None:
        raise InvalidCommand("parent_id", f"no service point {d.parent_id}")
    expected = (
        NetworkLevel.headquarters
        if d.level is NetworkLevel.regional_center
        else NetworkLevel.regional_center
    )
    if parent.level is not expected:
        raise RuleViolation(
            "parent_level", f"a {d.level.value}'s parent is a {expected.value}, not {parent.level}"
        )
    if d.level is NetworkLevel.service_point and parent.region != d.region:
        raise RuleViolation(
            "parent_region", f"the regional center {parent.id} serves {parent.region}"
        )


def decide_register_service_point(
    member: NetworkMember,
    point_id: str,
    d: ServicePointDescription,
    parent: ServicePointInfo | None,
) -> list[EventPayload]:
    if member.stream_type is not None:
        raise RuleViolation("already_registered", f"{point_id} is already registered")
    _check_service_point(point_id, d, parent)
    return [ServicePointRegistered(**d.model_dump())]


def decide_update_service_point(
    member: NetworkMember,
    point_id: str,
    d: ServicePointDescription,
    parent: ServicePointInfo | None,
    current: ServicePointInfo | None,
    reason: str | None,
) -> list[EventPayload]:
    if member.stream_type != "service_point":
        raise NotFound("service_point_not_found", f"no service point {point_id}")
    if current is not None and d.level is not current.level:
        raise RuleViolation("level_fixed", "a member's level cannot change; register a new one")
    _check_service_point(point_id, d, parent)
    return [ServicePointUpdated(**d.model_dump(), reason=reason)]


def _check_technician(d: TechnicianDescription, point: ServicePointInfo | None) -> None:
    check_timezone(d.timezone)
    if point is None:
        raise InvalidCommand("service_point_id", f"no service point {d.service_point_id}")
    if not point.active:
        raise RuleViolation("service_point_inactive", f"{point.id} is not active")


def decide_register_technician(
    member: NetworkMember,
    technician_id: str,
    d: TechnicianDescription,
    point: ServicePointInfo | None,
) -> list[EventPayload]:
    if member.stream_type is not None:
        raise RuleViolation("already_registered", f"{technician_id} is already registered")
    _check_technician(d, point)
    return [TechnicianRegistered(**d.model_dump())]


def _require_technician(member: NetworkMember, technician_id: str) -> None:
    if member.stream_type != "technician":
        raise NotFound("technician_not_found", f"no technician {technician_id}")


def decide_update_technician(
    member: NetworkMember,
    technician_id: str,
    d: TechnicianDescription,
    point: ServicePointInfo | None,
    reason: str | None,
) -> list[EventPayload]:
    _require_technician(member, technician_id)
    _check_technician(d, point)
    return [TechnicianUpdated(**d.model_dump(), reason=reason)]


def decide_set_technician_active(
    member: NetworkMember, technician_id: str, active: bool, reason: str
) -> list[EventPayload]:
    _require_technician(member, technician_id)
    if member.active is active:
        rule = "already_active" if active else "already_inactive"
        raise RuleViolation(
            rule, f"{technician_id} is already {'active' if active else 'inactive'}"
        )
    if active:
        return [TechnicianReactivated(reason=reason)]
    return [TechnicianDeactivated(reason=reason)]


# ---------------------------------------------------------------------------------------
# Assignment: who goes, when, and why


@dataclass(frozen=True)
class TicketFacts:
    region: str
    postcode: str | None
    product_line: str | None


@dataclass(frozen=True)
class Candidate:
    technician: TechnicianInfo
    service_point: ServicePointInfo
    open_assignments: int
    appointment_start: datetime
    appointment_end: datetime


@dataclass(frozen=True)
class Assignment:
    service_point_id: str
    technician_id: str
    appointment_start: datetime
    appointment_end: datetime
    reason: str
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)


def ticket_facts(state: TicketState) -> TicketFacts:
    assert state.received is not None and state.region is not None
    line = state.received.product.product_line
    return TicketFacts(
        region=state.region,
        postcode=state.received.address.postcode,
        product_line=line.strip().lower() if line else None,
    )


def covers(point: ServicePointInfo, facts: TicketFacts) -> bool:
    """The point serves the ticket's region and, when it lists postcode prefixes and the
    ticket has a postcode, one of them."""
    if not point.active or point.level is NetworkLevel.headquarters:
        return False
    if point.region != facts.region:
        return False
    if not point.postcodes or not facts.postcode:
        return True
    code = normalise_postcode(facts.postcode)
    return any(code.startswith(normalise_postcode(p)) for p in point.postcodes)


def has_skill(technician: TechnicianInfo, facts: TicketFacts) -> bool:
    return facts.product_line is None or facts.product_line in technician.skills


def _local_shifts(
    technician: TechnicianInfo, day: date, zone: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    weekday = WEEKDAYS[day.weekday()]
    return sorted(
        (
            datetime.combine(day, s.start, tzinfo=zone),
            datetime.combine(day, s.end, tzinfo=zone),
        )
        for s in technician.working_hours
        if s.weekday is weekday
    )


def works_during(technician: TechnicianInfo, start: datetime, end: datetime) -> bool:
    """The whole window lies inside one of the technician's shifts."""
    zone = ZoneInfo(technician.timezone)
    local = start.astimezone(zone)
    return any(s <= start and end <= e for s, e in _local_shifts(technician, local.date(), zone))


def next_slot(
    technician: TechnicianInfo, after: datetime, window: timedelta, horizon_days: int
) -> tuple[datetime, datetime] | None:
    """The first appointment window at or after ``after`` within the technician's working
    hours (cut short at the shift's end), looking ``horizon_days`` ahead."""
    zone = ZoneInfo(technician.timezone)
    if after.second or after.microsecond:  # appointments start on a whole minute
        after = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    first_day = after.astimezone(zone).date()
    for offset in range(horizon_days + 1):
        for shift_start, shift_end in _local_shifts(
            technician, first_day + timedelta(offset), zone
        ):
            start = max(after, shift_start)
            if start < shift_end:
                end = min(start + window, shift_end)
                return start.astimezone(UTC), end.astimezone(UTC)
    return None


def _hours_text(technician: TechnicianInfo, start: datetime) -> str:
    zone = ZoneInfo(technician.timezone)
    local = start.astimezone(zone)
    for s, e in _local_shifts(technician, local.date(), zone):
        if s <= start < e:
            return f"{local:%a} {s:%H:%M}-{e:%H:%M} {technician.timezone}"
    return technician.timezone


def suggest(
    facts: TicketFacts,
    points: Sequence[ServicePointInfo],
    technicians: Sequence[TechnicianInfo],
    loads: dict[str, int],
    *,
    now: datetime,
    window: tuple[datetime, datetime] | None,
    window_length: timedelta,
    horizon_days: int,
) -> list[Candidate]:
    """Technicians who may take the ticket, best first: at a point covering the ticket's
    region (and postcode), holding the product-line skill, working during the appointment
    (the given window, else their next free hours); ranked by fewest open assignments, then
    the earliest appointment, then id (so the choice is reproducible)."""
    covering = {p.id: p for p in points if covers(p, facts)}
    steps = {"points": len(covering), "active": 0, "skilled": 0, "working": 0}
    out: list[Candidate] = []
    for tech in technicians:
        point = covering.get(tech.service_point_id)
        if point is None or not tech.active:
            continue
        steps["active"] += 1
        if not has_skill(tech, facts):
            continue
        steps["skilled"] += 1
        if window is not None:
            if not works_during(tech, *window):
                continue
            slot: tuple[datetime, datetime] | None = window
        else:
            slot = next_slot(tech, now, window_length, horizon_days)
            if slot is None:
                continue
        steps["working"] += 1
        out.append(Candidate(tech, point, loads.get(tech.id, 0), slot[0], slot[1]))
    if not out:
        where = f"region {facts.region}" + (f" postcode {facts.postcode}" if facts.postcode else "")
        skill = facts.product_line or "any product line"
        raise RuleViolation(
            "no_technician_available",
            f"{steps['points']} active service point(s) cover {where}; "
            f"{steps['active']} active technician(s) there; {steps['skilled']} skilled in "
            f"{skill}; {steps['working']} working "
            + ("during the requested window" if window else f"in the next {horizon_days} days"),
        )
    return sorted(out, key=lambda c: (c.open_assignments, c.appointment_start, c.technician.id))


def suggestion_reason(facts: TicketFacts, ranked: Sequence[Candidate]) -> str:
    best = ranked[0]
    coverage = f"covers region {facts.region}"
    if facts.postcode and best.service_point.postcodes:
        coverage += f" (postcode {facts.postcode})"
    skill = f"skill {facts.product_line}" if facts.product_line else "no product line to match"
    return (
        f"suggested: {best.technician.id} at {best.service_point.id} — {coverage}; {skill}; "
        f"{best.open_assignments} open assignment(s), the fewest among {len(ranked)} "
        f"candidate(s); works {_hours_text(best.technician, best.appointment_start)} "
        f"at the appointment {best.appointment_start:%Y-%m-%d %H:%M}-"
        f"{best.appointment_end:%H:%M} UTC"
    )


def choose_named(
    facts: TicketFacts,
    technician: TechnicianInfo | None,
    technician_id: str,
    point: ServicePointInfo | None,
    *,
    now: datetime,
    window: tuple[datetime, datetime] | None,
    window_length: timedelta,
    horizon_days: int,
    loads: dict[str, int],
) -> Assignment:
    """The dispatcher named the technician: checked for what must hold (active, at a point
    of the ticket's region); a missing skill or hours are recorded in the reason."""
    if technician is None:
        raise InvalidCommand("technician_id", f"no technician {technician_id}")
    if not technician.active:
        raise RuleViolation("technician_inactive", f"{technician.id} is not active")
    if point is None or not point.active:
        raise RuleViolation(
            "service_point_inactive", f"{technician.service_point_id} is not active"
        )
    if point.region != facts.region:
        raise RuleViolation(
            "region_mismatch",
            f"{technician.id} works at {point.id} in {point.region}, the ticket is in "
            f"{facts.region}",
        )
    if window is None:
        slot = next_slot(technician, now, window_length, horizon_days)
        if slot is None:
            raise InvalidCommand(
                "appointment_start",
                f"{technician.id} has no working hours in the next {horizon_days} days; "
                "give the appointment window",
            )
        window = slot
    notes = [f"named by the dispatcher: {technician.id} at {point.id}"]
    if not covers(point, facts):
        notes.append(f"{point.id} does not list postcode {facts.postcode}")
    if not has_skill(technician, facts):
        notes.append(f"override: no {facts.product_line} skill on record")
    if not works_during(technician, *window):
        notes.append("override: the appointment is outside the technician's working hours")
    notes.append(f"{loads.get(technician.id, 0)} other open assignment(s)")
    return Assignment(point.id, technician.id, window[0], window[1], "; ".join(notes))


DISPATCHABLE = frozenset(
    {
        TicketStatus.diagnosed,
        TicketStatus.dispatched,
        TicketStatus.visited,
        TicketStatus.reopened,
    }
)


def require_reach(state: TicketState, region: str | None, technician: str | None) -> None:
    """A dispatcher acts in its region and a technician on its own assignments; outside
    that a ticket does not exist for the caller."""
    if not state.exists:
        raise NotFound("ticket_not_found", f"no ticket {state.ticket_id}")
    if region is not None and state.region != region:
        raise NotFound("ticket_not_found", f"no ticket {state.ticket_id}")
    if technician is not None and (
        state.dispatch is None or state.dispatch.technician_id != technician
    ):
        raise NotFound("ticket_not_found", f"no ticket {state.ticket_id} assigned to you")


def check_dispatchable(state: TicketState) -> None:
    require_open(state)
    if state.status is TicketStatus.received:
        raise RuleViolation("not_diagnosed", "diagnose the ticket before dispatching it")
    if state.status not in DISPATCHABLE:
        raise RuleViolation(
            "already_repaired",
            f"a ticket in status {state.status.value} is not dispatched again unless reopened",
        )


def check_window(window: tuple[datetime, datetime] | None, now: datetime) -> None:
    if window is None:
        return
    start, end = window
    if end <= start:
        raise InvalidCommand("appointment_end", "the window ends after it starts")
    if end <= now:
        raise InvalidCommand("appointment_end", "the window is in the past")


def decide_dispatch(
    state: TicketState, assignment: Assignment, dispatcher_reason: str | None
) -> list[EventPayload]:
    check_dispatchable(state)
    redispatch = state.dispatch_count > 0
    if redispatch and not dispatcher_reason:
        raise InvalidCommand("reason", "say why the ticket is dispatched again")
    reason = assignment.reason
    if dispatcher_reason:
        label = "re-dispatch" if redispatch else "dispatcher's note"
        reason = f"{label}: {dispatcher_reason} — {reason}"
    assert state.region is not None
    return [
        TicketDispatched(
            region=state.region,
            service_point_id=assignment.service_point_id,
            technician_id=assignment.technician_id,
            appointment_start=assignment.appointment_start,
            appointment_end=assignment.appointment_end,
            reason=reason[:4000],
            redispatch=redispatch,
        )
    ]


# ---------------------------------------------------------------------------------------
# On site and repair


def decide_visit(
    state: TicketState, *, arrived_at: datetime, findings: str, now: datetime
) -> list[EventPayload]:
    require_open(state)
    if state.status in (TicketStatus.repaired, TicketStatus.followed_up):
        raise RuleViolation("already_repaired", "the ticket is repaired; reopen it first")
    if state.status not in (TicketStatus.dispatched, TicketStatus.visited):
        raise RuleViolation("not_dispatched", "a visit follows a dispatch")
    assert state.dispatch is not None
    if arrived_at > now:
        raise InvalidCommand("arrived_at", "the arrival is in the future")
    if state.received_at is not None and arrived_at < state.received_at:
        raise InvalidCommand("arrived_at", "the arrival is before the ticket was received")
    return [
        TicketVisited(
            technician_id=state.dispatch.technician_id, arrived_at=arrived_at, findings=findings
        )
    ]


@dataclass(frozen=True)
class RecordRepair:
    outcome: RepairOutcome
    parts_used: tuple[UsedPart, ...] = ()
    labour_minutes: int = 0
    cost_borne_by: CostBearer | None = None
    cost_amount: float = 0.0
    notes: str | None = None


def decide_repair(state: TicketState, command: RecordRepair) -> list[EventPayload]:
    require_open(state)
    if state.status in (TicketStatus.repaired, TicketStatus.followed_up):
        raise RuleViolation("already_repaired", "the ticket is already repaired")
    if state.status is TicketStatus.received:
        raise RuleViolation("not_diagnosed", "diagnose the ticket before repairing it")
    if state.resolution_path is not ResolutionPath.remote_guidance:
        # On site or replacement: someone must have been there since the current dispatch.
        if state.status in (TicketStatus.diagnosed, TicketStatus.reopened):
            raise RuleViolation("not_dispatched", "dispatch the ticket before the repair")
        if state.status is not TicketStatus.visited:
            raise RuleViolation("visit_required", "record the on-site visit before the repair")
    assert state.received is not None
    cost_by = command.cost_borne_by
    if cost_by is None:
        in_warranty = state.received.warranty_status is not WarrantyStatus.out_of_warranty
        cost_by = CostBearer.warranty if in_warranty else CostBearer.customer
    if command.outcome is RepairOutcome.replaced and not command.parts_used:
        raise InvalidCommand("parts_used", "a replacement names the parts (new and old serials)")
    return [
        TicketRepaired(
            outcome=command.outcome,
            parts_used=list(command.parts_used),
            labour_minutes=command.labour_minutes,
            cost_borne_by=cost_by,
            cost_amount=command.cost_amount,
            notes=command.notes,
            technician_id=state.dispatch.technician_id if state.dispatch else None,
        )
    ]


# ---------------------------------------------------------------------------------------
# SLA clock and repeat repairs


def decide_sla(state: TicketState, *, now: datetime) -> list[EventPayload]:
    """Breaches of the response and resolution deadlines not yet recorded on the ticket's
    stream. Looking at the stream (not at a table) is what makes a second scheduler, or a
    restart, record nothing twice. A deadline still open is escalated to the regional
    center; one met late while no scheduler ran (down, or between passes) is recorded with
    the real overdue time and needs no escalation any more."""
    if not state.exists:
        return []
    assert state.received is not None and state.region is not None
    checks = [(SlaDeadline.response, state.received.response_due_at, state.responded_at)]
    if state.diagnosis is not None:
        checks.append(
            (SlaDeadline.resolution, state.diagnosis.resolution_due_at, state.resolved_at)
        )
    events: list[EventPayload] = []
    for deadline, due_at, met_at in checks:
        end = met_at or now
        if deadline.value in state.breached or end <= due_at or due_at >= now:
            continue
        overdue = int((end - due_at).total_seconds() // 60)
        events.append(
            SlaBreached(deadline=deadline, due_at=due_at, detected_at=now, overdue_minutes=overdue)
        )
        if met_at is None:
            events.append(
                TicketEscalated(
                    level="regional_center",
                    cause="sla_breach",
                    region=state.region,
                    reason=f"{deadline.value} deadline {due_at:%Y-%m-%d %H:%M} UTC passed by "
                    f"{overdue} min",
                )
            )
    return events


@dataclass(frozen=True)
class EarlierRepair:
    ticket_id: str
    repaired_at: datetime
    outcome: RepairOutcome


def decide_repeat_repair(
    state: TicketState, earlier: Sequence[EarlierRepair], *, window_days: int
) -> list[EventPayload]:
    """Flag the ticket when its serial was fixed or replaced on another ticket within the
    window before this ticket was received (event times only: deterministic)."""
    if not state.exists or "RepeatRepairFlagged" in state.history:
        return []
    assert state.received is not None and state.received_at is not None
    serial = state.received.product.serial_number
    if not serial:
        return []
    since = state.received_at - timedelta(days=window_days)
    hits = [
        r
        for r in earlier
        if r.ticket_id != state.ticket_id
        and r.outcome in (RepairOutcome.fixed, RepairOutcome.replaced)
        and since <= r.repaired_at <= state.received_at
    ]
    if not hits:
        return []
    last = max(hits, key=lambda r: (r.repaired_at, r.ticket_id))
    return [
        RepeatRepairFlagged(
            earlier_ticket_id=last.ticket_id,
            earlier_repaired_at=last.repaired_at,
            serial_number=serial,
            window_days=window_days,
        )
    ]

"""Dispatch decisions: pure functions ``decide(command, state) -> events``.

Commands carry every fact a decision needs beyond its stream: the time, the settings'
figures as plain values, the part of the service network the read models hold. No I/O,
no clock reads. Ticket guards read the lifecycle table (``may_follow``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.kernel.calendar import ALWAYS, Calendar, zone_of
from shared.kernel.clock import iso_utc
from shared.kernel.decider import Decider, described_so
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
from shared.kernel.events.sla import EscalationLevel, SlaWarning
from shared.kernel.events.tickets import (
    FIXED_OUTCOMES,
    CostBearer,
    EscalationCause,
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
from shared.kernel.lifecycle import TicketStatus, may_follow
from shared.kernel.network import Parent, refuse_registered, region_in_tree
from shared.kernel.personal import MARKERS
from shared.kernel.reach import Reach, Scope
from shared.kernel.sla import (
    BREACH,
    ESCALATION_LEVELS,
    DeadlineClock,
    SlaTerms,
    Threshold,
    sla_clock,
)
from shared.kernel.ticket import TicketState, require_open

# ---------------------------------------------------------------------------------------
# The service network: what the read models say about its members


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


# ---------------------------------------------------------------------------------------
# Network member streams (stream types service_point and technician; id = member id)


@dataclass(frozen=True)
class NetworkMember:
    """What the stream of a network id holds: nothing yet, or a member of some type."""

    member_id: str
    stream_type: str | None = None
    version: int = 0
    # A service point's level and region (a technician's region is its point's).
    level: NetworkLevel | None = None
    region: str | None = None
    active: bool = True
    # The event that last described it (registered or updated).
    described: EventPayload | None = None


def evolve_member(state: NetworkMember, payload: EventPayload, _at: datetime) -> NetworkMember:
    s = replace(state, version=state.version + 1, stream_type=payload.stream_type)
    match payload:
        case ServicePointRegistered() | ServicePointUpdated():
            return replace(
                s,
                level=payload.level,
                region=payload.region,
                active=payload.active,
                described=payload,
            )
        case TechnicianRegistered() | TechnicianUpdated():
            return replace(s, described=payload)
        case TechnicianDeactivated():
            return replace(s, active=False)
        case TechnicianReactivated():
            return replace(s, active=True)
    return s


def _registered(state: NetworkMember) -> bool:
    return state.stream_type is not None


SERVICE_POINTS: Decider[NetworkMember] = Decider(
    stream_type="service_point",
    initial_state=NetworkMember,
    evolve=evolve_member,
    scope=lambda state: Scope(region=state.region),
    exists=_registered,
)


def technicians_in(region: str | None) -> Decider[NetworkMember]:
    """The technicians' decider, placed in ``region``: a technician sits in the region of
    its service point, a fact of the network (the point's stream), not of its own events."""
    return Decider(
        stream_type="technician",
        initial_state=NetworkMember,
        evolve=evolve_member,
        scope=lambda _state: Scope(region=region),
        exists=_registered,
    )


TECHNICIANS = technicians_in(None)


@dataclass(frozen=True)
class RegisterServicePoint:
    description: ServicePointDescription
    # The parent the description names, as the network holds it (None: none, or unknown).
    parent: ServicePointInfo | None = None
    # A service point registered under the same id in another case (its spelling).
    registered_as: str | None = None


@dataclass(frozen=True)
class UpdateServicePoint:
    description: ServicePointDescription
    parent: ServicePointInfo | None = None
    reason: str | None = None
    # Regions of the open tickets assigned at this point (read_models.open_ticket_regions).
    open_ticket_regions: frozenset[str] = frozenset()
    # Regions of the service points under it (a regional center's: read_models.child_regions).
    child_regions: frozenset[str] = frozenset()
    # Tickets dispatched through it and not yet repaired (read_models.work_under_way).
    under_way: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisterTechnician:
    description: TechnicianDescription
    # The service point the description names, as the network holds it.
    service_point: ServicePointInfo | None = None
    # A technician registered under the same id in another case (its spelling).
    registered_as: str | None = None


@dataclass(frozen=True)
class UpdateTechnician:
    description: TechnicianDescription
    service_point: ServicePointInfo | None = None
    reason: str | None = None
    # Regions of the technician's open assignments (read_models.open_ticket_regions).
    open_ticket_regions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SetTechnicianActive:
    active: bool
    reason: str
    # Tickets it is dispatched to and has not repaired (read_models.work_under_way).
    under_way: tuple[str, ...] = ()


def _placed(
    point_id: str, d: ServicePointDescription, parent: ServicePointInfo | None
) -> ServicePointDescription:
    """The description as registered: the tree's rule (shared/kernel/network.py) decides
    its region; only service points are own outlets or dealers."""
    if d.level is NetworkLevel.service_point and d.kind is None:
        raise InvalidCommand("kind", "a service point is an own_outlet or a dealer")
    if d.level is not NetworkLevel.service_point and d.kind is not None:
        raise InvalidCommand("kind", "only service points are own outlets or dealers")
    registered = None if parent is None else Parent(parent.id, parent.level.value, parent.region)
    region = region_in_tree(
        point_id, d.level.value, d.region, d.parent_id, registered, what="service point"
    )
    return d if region == d.region else d.model_copy(update={"region": region})


def _refuse_taken(state: NetworkMember) -> None:
    """The id's stream holds a member already (of either type): 409, as an id registered
    in another case is (``refuse_registered``), in the same words."""
    if state.stream_type is not None:
        what = "service point" if state.stream_type == SERVICE_POINTS.stream_type else "technician"
        refuse_registered(state.member_id, rule="already_registered", field="id", what=what)


def decide_register_service_point(
    command: RegisterServicePoint, state: NetworkMember
) -> list[EventPayload]:
    _refuse_taken(state)
    refuse_registered(
        command.registered_as, rule="already_registered", field="id", what="service point"
    )
    d = _placed(state.member_id, command.description, command.parent)
    return [ServicePointRegistered(**d.model_dump())]


def decide_update_service_point(
    command: UpdateServicePoint, state: NetworkMember
) -> list[EventPayload]:
    if state.stream_type != SERVICE_POINTS.stream_type:
        raise NotFound("service_point_not_found", f"no service point {state.member_id}")
    if state.level is not None and command.description.level is not state.level:
        raise RuleViolation("level_fixed", "a member's level cannot change; register a new one")
    d = _placed(state.member_id, command.description, command.parent)
    if described_so(state.described, d):
        return []
    _keep_open_tickets_in_region(state.member_id, d.region, command.open_ticket_regions)
    if state.active and not d.active:
        _leave_no_work_behind(state.member_id, command.under_way)
    # The tree's rule holds for the points under it too: they are in its region.
    # (Headquarters has no region: the regional centers under it serve every one.)
    if d.region is not None and (elsewhere := sorted(command.child_regions - {d.region})):
        raise RuleViolation(
            "child_region",
            f"service points under {state.member_id} serve {', '.join(elsewhere)}: move them "
            f"to another regional center first",
        )
    return [ServicePointUpdated(**d.model_dump(), reason=command.reason)]


def _keep_open_tickets_in_region(
    member_id: str, region: str | None, open_in: frozenset[str]
) -> None:
    """A ticket belongs to one region (DOMAIN.md): whoever holds it open stays there, or
    another region's dispatchers would read it and its own would lose it."""
    elsewhere = sorted(r for r in open_in if r != region)
    if region is not None and elsewhere:
        raise RuleViolation(
            "open_tickets_in_region",
            f"{member_id} holds open tickets in {', '.join(elsewhere)}: re-dispatch them "
            f"before moving to {region}",
        )


def _leave_no_work_behind(member_id: str, under_way: Sequence[str]) -> None:
    """A member taken out of service hands its tickets under way on first: deactivated
    with them, it would stay their assignee — out of every suggestion, and the tickets out
    of the dispatch queue (they are dispatched), seen by no planner."""
    if under_way:
        shown = ", ".join(under_way[:WORK_SHOWN]) + (", …" if len(under_way) > WORK_SHOWN else "")
        raise RuleViolation(
            "work_under_way",
            f"{member_id} has tickets dispatched and not yet repaired ({shown}): re-dispatch "
            "them first (POST /tickets/{id}/dispatch with a reason)",
        )


# How many of a member's tickets under way a refusal names.
WORK_SHOWN = 10


def _check_shifts(shifts: Sequence[Shift]) -> None:
    """A technician's shifts on one weekday do not overlap (they may touch)."""
    ordered = sorted(shifts, key=lambda s: (WEEKDAYS.index(s.weekday), s.start))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.weekday == b.weekday and b.start < a.end:
            raise InvalidCommand(
                "working_hours",
                f"overlapping working hours: {a.weekday.value} {a.start:%H:%M}-{a.end:%H:%M} "
                f"and {b.weekday.value} {b.start:%H:%M}-{b.end:%H:%M}",
            )


def _check_technician(d: TechnicianDescription, point: ServicePointInfo | None) -> None:
    zone_of(d.timezone)
    _check_shifts(d.working_hours)
    if point is None:
        raise InvalidCommand("service_point_id", f"no service point {d.service_point_id}")
    if point.level is NetworkLevel.headquarters:
        raise InvalidCommand(
            "service_point_id",
            f"{point.id} is headquarters: a technician works at a service point or a "
            "regional center",
        )
    if not point.active:
        raise RuleViolation("service_point_inactive", f"{point.id} is not active")


def decide_register_technician(
    command: RegisterTechnician, state: NetworkMember
) -> list[EventPayload]:
    _refuse_taken(state)
    refuse_registered(
        command.registered_as, rule="already_registered", field="id", what="technician"
    )
    _check_technician(command.description, command.service_point)
    return [TechnicianRegistered(**command.description.model_dump())]


def _require_technician(state: NetworkMember) -> None:
    if state.stream_type != TECHNICIANS.stream_type:
        raise NotFound("technician_not_found", f"no technician {state.member_id}")


def decide_update_technician(command: UpdateTechnician, state: NetworkMember) -> list[EventPayload]:
    _require_technician(state)
    if described_so(state.described, command.description):
        return []
    _check_technician(command.description, command.service_point)
    assert command.service_point is not None  # checked above
    _keep_open_tickets_in_region(
        state.member_id, command.service_point.region, command.open_ticket_regions
    )
    return [TechnicianUpdated(**command.description.model_dump(), reason=command.reason)]


def decide_set_technician_active(
    command: SetTechnicianActive, state: NetworkMember
) -> list[EventPayload]:
    _require_technician(state)
    if state.active is command.active:
        rule, word = (
            ("already_active", "active") if command.active else ("already_inactive", "inactive")
        )
        raise RuleViolation(rule, f"{state.member_id} is already {word}")
    if command.active:
        return [TechnicianReactivated(reason=command.reason)]
    _leave_no_work_behind(state.member_id, command.under_way)
    return [TechnicianDeactivated(reason=command.reason)]


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
    # The ranked candidates when the service chose (empty when the dispatcher named one).
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class DispatchRequest:
    """What the dispatcher asks: a named technician or the service's choice (optionally
    at one service point), an appointment window or the technician's next working hours,
    and a reason (required when the ticket was dispatched before)."""

    technician_id: str | None = None
    service_point_id: str | None = None
    window: tuple[datetime, datetime] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Network:
    """The part of the service network a dispatch looks at, as the read models hold it:
    the points and technicians of the ticket's region (or the named technician and its
    point), and each technician's open assignments (the ticket itself not counted)."""

    points: tuple[ServicePointInfo, ...] = ()
    technicians: tuple[TechnicianInfo, ...] = ()
    loads: Mapping[str, int] = field(default_factory=dict)

    def point(self, point_id: str) -> ServicePointInfo | None:
        return next((p for p in self.points if p.id == point_id), None)

    def technician(self, technician_id: str) -> TechnicianInfo | None:
        return next((t for t in self.technicians if t.id == technician_id), None)

    def within(self, reach: Reach) -> Network:
        """What a caller confined to a region may name: another region's technician does
        not exist for it (docs/dispatch.md), so naming one is "no technician", not where
        that technician works."""
        points = tuple(p for p in self.points if reach.allows_region(p.region))
        kept = {p.id for p in points}
        technicians = tuple(t for t in self.technicians if t.service_point_id in kept)
        return Network(points, technicians, self.loads)


@dataclass(frozen=True)
class DispatchTicket:
    request: DispatchRequest
    network: Network
    now: datetime
    # Settings: a suggested appointment's length, and how far ahead to look for hours.
    window_length: timedelta
    horizon_days: int
    # Each point's resolution calendar (docs/sla.md): a suggestion skips its holidays.
    calendars: Mapping[str, Calendar] = field(default_factory=dict)


def ticket_facts(state: TicketState) -> TicketFacts:
    assert state.received is not None and state.region is not None
    line = state.received.product.product_line
    postcode = state.received.address.postcode
    return TicketFacts(
        region=state.region,
        # An erased (or unreadable) postcode is none: the region alone decides coverage.
        postcode=None if postcode in MARKERS else postcode,
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


def _stretches(
    technician: TechnicianInfo, first: date, days: int, zone: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """The technician's working hours from the day ``first`` for ``days`` days, shifts that
    touch joined — ``mon 22:00-23:59:59`` and ``tue 00:00-06:00`` are one night,
    ``08:00-12:00`` and ``12:00-13:00`` one morning — in time order."""
    spans: list[tuple[datetime, datetime]] = []
    for offset in range(days):
        for s, e in _local_shifts(technician, first + timedelta(offset), zone):
            if spans and s - spans[-1][1] <= _TOUCHING:
                spans[-1] = (spans[-1][0], max(spans[-1][1], e))
            else:
                spans.append((s, e))
    return spans


def works_during(technician: TechnicianInfo, start: datetime, end: datetime) -> bool:
    """The whole window lies inside the technician's working hours without a break: in
    one shift, or in shifts that touch (``_stretches``)."""
    zone = ZoneInfo(technician.timezone)
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    spans = _stretches(technician, first, (last - first).days + 1, zone)
    return any(s <= start and end <= e for s, e in spans)


# Shifts this close are one stretch of work (a day's end written 23:59:59).
_TOUCHING = timedelta(seconds=1)


def next_slot(
    technician: TechnicianInfo,
    after: datetime,
    window: timedelta,
    horizon_days: int,
    calendar: Calendar = ALWAYS,
) -> tuple[datetime, datetime] | None:
    """The first appointment window at or after ``after`` within the technician's working
    hours (cut short where a stretch of them ends: shifts that touch are one) on a day
    that is no holiday of the point's ``calendar``, looking ``horizon_days`` ahead."""
    zone = ZoneInfo(technician.timezone)
    if after.second or after.microsecond:  # appointments start on a whole minute
        after = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    first_day = after.astimezone(zone).date()
    # A day more: a stretch running past the horizon's last midnight is seen whole.
    for shift_start, shift_end in _stretches(technician, first_day, horizon_days + 2, zone):
        start = _past_holidays(calendar, max(after, shift_start))
        if start < shift_end and start.astimezone(zone).date() <= first_day + timedelta(
            horizon_days
        ):
            end = min(start + window, shift_end, _next_holiday(calendar, start))
            return start.astimezone(UTC), end.astimezone(UTC)
    return None


_NEVER = datetime.max.replace(tzinfo=UTC)


def _past_holidays(calendar: Calendar, instant: datetime) -> datetime:
    """``instant``, or the start of the first day after it (in the calendar's zone) that
    is no holiday of ``calendar``."""
    if calendar.zone is None:
        return instant
    day = instant.astimezone(calendar.zone).date()
    if day not in calendar.holidays:
        return instant
    while day in calendar.holidays:
        day += timedelta(days=1)
    return datetime.combine(day, datetime.min.time(), tzinfo=calendar.zone)


def _next_holiday(calendar: Calendar, instant: datetime) -> datetime:
    """Where a window from ``instant`` must end: the next midnight of the calendar's zone
    when a holiday starts there (a shift crossing midnight), else never."""
    if calendar.zone is None:
        return _NEVER
    tomorrow = instant.astimezone(calendar.zone).date() + timedelta(days=1)
    if tomorrow not in calendar.holidays:
        return _NEVER
    return datetime.combine(tomorrow, datetime.min.time(), tzinfo=calendar.zone)


def _hours_text(technician: TechnicianInfo, start: datetime) -> str:
    """The stretch of working hours the appointment starts in (shifts that touch as one:
    ``Mon 22:00-Tue 06:00``), in the technician's zone."""
    zone = ZoneInfo(technician.timezone)
    local = start.astimezone(zone)
    for s, e in _stretches(technician, local.date() - timedelta(days=1), 3, zone):
        if s <= start < e:
            end = f"{e:%H:%M}" if e.date() == s.date() else f"{e:%a %H:%M}"
            return f"{s:%a} {s:%H:%M}-{end} {technician.timezone}"
    return technician.timezone


def _nobody_fits(
    facts: TicketFacts,
    steps: Mapping[str, int],
    window: object,
    horizon_days: int,
    point_id: str | None = None,
) -> RuleViolation:
    # Never the postcode itself: it is the customer's (docs/personal-data.md).
    where = f"region {facts.region}" + (" and the ticket's postcode" if facts.postcode else "")
    skill = facts.product_line or "any product line"
    asked = f"at {point_id}: " if point_id is not None else ""
    return RuleViolation(
        "no_technician_available",
        f"{asked}{steps['points']} active service point(s) cover {where}; "
        f"{steps['active']} active technician(s) there; {steps['skilled']} skilled in "
        f"{skill}; {steps['working']} working "
        + ("during the requested window" if window else f"in the next {horizon_days} days"),
    )


def suggest(
    facts: TicketFacts,
    points: Sequence[ServicePointInfo],
    technicians: Sequence[TechnicianInfo],
    loads: Mapping[str, int],
    *,
    now: datetime,
    window: tuple[datetime, datetime] | None,
    window_length: timedelta,
    horizon_days: int,
    calendars: Mapping[str, Calendar] | None = None,
    point_id: str | None = None,
) -> list[Candidate]:
    """Technicians who may take the ticket, best first: at a point covering the ticket's
    region (and postcode), holding the product-line skill, working during the appointment
    (the given window, else their next hours outside the point's holidays); ranked by fewest open assignments, then
    the earliest appointment, then id (so the choice is reproducible). ``point_id``: at
    that point only (the error then says so)."""
    asked = [p for p in points if point_id in (None, p.id)]
    covering = {p.id: p for p in asked if covers(p, facts)}
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
            slot = window if works_during(tech, *window) else None
        else:
            calendar = (calendars or {}).get(point.id, ALWAYS)
            slot = next_slot(tech, now, window_length, horizon_days, calendar)
        if slot is None:
            continue
        steps["working"] += 1
        out.append(Candidate(tech, point, loads.get(tech.id, 0), slot[0], slot[1]))
    if not out:
        raise _nobody_fits(facts, steps, window, horizon_days, point_id)
    return sorted(out, key=lambda c: (c.open_assignments, c.appointment_start, c.technician.id))


def _matching_prefix(point: ServicePointInfo, facts: TicketFacts) -> str:
    code = normalise_postcode(facts.postcode or "")
    return next((p for p in point.postcodes if code.startswith(normalise_postcode(p))), "")


def suggestion_reason(facts: TicketFacts, ranked: Sequence[Candidate]) -> str:
    best = ranked[0]
    coverage = f"covers region {facts.region}"
    if facts.postcode and best.service_point.postcodes:
        # The point's prefix, not the customer's postcode: a reason is stored in clear.
        coverage += f" (postcode prefix {_matching_prefix(best.service_point, facts)})"
    skill = f"skill {facts.product_line}" if facts.product_line else "no product line to match"
    return (
        f"suggested: {best.technician.id} at {best.service_point.id} — {coverage}; {skill}; "
        f"{best.open_assignments} open assignment(s), the fewest among {len(ranked)} "
        f"candidate(s); works {_hours_text(best.technician, best.appointment_start)} "
        f"at the appointment {best.appointment_start:%Y-%m-%d %H:%M}-"
        f"{best.appointment_end:%H:%M} UTC"
    )


def choose_suggested(facts: TicketFacts, command: DispatchTicket) -> Assignment:
    """The service chooses: the best-ranked candidate (at the requested point, if any)."""
    request, network = command.request, command.network
    # An unknown point is the request's error, whoever could take the ticket (422 first).
    if request.service_point_id is not None and network.point(request.service_point_id) is None:
        raise InvalidCommand(
            "service_point_id",
            f"no service point {request.service_point_id} in the ticket's region {facts.region}",
        )
    ranked = suggest(
        facts,
        network.points,
        network.technicians,
        network.loads,
        now=command.now,
        window=request.window,
        window_length=command.window_length,
        horizon_days=command.horizon_days,
        calendars=command.calendars,
        point_id=request.service_point_id,
    )
    best = ranked[0]
    return Assignment(
        best.service_point.id,
        best.technician.id,
        best.appointment_start,
        best.appointment_end,
        suggestion_reason(facts, ranked),
        tuple(ranked),
    )


def _named_technician(
    command: DispatchTicket, facts: TicketFacts
) -> tuple[TechnicianInfo, ServicePointInfo]:
    """The technician the dispatcher named and its point, checked for what must hold:
    it exists, works at the point asked for, is active, at an active point of the region."""
    technician_id = command.request.technician_id
    assert technician_id is not None
    technician = command.network.technician(technician_id)
    wanted_point = command.request.service_point_id
    if technician is not None and wanted_point not in (None, technician.service_point_id):
        raise InvalidCommand(
            "service_point_id", f"{technician.id} works at {technician.service_point_id}"
        )
    if technician is None:
        raise InvalidCommand("technician_id", f"no technician {technician_id}")
    if not technician.active:
        raise RuleViolation("technician_inactive", f"{technician.id} is not active")
    point = command.network.point(technician.service_point_id)
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
    return technician, point


def choose_named(facts: TicketFacts, command: DispatchTicket) -> Assignment:
    """The dispatcher named the technician: a missing skill, an uncovered postcode or
    hours outside the shifts are allowed as an override and recorded in the reason."""
    technician, point = _named_technician(command, facts)
    window = command.request.window
    if window is None:
        calendar = command.calendars.get(point.id, ALWAYS)
        window = next_slot(
            technician, command.now, command.window_length, command.horizon_days, calendar
        )
        if window is None:
            raise InvalidCommand(
                "appointment_start",
                f"{technician.id} has no working hours in the next {command.horizon_days} "
                "days; give the appointment window",
            )
    notes = [f"named by the dispatcher: {technician.id} at {point.id}"]
    if not covers(point, facts):
        notes.append(f"{point.id} does not list the ticket's postcode")
    if not has_skill(technician, facts):
        notes.append(f"override: no {facts.product_line} skill on record")
    if not works_during(technician, *window):
        notes.append("override: the appointment is outside the technician's working hours")
    notes.append(f"{command.network.loads.get(technician.id, 0)} other open assignment(s)")
    return Assignment(point.id, technician.id, window[0], window[1], "; ".join(notes))


def check_dispatchable(state: TicketState) -> None:
    require_open(state)
    if not may_follow(state.status, TicketDispatched.event_type):
        if state.diagnosis is None:
            raise RuleViolation("not_diagnosed", "diagnose the ticket before dispatching it")
        raise RuleViolation(
            "already_repaired",
            f"a ticket in status {state.status.value} is not dispatched again unless reopened",
        )


# An appointment is a visit's window on one day, booked at most a year ahead.
LONGEST_WINDOW = timedelta(hours=24)
FURTHEST_APPOINTMENT = timedelta(days=366)


def check_window(window: tuple[datetime, datetime] | None, now: datetime) -> None:
    if window is None:
        return
    start, end = window
    if end <= start:
        raise InvalidCommand("appointment_end", "the window must end after it starts")
    if end <= now:
        raise InvalidCommand(  # the dispatch is now, or an imported row's dispatched_at
            "appointment_end",
            f"the window has ended by the dispatch's time ({iso_utc(now)}): in the past",
        )
    if end - start > LONGEST_WINDOW:
        raise InvalidCommand("appointment_end", "an appointment window is at most 24 hours")
    if start - now > FURTHEST_APPOINTMENT:
        raise InvalidCommand("appointment_start", "an appointment is at most 366 days ahead")


def assign(command: DispatchTicket, state: TicketState) -> Assignment:
    """Who goes and when: the ticket must be dispatchable; then the named technician, or
    the service's choice. Also answers "who would the service send" (records nothing)."""
    check_dispatchable(state)
    check_window(command.request.window, command.now)
    facts = ticket_facts(state)
    if command.request.technician_id is None:
        return choose_suggested(facts, command)
    return choose_named(facts, command)


def decide_dispatch(command: DispatchTicket, state: TicketState) -> list[EventPayload]:
    assignment = assign(command, state)
    redispatch = state.dispatch_count > 0
    given = command.request.reason
    if redispatch and not given:
        raise InvalidCommand("reason", "say why the ticket is dispatched again")
    reason = assignment.reason
    if given:
        label = "re-dispatch" if redispatch else "dispatcher's note"
        reason = f"{label}: {given} — {reason}"
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


@dataclass(frozen=True)
class Visit:
    """The technician's check-in: when (None: now) and what they found."""

    findings: str
    arrived_at: datetime | None = None


@dataclass(frozen=True)
class RecordVisit:
    visit: Visit
    now: datetime


def decide_visit(command: RecordVisit, state: TicketState) -> list[EventPayload]:
    require_open(state)
    if not may_follow(state.status, TicketVisited.event_type):
        if state.repair is not None:
            raise RuleViolation("already_repaired", "the ticket is repaired; reopen it first")
        raise RuleViolation("not_dispatched", f"a visit follows a dispatch{_since_reopened(state)}")
    assert state.dispatch is not None
    arrived_at = command.visit.arrived_at or command.now
    if arrived_at > command.now:
        raise InvalidCommand("arrived_at", "the arrival is in the future")
    # To the minute: an arrival written as 10:00 follows a dispatch recorded at 10:00:37.
    if state.received_at is not None and arrived_at < _minute(state.received_at):
        raise InvalidCommand("arrived_at", "the arrival is before the ticket was received")
    if state.dispatched_at is not None and arrived_at < _minute(state.dispatched_at):
        raise InvalidCommand(
            "arrived_at", f"the arrival is before the dispatch ({iso_utc(state.dispatched_at)})"
        )
    if state.visit is not None and arrived_at < _minute(state.visit.arrived_at):
        raise InvalidCommand(  # a check-in again: the ticket's visited_at never goes back
            "arrived_at",
            f"the arrival is before the previous check-in ({iso_utc(state.visit.arrived_at)})",
        )
    return [
        TicketVisited(
            technician_id=state.dispatch.technician_id,
            arrived_at=arrived_at,
            findings=command.visit.findings,
        )
    ]


def _since_reopened(state: TicketState) -> str:
    """A reopened ticket was dispatched before: the dispatch meant is a new one."""
    if state.status is TicketStatus.reopened:
        return " (it was reopened: dispatch it again, with a reason)"
    return ""


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


# What one repair can cost, in yuan: above it an amount is a typo (a serial number, fen).
MAX_REPAIR_COST = 10_000_000


def cost_problem(amount: float) -> str | None:
    """Why ``amount`` is no repair's cost (to the fen, within ``MAX_REPAIR_COST``): the
    rule the API and an import of history apply alike."""
    if amount > MAX_REPAIR_COST:
        return f"at most {MAX_REPAIR_COST:,}"
    if round(amount, 2) != amount:
        return "an amount has at most two decimals"
    return None


@dataclass(frozen=True)
class RecordRepair:
    outcome: RepairOutcome
    parts_used: tuple[UsedPart, ...] = ()
    labour_minutes: int = 0
    cost_borne_by: CostBearer | None = None
    cost_amount: float = 0.0
    notes: str | None = None


def check_repairable(state: TicketState) -> None:
    """The lifecycle allows a repair after a diagnosis (remote guidance), a dispatch or a
    visit; on site and replacement need a visit since the current dispatch."""
    require_open(state)
    if not may_follow(state.status, TicketRepaired.event_type):
        if state.repair is not None:
            raise RuleViolation("already_repaired", "the ticket is already repaired")
        if state.diagnosis is None:
            raise RuleViolation("not_diagnosed", "diagnose the ticket before repairing it")
        raise RuleViolation(
            "not_dispatched", f"dispatch the ticket before the repair{_since_reopened(state)}"
        )
    if state.resolution_path is not ResolutionPath.remote_guidance:
        if state.status is TicketStatus.diagnosed:
            raise RuleViolation("not_dispatched", "dispatch the ticket before the repair")
        if state.status is not TicketStatus.visited:
            raise RuleViolation("visit_required", "record the on-site visit before the repair")


def decide_repair(command: RecordRepair, state: TicketState) -> list[EventPayload]:
    check_repairable(state)
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


@dataclass(frozen=True)
class CheckSla:
    """A pass of the SLA clock at ``now``, on the terms pinned on the ticket (default:
    the built-in policy)."""

    now: datetime
    terms: SlaTerms = field(default_factory=SlaTerms)


def _breach(
    state: TicketState, d: DeadlineClock, step: Threshold, now: datetime
) -> list[EventPayload]:
    assert d.due_at is not None and state.region is not None
    overdue = int(d.overdue.total_seconds() // 60)
    deadline = SlaDeadline(d.deadline)
    events: list[EventPayload] = [
        SlaBreached(deadline=deadline, due_at=d.due_at, detected_at=now, overdue_minutes=overdue)
    ]
    if d.open and step.level in ESCALATION_LEVELS:
        events.append(
            TicketEscalated(
                level=step.level,
                cause=EscalationCause.sla_breach,
                region=state.region,
                reason=f"{deadline.value} deadline {d.due_at.astimezone(UTC):%Y-%m-%d %H:%M} "
                f"UTC passed by {overdue} min",
            )
        )
    return events


def _warning(
    state: TicketState, d: DeadlineClock, step: Threshold, now: datetime
) -> list[EventPayload]:
    assert d.due_at is not None and step.at is not None and step.level is not None
    assert state.region is not None
    events: list[EventPayload] = [
        SlaWarning(
            deadline=SlaDeadline(d.deadline),
            percent=step.percent,
            level=EscalationLevel(step.level),
            region=state.region,
            service_point_id=state.dispatch.service_point_id if state.dispatch else None,
            due_at=d.due_at,
            reached_at=step.at,
            detected_at=now,
        )
    ]
    if step.percent > BREACH and step.level in ESCALATION_LEVELS:
        events.append(
            TicketEscalated(
                level=step.level,
                cause=EscalationCause.sla_breach,
                region=state.region,
                reason=f"{d.deadline} deadline {d.due_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC: "
                f"{step.percent:g}% of the target elapsed",
            )
        )
    return events


def decide_sla(command: CheckSla, state: TicketState) -> list[EventPayload]:
    """The steps of the ladder the ticket's clock has reached and its stream does not
    record yet: a warning (``SlaWarning``) per step short of the breach, the breach
    (``SlaBreached``), and the steps beyond it — each escalated (``TicketEscalated``) to
    its level while the deadline is still open. Looking at the stream (not at a table)
    is what makes a second scheduler, or a restart, record nothing twice.

    A paused clock records nothing. A deadline met after its steps while no scheduler
    ran (down, or between passes) still gets its breach, with the real overdue time,
    and nothing more: nothing waits any more."""
    if not may_follow(state.status, SlaBreached.event_type):
        return []
    clock = sla_clock(state, command.terms, command.now)
    if clock.paused:
        return []
    events: list[EventPayload] = []
    for d in clock.deadlines:
        for step in d.thresholds:
            if not step.reached or step.recorded:
                continue
            if step.is_breach:
                events += _breach(state, d, step, command.now)
            elif d.open:
                events += _warning(state, d, step, command.now)
    return events


@dataclass(frozen=True)
class EarlierRepair:
    ticket_id: str
    repaired_at: datetime
    outcome: RepairOutcome


@dataclass(frozen=True)
class FlagRepeatRepair:
    # Repairs of other tickets with the ticket's serial, recorded before it was received.
    earlier: tuple[EarlierRepair, ...]
    window_days: int


def decide_repeat_repair(command: FlagRepeatRepair, state: TicketState) -> list[EventPayload]:
    """Flag the ticket when its serial was fixed or replaced on another ticket within the
    window before this ticket was received (event times only: deterministic)."""
    if not may_follow(state.status, RepeatRepairFlagged.event_type):
        return []
    if RepeatRepairFlagged.event_type in state.history:
        return []
    assert state.received is not None and state.received_at is not None
    serial = state.received.product.serial_number
    if not serial:
        return []
    since = state.received_at - timedelta(days=command.window_days)
    hits = [
        r
        for r in command.earlier
        if r.ticket_id != state.ticket_id
        and r.outcome in FIXED_OUTCOMES
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
            window_days=command.window_days,
        )
    ]

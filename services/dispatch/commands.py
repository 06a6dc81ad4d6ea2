"""Dispatch's command handlers: gather the facts a decision needs (the network as the read
models hold it, the time, the settings' figures), then run it through the service's
executor — inside the caller's unit of work (one transaction)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.dispatch import domain, ics, read_models, sla_domain
from shared.app.executor import Handling, Loaded, Outcome, require_region
from shared.eventstore.db import take_locks
from shared.kernel.calendar import Calendar
from shared.kernel.decider import described_so
from shared.kernel.errors import InvalidCommand, NotFound, RuleViolation
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.network import ServicePointDescription, TechnicianDescription, Weekday
from shared.kernel.events.registry import payload_dict
from shared.kernel.events.sla import CalendarDescription, SlaPolicyDescription
from shared.kernel.network import id_lock
from shared.kernel.sla import RESOLUTION, calendar_stream, placement, policy_from, policy_stream
from shared.kernel.ticket import TICKETS, TicketState

SERVICE = "dispatch"
Member = Outcome[domain.NetworkMember]


# -- the network -------------------------------------------------------------------------


def register_service_point(
    conn: Connection, h: Handling, point_id: str, description: ServicePointDescription
) -> Member:
    take_locks(conn, [id_lock("service-point", point_id)])
    parent = read_models.get_service_point(conn, description.parent_id)
    taken = read_models.registered_point_id(conn, point_id)
    command = domain.RegisterServicePoint(description, parent, taken)
    return h.execute(
        conn, domain.SERVICE_POINTS, point_id, command, domain.decide_register_service_point
    )


def update_service_point(
    conn: Connection,
    h: Handling,
    point_id: str,
    description: ServicePointDescription,
    reason: str | None,
) -> Member:
    point = read_models.get_service_point(conn, point_id)
    _hold_dispatches(conn, point.region if point is not None else None)
    parent = read_models.get_service_point(conn, description.parent_id)
    held = read_models.open_ticket_regions(conn, service_point_id=point_id)
    children = read_models.child_regions(conn, point_id)
    under_way = read_models.work_under_way(conn, service_point_id=point_id)
    command = domain.UpdateServicePoint(description, parent, reason, held, children, under_way)
    return h.execute(
        conn, domain.SERVICE_POINTS, point_id, command, domain.decide_update_service_point
    )


def register_technician(
    conn: Connection, h: Handling, technician_id: str, description: TechnicianDescription
) -> Member:
    take_locks(conn, [id_lock("technician", technician_id)])
    point = read_models.get_service_point(conn, description.service_point_id)
    taken = read_models.registered_technician_id(conn, technician_id)
    command = domain.RegisterTechnician(description, point, taken)
    decider = domain.technicians_in(point.region if point else None)
    return h.execute(conn, decider, technician_id, command, domain.decide_register_technician)


def update_technician(
    conn: Connection,
    h: Handling,
    technician_id: str,
    description: TechnicianDescription,
    reason: str | None,
) -> Member:
    # Where it is now first: outside the caller's reach it is not found (as for a read),
    # whatever point the description moves it to.
    current = domain.technicians_in(read_models.technician_region(conn, technician_id))
    loaded = h.visible(conn, current, technician_id)
    point = read_models.get_service_point(conn, description.service_point_id)
    held = read_models.open_ticket_regions(conn, technician_id=technician_id)
    command = domain.UpdateTechnician(description, point, reason, held)
    if point is None:  # the decision names the unknown point (422)
        decider = current
    else:  # moved where the caller may not write: 403 region, as for a service point
        require_region(h.invocation.reach, current.stream_type, point.region)
        decider = domain.technicians_in(point.region)
    return h.execute(
        conn, decider, technician_id, command, domain.decide_update_technician, loaded=loaded
    )


def set_technician_active(
    conn: Connection, h: Handling, technician_id: str, command: domain.SetTechnicianActive
) -> Member:
    region = read_models.technician_region(conn, technician_id)
    _hold_dispatches(conn, region)
    under_way = read_models.work_under_way(conn, technician_id=technician_id)
    command = replace(command, under_way=under_way)
    decider = domain.technicians_in(region)
    return h.execute(conn, decider, technician_id, command, domain.decide_set_technician_active)


def _hold_dispatches(conn: Connection, region: str | None) -> None:
    """One dispatch of a region at a time, across replicas, until commit: each counts the
    loads the one before it committed (two at once both chose the least loaded) — and a
    member taken out of service sees every dispatch to it (``work_under_way``)."""
    if region is not None:
        take_locks(conn, [f"dispatch-loads:{region}"])


# -- tickets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatched:
    outcome: Outcome[TicketState]
    # The ranked candidates when the service chose (empty when the dispatcher named one).
    candidates: tuple[domain.Candidate, ...]


def _dispatch_command(
    conn: Connection, h: Handling, state: TicketState, request: domain.DispatchRequest
) -> domain.DispatchTicket:
    settings = h.settings.dispatch
    network = read_models.dispatch_network(
        conn, state.region, request.technician_id, except_ticket=state.ticket_id
    ).within(h.invocation.reach)
    return domain.DispatchTicket(
        request,
        network,
        now=h.now(),
        window_length=timedelta(hours=settings.appointment_window_hours),
        horizon_days=settings.suggestion_horizon_days,
        calendars=_point_calendars(conn, h, state, request, network),
    )


def _point_calendars(
    conn: Connection,
    h: Handling,
    state: TicketState,
    request: domain.DispatchRequest,
    network: domain.Network,
) -> dict[str, Calendar]:
    """When the service picks the appointment: the calendar the ticket's resolution would
    run on at each point, its policy's, with
    the calendars' latest versions (a holiday announced since the ticket came in closes
    the point that day, whatever the ticket's pinned deadline)."""
    if request.window is not None or state.received is None or state.region is None:
        return {}  # a window given, or no ticket to dispatch (the decision says so)
    reader = h.terms(conn)
    pin = state.sla_policy
    latest = reader.current(pin.policy_id) if pin is not None else None
    terms = latest.terms if latest is not None else reader.for_ticket(state)
    where = placement(state)
    key = state.diagnosis.complexity.value if state.diagnosis else None
    return {
        p.id: terms.calendar_for(RESOLUTION, replace(where, service_point_id=p.id), key)
        for p in network.points
    }


def dispatch(
    conn: Connection, h: Handling, ticket_id: str, request: domain.DispatchRequest
) -> Dispatched:
    loaded = h.visible(conn, TICKETS, ticket_id)
    _hold_dispatches(conn, loaded.state.region)
    command = _dispatch_command(conn, h, loaded.state, request)
    outcome = h.execute(conn, TICKETS, ticket_id, command, domain.decide_dispatch, loaded=loaded)
    # The decision is pure: asked again on the same state, it names the same candidates.
    return Dispatched(outcome, domain.assign(command, outcome.before).candidates)


def candidates(conn: Connection, h: Handling, ticket_id: str) -> domain.Assignment:
    """Whom the service would send now, and why (records nothing)."""
    loaded = h.visible(conn, TICKETS, ticket_id)
    command = _dispatch_command(conn, h, loaded.state, domain.DispatchRequest())
    return domain.assign(command, loaded.state)


def visit(
    conn: Connection, h: Handling, ticket_id: str, visit: domain.Visit
) -> Outcome[TicketState]:
    command = domain.RecordVisit(visit, now=h.now())
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_visit)


def repair(
    conn: Connection, h: Handling, ticket_id: str, command: domain.RecordRepair
) -> Outcome[TicketState]:
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_repair)


# -- SLA clock and repeat repairs --------------------------------------------------------


def record_sla_breaches(
    conn: Connection, h: Handling, ticket_id: str, now: datetime
) -> Outcome[TicketState]:
    """The ladder steps the ticket's clock reached (warnings, breach, escalations)."""
    loaded = h.executor.load(conn, TICKETS, ticket_id)
    command = domain.CheckSla(now, h.terms(conn).for_ticket(loaded.state))
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_sla, loaded=loaded)


def flag_repeat_repair(conn: Connection, h: Handling, received: EventEnvelope) -> None:
    """On a ticket's receipt: the earlier repairs of its serial (recorded before it)."""
    serial = payload_dict(received)["product"].get("serial_number")
    earlier = read_models.earlier_repairs(
        conn,
        h.executor.store,
        serial,
        ticket_id=received.stream_id,
        before_position=received.position,
    )
    if not earlier:
        return  # no earlier repair of the serial: nothing to decide (most tickets)
    command = domain.FlagRepeatRepair(
        tuple(earlier), window_days=h.settings.dispatch.repeat_repair_window_days
    )
    h.execute(conn, TICKETS, received.stream_id, command, domain.decide_repeat_repair)


# -- SLA terms and pauses (docs/sla.md) --------------------------------------------------

Terms = Outcome[sla_domain.TermsStream]


def define_calendar(
    conn: Connection,
    h: Handling,
    calendar_id: str,
    description: CalendarDescription,
    reason: str | None,
    *,
    loaded: Loaded[sla_domain.TermsStream] | None = None,
) -> Terms:
    command = sla_domain.DefineCalendar(
        description, today=h.now().date(), horizon=h.settings.sla.horizon, reason=reason
    )
    stream = calendar_stream(calendar_id)
    decide = sla_domain.decide_define_calendar
    return h.execute(conn, sla_domain.CALENDARS, stream, command, decide, loaded=loaded)


def import_calendar(
    conn: Connection,
    h: Handling,
    calendar_id: str,
    text: str,
    replace: bool,
    hours_of: Weekday = Weekday.mon,
) -> tuple[Terms, ics.Imported]:
    """Holidays and adjusted working days from an iCalendar file: a new version."""
    loaded = h.visible(conn, sla_domain.CALENDARS, calendar_stream(calendar_id))
    current = loaded.state.description
    if current is None:
        raise NotFound("calendar_not_found", f"no calendar {calendar_id}")
    imported = ics.parse(text, hours_of)
    skipped = f" (skipped: {', '.join(imported.skipped[:20])})" if imported.skipped else ""
    if not (imported.holidays or imported.working_days or replace):
        raise InvalidCommand("ics", f"the file has no all-day event to import{skipped}")
    description = ics.merged(
        CalendarDescription.model_validate(current.model_dump(exclude={"reason"})),
        imported,
        replace,
    )
    reason = (
        f"imported from iCalendar: {len(imported.holidays)} holiday(s), "
        f"{len(imported.working_days)} working day(s)"
    )
    if described_so(current, description):
        raise RuleViolation("unchanged", f"the calendar has every day of the file{skipped}")
    return define_calendar(conn, h, calendar_id, description, reason, loaded=loaded), imported


def define_policy(
    conn: Connection,
    h: Handling,
    policy_id: str,
    description: SlaPolicyDescription,
    reason: str | None,
) -> Terms:
    named = policy_from(policy_id, 0, description).calendar_ids()
    command = sla_domain.DefinePolicy(
        description,
        h.terms(conn).latest_calendars(named),
        now=h.now(),
        horizon=h.settings.sla.horizon,
        reason=reason,
    )
    stream, decide = policy_stream(policy_id), sla_domain.decide_define_policy
    return h.execute(conn, sla_domain.SLA_POLICIES, stream, command, decide)


def pause(
    conn: Connection,
    h: Handling,
    ticket_id: str,
    reason: str,
    note: str | None = None,
    requisition_id: str | None = None,
) -> Outcome[TicketState]:
    loaded = h.visible(conn, TICKETS, ticket_id)
    terms = h.terms(conn).for_ticket(loaded.state)
    command = sla_domain.PauseSla(reason, terms, note, requisition_id)
    return h.execute(conn, TICKETS, ticket_id, command, sla_domain.decide_pause, loaded=loaded)


def resume(
    conn: Connection,
    h: Handling,
    ticket_id: str,
    note: str | None = None,
    requisition_id: str | None = None,
) -> Outcome[TicketState]:
    loaded = h.visible(conn, TICKETS, ticket_id)
    terms = h.terms(conn).for_ticket(loaded.state)
    command = sla_domain.ResumeSla(terms, h.now(), note, requisition_id)
    return h.execute(conn, TICKETS, ticket_id, command, sla_domain.decide_resume, loaded=loaded)


def reevaluate(conn: Connection, h: Handling, ticket_id: str, reason: str) -> Outcome[TicketState]:
    reader = h.terms(conn)
    loaded = h.visible(conn, TICKETS, ticket_id)
    pin = reader.current(h.settings.sla.policy_id)
    command = sla_domain.ReevaluateSla(pin, reason, reader.for_ticket(loaded.state), h.now())
    return h.execute(conn, TICKETS, ticket_id, command, sla_domain.decide_reevaluate, loaded=loaded)

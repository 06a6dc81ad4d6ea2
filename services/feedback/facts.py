"""What a ticket's events say, folded into one record: the facts the compliance checklist
(``compliance.py``), the scorecards and the KPIs are computed from.

Two streams feed it: the ticket's own, and the parts service's paperwork for the ticket
(``tparts:<ticket_id>``), whose ``OldPartReturnExpected`` events say which old parts must
come back — decided by the parts service with ``shared.kernel.parts.return_expected``, so
the checklist never decides that with a rule of its own.

Pure: no clock, no I/O. The fold records what happened and when; it judges nothing but
the facts that need the order of events (the first event past a deadline, the verdict a
follow-up led to, the deductions at the moment they were earned).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.kernel.clock import iso_utc
from shared.kernel.events.envelope import EventEnvelope, EventPayload
from shared.kernel.events.parts import OldPartReturnExpected
from shared.kernel.events.registry import payload_dict, typed_payload
from shared.kernel.events.sla import SlaPaused, SlaPolicyApplied
from shared.kernel.events.tickets import (
    ComplaintFiled,
    ContactDetailsCorrected,
    CostBearer,
    FollowUpRecorded,
    OldPartReturned,
    OldPartReturnOverdue,
    RepairOutcome,
    RepeatRepairFlagged,
    ResolutionPath,
    SlaBreached,
    TicketClosed,
    TicketDiagnosed,
    TicketDispatched,
    TicketReceived,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
)
from shared.kernel.imports import is_imported
from shared.kernel.lifecycle import TicketStatus, status_after
from shared.kernel.parts import normalise_part_number, old_serial_key
from shared.kernel.sla import SlaTerms, resolution_due_instants, response_due_instant
from shared.kernel.ticket import TicketState


def month_of(value: datetime) -> str:
    return value.strftime("%Y-%m")


@dataclass(frozen=True)
class Recorded:
    """One recorded event as the fold reads it."""

    event_id: str
    at: datetime  # when it occurred
    version: int  # in its stream
    payload: EventPayload


def recorded(events: Sequence[EventEnvelope]) -> list[Recorded]:
    return [
        Recorded(str(e.event_id), e.occurred_at, e.stream_version, typed_payload(e)) for e in events
    ]


# --- the records the facts hold ----------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    event_id: str
    at: datetime


@dataclass(frozen=True)
class Seen:
    """An event after the receipt: what it was, when, and the ticket's status and the
    resolution path in force when it happened (the lifecycle table judges the order)."""

    event_id: str
    event_type: str
    at: datetime
    status_before: TicketStatus
    path: ResolutionPath | None


@dataclass(frozen=True)
class Diagnosis:
    event_id: str
    category: str
    path: ResolutionPath
    # When its resolution target runs out on the ticket's SLA clock (None: a pause first).
    resolution_due_at: datetime | None
    expected_parts: frozenset[str]


@dataclass(frozen=True)
class Dispatch:
    event_id: str
    service_point_id: str
    technician_id: str
    appointment_end: datetime


@dataclass(frozen=True)
class Visit:
    event_id: str
    dispatch_event_id: str | None
    technician_id: str
    service_point_id: str | None
    on_time: bool  # arrived by the end of the appointment window

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "dispatch_event_id": self.dispatch_event_id,
            "technician_id": self.technician_id,
            "service_point_id": self.service_point_id,
            "on_time": self.on_time,
        }


@dataclass(frozen=True)
class Repair:
    event_id: str
    at: datetime
    outcome: RepairOutcome
    fault_category: str
    technician_id: str | None
    # The latest visit since the latest dispatch, and every visit before it.
    visit_event_id: str | None
    visits_before: int
    parts_as_expected: bool  # only parts the diagnosis expected (or none)
    # The diagnosis in force: its path and resolution deadline (on the SLA clock).
    path: ResolutionPath | None
    diagnosis_id: str | None
    resolution_due_at: datetime | None
    version: int = 0  # in the ticket stream
    # Parts were used that may have to come back (under warranty, or the warranty paid).
    returns_possible: bool = False
    # The parts it replaced under warranty: they come back whatever the catalogue says.
    warranty_parts: tuple[PartEvent, ...] = ()
    # The resolution breach recorded before this repair (its SlaBreached), if any.
    breached_before: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "at": iso_utc(self.at),
            "day": self.at.date().isoformat(),
            "outcome": self.outcome.value,
            "fault_category": self.fault_category,
            "technician_id": self.technician_id,
            "visit_event_id": self.visit_event_id,
            "visits_before": self.visits_before,
            "parts_as_expected": self.parts_as_expected,
        }


@dataclass(frozen=True)
class FollowUp:
    event_id: str
    at: datetime
    score: int
    would_recommend: int
    problem_solved: bool
    repair_event_id: str | None  # the repair it followed up (None: no repair awaited one)
    satisfactory: bool | None = None  # the close (True) or reopen (False) that followed

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "at": iso_utc(self.at),
            "score": self.score,
            "would_recommend": self.would_recommend,
            "problem_solved": self.problem_solved,
            "satisfactory": self.satisfactory,
            "repair_event_id": self.repair_event_id,
        }


@dataclass(frozen=True)
class Complaint:
    event_id: str
    at: datetime
    public: bool

    def as_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "at": iso_utc(self.at), "public": self.public}


@dataclass(frozen=True)
class Word:
    """The customer's word: a follow-up's verdict, or a complaint that reopened."""

    satisfactory: bool
    event_ids: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class PartEvent:
    """An expected return, a return, or a late return or overdue notice of one part."""

    event_id: str
    part_number: str  # normalised
    quantity: int = 1
    # Late parts only: which expected return it tells of (its due time and, when given,
    # the old serial) and whether it is the overdue notice or a late return.
    old_serial: str | None = None
    due_at: datetime | None = None
    overdue: bool = False

    def same_return(self, other: PartEvent) -> bool:
        """Whether two late-part events may tell of one expected return: one part, one due
        time, and no two different serials (a serial may be given at the hand-in only)."""
        return (
            self.part_number == other.part_number
            and self.due_at == other.due_at
            and (self.old_serial is None or other.old_serial in (None, self.old_serial))
        )


@dataclass(frozen=True)
class Deduction:
    kind: str
    at: datetime
    service_point_id: str | None
    region: str
    event_ids: tuple[str, ...]
    earlier_ticket_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": iso_utc(self.at),
            "month": month_of(self.at),
            "service_point_id": self.service_point_id,
            "region": self.region,
            "event_ids": list(self.event_ids),
            "earlier_ticket_id": self.earlier_ticket_id,
        }


@dataclass(frozen=True)
class RepeatFlag:
    event_id: str
    at: datetime
    earlier_ticket_id: str


@dataclass(frozen=True)
class Facts:
    """Everything the checklist, scorecards and KPIs need from one ticket's events."""

    ticket_id: str
    ticket_number: str
    received_id: str
    received_at: datetime
    # When the response target runs out on the ticket's SLA clock (None: a pause first).
    response_due_at: datetime | None
    product_model: str
    agent_id: str | None
    region: str  # as corrected
    version: int  # of the ticket stream
    status: TicketStatus = TicketStatus.received
    steps: tuple[Seen, ...] = ()  # every event after the receipt, in order
    diagnosis: Diagnosis | None = None  # the latest
    first_response: Stamp | None = None  # the first diagnosis
    dispatch: Dispatch | None = None  # the latest
    visit_since_dispatch: str | None = None
    # The first event past the deadline while the step was still missing.
    late_for_response: str | None = None
    late_for_resolution: str | None = None
    breaches: tuple[tuple[str, str], ...] = ()  # (deadline, first SlaBreached id)
    visits: tuple[Visit, ...] = ()
    repairs: tuple[Repair, ...] = ()
    awaiting_follow_up: str | None = None  # the repair no follow-up has followed yet
    follow_ups: tuple[FollowUp, ...] = ()
    verdict_due: bool = False  # the latest follow-up awaits the close or reopen after it
    complaints: tuple[Complaint, ...] = ()
    words: tuple[Word, ...] = ()
    corrections: tuple[str, ...] = ()
    reopens: tuple[str, ...] = ()
    closed: str | None = None  # the TicketClosed no reopen has followed
    repeat_flags: tuple[RepeatFlag, ...] = ()
    # Deductions earned by events, at the service point and region of their moment.
    charges: tuple[Deduction, ...] = ()
    expected_returns: tuple[PartEvent, ...] = ()  # decided by the parts service
    returns: tuple[PartEvent, ...] = ()
    late_parts: tuple[PartEvent, ...] = ()  # late returns and overdue notices, in order
    # The stream version an import of the replaced system's history ended at (0: live).
    imported_through: int = 0

    # The instants the targets run out on the SLA clock (business time, pauses off).
    deadlines: Deadlines | None = None

    @property
    def month(self) -> str:
        return month_of(self.received_at)

    @property
    def path(self) -> ResolutionPath | None:
        return self.diagnosis.path if self.diagnosis else None

    @property
    def service_point_id(self) -> str | None:
        return self.dispatch.service_point_id if self.dispatch else None

    @property
    def technician_id(self) -> str | None:
        return self.dispatch.technician_id if self.dispatch else None

    def breach(self, deadline: str) -> str | None:
        return next((event_id for d, event_id in self.breaches if d == deadline), None)

    @property
    def deductions(self) -> tuple[Deduction, ...]:
        """The charges, then the repeat repairs (counted against the earlier ticket's
        point; the region is the ticket's as corrected)."""
        repeats = tuple(
            Deduction("repeat_repair", f.at, None, self.region, (f.event_id,), f.earlier_ticket_id)
            for f in self.repeat_flags
        )
        return self.charges + repeats


# --- the deadlines on the SLA clock --------------------------------------------------------


@dataclass(frozen=True)
class Deadlines:
    """When a ticket's targets run out on its SLA clock (business time on its calendars,
    pauses off): the response, and each diagnosis's resolution (by event id). None: not
    reached — a pause came first. Without them the deadlines stored on the events apply
    (the built-in policy with no pause: the same instants)."""

    response: datetime | None
    resolution: Mapping[str, datetime | None]


SLA_TERMS_EVENTS = frozenset({SlaPolicyApplied.event_type, SlaPaused.event_type})


def needs_clock(ticket: Sequence[EventEnvelope]) -> bool:
    """Whether the clock can differ from the stored deadlines: a policy, a pause, or a
    re-diagnosis (which may not move a deadline already passed: ``resolution_in_force``)."""
    diagnosed = 0
    for e in ticket:
        if e.event_type in SLA_TERMS_EVENTS:
            return True
        diagnosed += e.event_type == TicketDiagnosed.event_type
    return diagnosed > 1


def deadlines_of(
    state: TicketState, ticket: Sequence[EventEnvelope], terms: SlaTerms
) -> Deadlines | None:
    """The ticket's deadlines on its clock (``state`` folded from ``ticket``)."""
    if state.received_at is None:
        return None
    diagnoses = [
        (
            str(e.event_id),
            e.occurred_at,
            str(p["complexity"]),
            datetime.fromisoformat(p["resolution_due_at"]),
        )
        for e in ticket
        if e.event_type == TicketDiagnosed.event_type
        for p in (payload_dict(e),)
    ]
    # The checklist judges the first repair: a dispatch after it (a reopened ticket's)
    # does not move the deadline that repair met or missed.
    first_repair = next(
        (e.occurred_at for e in ticket if e.event_type == TicketRepaired.event_type), None
    )
    if first_repair is not None:
        kept = tuple(d for d in state.dispatches if d[0] <= first_repair)
        state = replace(state, dispatches=kept)
    return Deadlines(
        response_due_instant(state, terms), resolution_due_instants(state, terms, diagnoses)
    )


# --- the fold ----------------------------------------------------------------------------


def facts_of(
    ticket: Sequence[EventEnvelope],
    paperwork: Sequence[EventEnvelope] = (),
    deadlines: Deadlines | None = None,
) -> Facts | None:
    """The facts of a ticket stream (from version 1, in order) and its parts paperwork;
    None before the ticket was received."""
    if not ticket or ticket[0].event_type != TicketReceived.event_type:
        return None
    expected = [e for e in paperwork if e.event_type == OldPartReturnExpected.event_type]
    # An imported receipt's actor is the import's operator, not a call-center agent.
    imported = max((e.stream_version for e in ticket if is_imported(e)), default=0)
    agent = None if imported else ticket[0].actor.subject
    facts = fold(ticket[0].stream_id, agent, recorded(ticket), recorded(expected), deadlines)
    return amend(facts, imported_through=imported) if facts is not None and imported else facts


def fold(
    ticket_id: str,
    agent_id: str | None,
    ticket: Sequence[Recorded],
    paperwork: Sequence[Recorded] = (),
    deadlines: Deadlines | None = None,
) -> Facts | None:
    if not ticket or not isinstance(ticket[0].payload, TicketReceived):
        return None
    first, received = ticket[0], ticket[0].payload
    facts = Facts(
        ticket_id=ticket_id,
        ticket_number=received.ticket_number,
        received_id=first.event_id,
        received_at=first.at,
        response_due_at=deadlines.response if deadlines else received.response_due_at,
        deadlines=deadlines,
        product_model=received.product.model,
        agent_id=agent_id,
        region=received.address.region,
        version=first.version,
    )
    for event in ticket[1:]:
        facts = evolve(facts, event)
    expected = tuple(
        PartEvent(e.event_id, normalise_part_number(e.payload.part_number), e.payload.quantity)
        for e in paperwork
        if isinstance(e.payload, OldPartReturnExpected)
    )
    return amend(facts, expected_returns=expected)


def evolve(f: Facts, event: Recorded) -> Facts:
    """The facts after one more event of the ticket stream."""
    kind = event.payload.event_type
    f = amend(
        f,
        version=event.version,
        status=status_after(f.status, kind),
        steps=(*f.steps, Seen(event.event_id, kind, event.at, f.status, f.path)),
        late_for_response=f.late_for_response or _late_for_response(f, event),
        late_for_resolution=f.late_for_resolution or _late_for_resolution(f, event),
    )
    return _record(_verdict(f, event), event)


def _late_for_response(f: Facts, event: Recorded) -> str | None:
    """The event, if it is the first past the response deadline with no response yet."""
    if f.first_response is not None or isinstance(event.payload, TicketDiagnosed):
        return None
    due = f.response_due_at
    return event.event_id if due is not None and event.at > due else None


def _late_for_resolution(f: Facts, event: Recorded) -> str | None:
    """The event, if it is the first past the resolution deadline in force, unrepaired."""
    if f.repairs or f.diagnosis is None or isinstance(event.payload, TicketRepaired):
        return None
    due = f.diagnosis.resolution_due_at
    return event.event_id if due is not None and event.at > due else None


def amend(f: Facts, **changes: Any) -> Facts:
    """``dataclasses.replace`` for the facts, without running ``__init__`` again: the
    fold copies the record a few times per event, and it has many fields."""
    copy = object.__new__(Facts)
    vars(copy).update(vars(f), **changes)
    return copy


def _verdict(f: Facts, event: Recorded) -> Facts:
    """A follow-up's verdict is the close or reopen that follows it (same command)."""
    if not f.verdict_due or not isinstance(event.payload, TicketClosed | TicketReopened):
        return f
    satisfactory = isinstance(event.payload, TicketClosed)
    follow_up = replace(f.follow_ups[-1], satisfactory=satisfactory)
    note = "satisfied and solved" if satisfactory else "dissatisfied or unsolved: reopened"
    f = amend(
        f,
        follow_ups=(*f.follow_ups[:-1], follow_up),
        words=(*f.words, Word(satisfactory, (follow_up.event_id, event.event_id), note)),
        verdict_due=False,
    )
    return f if satisfactory else _late_visit(f, follow_up)


def _late_visit(f: Facts, follow_up: FollowUp) -> Facts:
    """A dissatisfied follow-up judged a repair whose visit arrived late: a deduction for
    the point that made the visit."""
    repair = next((r for r in f.repairs if r.event_id == follow_up.repair_event_id), None)
    if repair is None or repair.visit_event_id is None:
        return f
    visit = next(v for v in f.visits if v.event_id == repair.visit_event_id)
    if visit.on_time:
        return f
    ids = (visit.dispatch_event_id, visit.event_id, follow_up.event_id)
    charge = Deduction(
        "late_visit_dissatisfied",
        follow_up.at,
        visit.service_point_id,
        f.region,
        tuple(i for i in ids if i),
    )
    return amend(f, charges=(*f.charges, charge))


def _record(f: Facts, event: Recorded) -> Facts:
    eid, at, p = event.event_id, event.at, event.payload
    match p:
        case ContactDetailsCorrected():
            region = p.address.region if p.address is not None else f.region
            return amend(f, corrections=(*f.corrections, eid), region=region)
        case TicketDiagnosed():
            return _diagnosed(f, eid, at, p)
        case TicketDispatched():
            dispatch = Dispatch(eid, p.service_point_id, p.technician_id, p.appointment_end)
            return amend(f, dispatch=dispatch, visit_since_dispatch=None)
        case TicketVisited():
            return _visited(f, eid, p)
        case TicketRepaired():
            return _repaired(f, eid, at, p)
        case FollowUpRecorded():
            return _followed_up(f, eid, at, p)
        case TicketReopened():
            return _reopened(f, eid, p)
        case TicketClosed():
            return amend(f, closed=eid)
        case ComplaintFiled():
            return _complained(f, eid, at, p)
        case SlaBreached():
            if f.breach(p.deadline.value) is not None:
                return f
            return amend(f, breaches=(*f.breaches, (p.deadline.value, eid)))
        case RepeatRepairFlagged():
            flag = RepeatFlag(eid, at, p.earlier_ticket_id)
            return amend(f, repeat_flags=(*f.repeat_flags, flag))
        case OldPartReturned():
            part = normalise_part_number(p.part_number)
            f = amend(f, returns=(*f.returns, PartEvent(eid, part, p.quantity)))
            if not p.late:
                return f
            late = PartEvent(eid, part, old_serial=old_serial_key(p.old_serial), due_at=p.due_at)
            return _late_part(f, late, at, p)
        case OldPartReturnOverdue():
            part = normalise_part_number(p.part_number)
            serial = old_serial_key(p.old_serial)
            notice = PartEvent(eid, part, old_serial=serial, due_at=p.due_at, overdue=True)
            return _late_part(f, notice, at, p)
    return f


def _diagnosed(f: Facts, eid: str, at: datetime, p: TicketDiagnosed) -> Facts:
    due = f.deadlines.resolution.get(eid) if f.deadlines else p.resolution_due_at
    diagnosis = Diagnosis(
        eid,
        p.category.value,
        p.resolution_path,
        due,
        frozenset(normalise_part_number(n) for n in p.expected_parts),
    )
    return amend(f, diagnosis=diagnosis, first_response=f.first_response or Stamp(eid, at))


def _visited(f: Facts, eid: str, p: TicketVisited) -> Facts:
    d = f.dispatch
    visit = Visit(
        eid,
        d.event_id if d else None,
        p.technician_id,
        d.service_point_id if d else None,
        on_time=d is None or p.arrived_at <= d.appointment_end,
    )
    return amend(f, visits=(*f.visits, visit), visit_since_dispatch=eid)


def _repaired(f: Facts, eid: str, at: datetime, p: TicketRepaired) -> Facts:
    d = f.diagnosis
    wanted = d.expected_parts if d else frozenset()
    repair = Repair(
        event_id=eid,
        at=at,
        outcome=p.outcome,
        fault_category=d.category if d else "other",
        technician_id=p.technician_id or f.technician_id,
        visit_event_id=f.visit_since_dispatch,
        visits_before=len(f.visits),
        parts_as_expected=all(normalise_part_number(u.part_number) in wanted for u in p.parts_used),
        path=d.path if d else None,
        diagnosis_id=d.event_id if d else None,
        resolution_due_at=d.resolution_due_at if d else None,
        version=f.version,
        returns_possible=any(
            u.under_warranty or p.cost_borne_by is CostBearer.warranty for u in p.parts_used
        ),
        warranty_parts=tuple(
            PartEvent(eid, normalise_part_number(u.part_number), u.quantity)
            for u in p.parts_used
            if u.under_warranty
        ),
        breached_before=f.breach("resolution"),
    )
    return amend(f, repairs=(*f.repairs, repair), awaiting_follow_up=eid)


def _followed_up(f: Facts, eid: str, at: datetime, p: FollowUpRecorded) -> Facts:
    follow_up = FollowUp(
        eid,
        at,
        p.satisfaction_score,
        p.would_recommend,
        p.problem_solved,
        repair_event_id=f.awaiting_follow_up,
    )
    return amend(
        f, follow_ups=(*f.follow_ups, follow_up), verdict_due=True, awaiting_follow_up=None
    )


def _reopened(f: Facts, eid: str, p: TicketReopened) -> Facts:
    f = amend(f, reopens=(*f.reopens, eid), closed=None)
    if p.source != "complaint":
        return f
    complaint = tuple(c.event_id for c in f.complaints[-1:])
    word = Word(False, (*complaint, eid), "complaint reopened it")
    return amend(f, words=(*f.words, word))


def _complained(f: Facts, eid: str, at: datetime, p: ComplaintFiled) -> Facts:
    f = amend(f, complaints=(*f.complaints, Complaint(eid, at, p.public)))
    if not p.public:
        return f
    charge = Deduction("public_complaint", at, f.service_point_id, f.region, (eid,))
    return amend(f, charges=(*f.charges, charge))


def _late_part(
    f: Facts, late: PartEvent, at: datetime, p: OldPartReturned | OldPartReturnOverdue
) -> Facts:
    """One deduction per expected return that went late, however many events tell of it:
    each overdue notice is one expected return (parts records one per return); a late
    return is charged only when nothing before told of its return (no notice came first,
    and an earlier partial hand-in of it was charged already)."""
    # A notice is never the same return as another notice; a late return may follow
    # its notice or an earlier hand-in of part of it.
    told = [e for e in f.late_parts if not e.overdue] if late.overdue else f.late_parts
    f = amend(f, late_parts=(*f.late_parts, late))
    if any(e.same_return(late) for e in told):
        return f
    eid = late.event_id
    point = p.service_point_id or f.service_point_id
    if point and f.service_point_id and point.casefold() == f.service_point_id.casefold():
        # Parts spells its locations as registered there (ids compare case-insensitively
        # across the services): the scorecard's row is the network's spelling.
        point = f.service_point_id
    charge = Deduction("late_parts_return", at, point, f.region, (eid,))
    return amend(f, charges=(*f.charges, charge))

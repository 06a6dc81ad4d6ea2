"""Intake decisions: pure functions of (ticket state, command) → events."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from shared.kernel.clock import EARLIEST_BUSINESS_DAY, dates_anywhere, latest_today
from shared.kernel.decider import Decider
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.customers import CustomerDataErased, LegalHoldPlaced, LegalHoldReleased
from shared.kernel.events.envelope import EventPayload, PendingEvent
from shared.kernel.events.tickets import (
    Address,
    Channel,
    Complexity,
    ContactDetailsCorrected,
    CostBearer,
    Customer,
    FaultCategory,
    Problem,
    Product,
    RepairOutcome,
    ResolutionPath,
    TicketDiagnosed,
    TicketReceived,
    TicketRepaired,
    Urgency,
    WarrantyStatus,
)
from shared.kernel.lifecycle import may_follow
from shared.kernel.personal import ERASED
from shared.kernel.sla import (
    RESOLUTION,
    RESPONSE,
    Placement,
    SlaPin,
    SlaTerms,
    diagnoses_made,
    nominal_due,
    resolution_walk,
)
from shared.kernel.ticket import TicketState, require_open, require_ticket


@dataclass(frozen=True)
class NewTicket:
    """What the caller tells about a customer's request."""

    customer: Customer
    address: Address
    product: Product
    problem: Problem
    urgency: Urgency
    channel: Channel
    warranty_status: WarrantyStatus | None = None


@dataclass(frozen=True)
class ReceiveTicket:
    """The request with the facts the handler gathered: the ticket's number, the moment
    of receipt (every deadline counts from it), the configured figures, and an open ticket
    for the same product if there is one."""

    request: NewTicket
    ticket_number: str
    received_at: datetime
    response_hours: float
    warranty_months: int
    possible_duplicate_of: str | None = None
    # The SLA policy in force and its calendars (None: the built-in policy, whose
    # deadline is ``response_hours`` of wall-clock time).
    sla: SlaPin | None = None


@dataclass(frozen=True)
class Diagnosis:
    """What the agent found on the call."""

    category: FaultCategory
    complexity: Complexity
    resolution_path: ResolutionPath
    expected_parts: tuple[str, ...] = ()
    notes: str | None = None
    remote_outcome: RepairOutcome | None = None


@dataclass(frozen=True)
class DiagnoseTicket:
    diagnosis: Diagnosis
    # The built-in policy's resolution target for the diagnosis's complexity.
    resolution_hours: float
    # The terms pinned on the ticket (None: the built-in policy).
    terms: SlaTerms | None = None
    # When it is decided (None: no clock to ask, e.g. an imported first diagnosis).
    made_at: datetime | None = None


@dataclass(frozen=True)
class CorrectContactDetails:
    reason: str
    customer: Customer | None = None
    address: Address | None = None


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    # Clamp to the month's last day (31 Jan + 1 month → 28/29 Feb).
    for candidate in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, candidate))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def derive_warranty(purchase_date: date, today: date, warranty_months: int) -> WarrantyStatus:
    if today < add_months(purchase_date, warranty_months):
        return WarrantyStatus.in_warranty
    return WarrantyStatus.out_of_warranty


def response_deadline(command: ReceiveTicket) -> datetime:
    """The nominal response deadline (no pause yet): the policy's target on its calendar,
    or the built-in wall-clock hours."""
    r, at = command.request, command.received_at
    if command.sla is not None:
        where = Placement(r.urgency.value, r.channel.value, r.address.region)
        due = nominal_due(command.sla.terms, RESPONSE, r.urgency.value, where, at)
        if due is not None:
            return due
    return at + timedelta(hours=command.response_hours)


def require_visible(field: str, value: str | None) -> None:
    """A name or an address line must show something: text made only of invisible
    characters (zero-width spaces, format marks) passes the blank check but names nobody."""
    if value is not None and not any(
        not unicodedata.category(ch).startswith(("C", "Z")) for ch in value
    ):
        raise InvalidCommand(field, "has no visible character")


def decide_receive(command: ReceiveTicket, state: TicketState) -> list[PendingEvent]:
    if state.exists:
        raise RuleViolation("ticket_already_received", "this ticket was already received")
    r = command.request
    today = command.received_at.date()
    if r.product.purchase_date > latest_today(command.received_at):
        raise InvalidCommand("product.purchase_date", "the purchase date is in the future")
    if r.product.purchase_date < EARLIEST_BUSINESS_DAY:
        raise InvalidCommand("product.purchase_date", f"before {EARLIEST_BUSINESS_DAY.isoformat()}")
    require_visible("customer.name", r.customer.name)
    require_visible("address.line", r.address.line)
    derived = derive_warranty(r.product.purchase_date, today, command.warranty_months)
    given = r.warranty_status
    # An extended warranty is a contract we cannot derive; the other two must agree — on
    # the receipt's day wherever the customer is (a purchase date is a local day, and the
    # time may come written in UTC: an export's, read back).
    agreeing = {
        derive_warranty(r.product.purchase_date, day, command.warranty_months)
        for day in dates_anywhere(command.received_at)
    }
    if given is not None and given is not WarrantyStatus.extended and given not in agreeing:
        raise InvalidCommand(
            "warranty_status",
            f"{given.value} disagrees with the purchase date "
            f"({command.warranty_months}-month warranty gives {derived.value})",
        )
    received = TicketReceived(
        ticket_number=command.ticket_number,
        customer=r.customer,
        address=r.address,
        product=r.product,
        warranty_status=given or derived,
        problem=r.problem,
        urgency=r.urgency,
        channel=r.channel,
        response_due_at=response_deadline(command),
        possible_duplicate_of=command.possible_duplicate_of,
    )
    # The event occurred at the receipt the deadline is counted from: the same instant.
    events = [PendingEvent(received, occurred_at=command.received_at)]
    if command.sla is not None:  # the ticket keeps the policy it started under
        events.append(PendingEvent(command.sla.applied, occurred_at=command.received_at))
    return events


def resolution_deadline(command: DiagnoseTicket, state: TicketState) -> datetime:
    """The nominal resolution deadline from the receipt (no pause counted), as
    ``response_deadline`` — the one in force: a re-diagnosis made once the ticket's clock
    had passed the deadline in force keeps it (a passed deadline stands, as the clock
    says: ``resolution_walk``)."""
    assert state.received_at is not None
    complexity = command.diagnosis.complexity.value
    # Also the built-in policy's deadline, and what the walk weighs a target it lacks by.
    fallback = state.received_at + timedelta(hours=command.resolution_hours)
    if command.terms is None:
        return fallback
    made = diagnoses_made(state)
    if command.made_at is not None:
        made.append((command.made_at, complexity, fallback))
    # The diagnosis in force after this one, and the calendar the resolution runs on.
    walk = resolution_walk(state, command.terms, made)
    current = walk.in_force[-1][0] if command.made_at is not None else len(state.diagnoses)
    kept = state.diagnoses[current][1] if current < len(state.diagnoses) else None
    key = kept.complexity.value if kept is not None else complexity
    due = nominal_due(command.terms, RESOLUTION, key, walk.where, state.received_at)
    if due is not None:
        return due
    return kept.resolution_due_at if kept is not None else fallback


def decide_diagnose(command: DiagnoseTicket, state: TicketState) -> list[EventPayload]:
    d = command.diagnosis
    require_open(state)
    if not may_follow(state.status, "TicketDiagnosed"):
        raise RuleViolation(
            "diagnosis_after_dispatch",
            f"a ticket in status {state.status.value} can no longer be diagnosed",
        )
    if d.remote_outcome is not None and d.resolution_path is not ResolutionPath.remote_guidance:
        raise InvalidCommand(
            "remote_outcome", "an outcome can be recorded here only for remote guidance"
        )
    if d.remote_outcome is RepairOutcome.replaced:
        # A replacement names its parts with their serials: dispatch's repair records it.
        raise InvalidCommand(
            "remote_outcome",
            "a replacement names the parts used (new and old serials): record it with "
            "dispatch's POST /tickets/{id}/repair",
        )
    assert state.received is not None and state.received_at is not None
    events: list[EventPayload] = [
        TicketDiagnosed(
            category=d.category,
            complexity=d.complexity,
            resolution_path=d.resolution_path,
            expected_parts=list(d.expected_parts),
            notes=d.notes,
            resolution_due_at=resolution_deadline(command, state),
        )
    ]
    if d.remote_outcome is not None:
        in_warranty = state.received.warranty_status is not WarrantyStatus.out_of_warranty
        events.append(
            TicketRepaired(
                outcome=d.remote_outcome,
                cost_borne_by=CostBearer.warranty if in_warranty else CostBearer.customer,
                notes="resolved by remote guidance",
            )
        )
    return events


def decide_correct_contact(
    command: CorrectContactDetails, state: TicketState
) -> list[EventPayload]:
    if command.customer is None and command.address is None:  # the request's own fault first
        raise InvalidCommand("customer", "give the corrected customer and/or address")
    require_ticket(state)
    require_open(state)
    require_visible("customer.name", command.customer.name if command.customer else None)
    require_visible("address.line", command.address.line if command.address else None)
    assert state.received is not None
    if state.received.customer.name == ERASED:  # no key to seal the new details with
        raise RuleViolation(
            "customer_erased",
            "the customer's data is erased: new details would be stored as [erased] "
            "(record a new ticket for the customer)",
        )
    unchanged_customer = command.customer in (None, state.received.customer)
    unchanged_address = command.address in (None, state.received.address)
    if unchanged_customer and unchanged_address:
        raise RuleViolation("nothing_to_correct", "the details given are the ones on record")
    moved = command.address is not None and command.address.region != state.region
    if moved and state.dispatch is not None:
        raise RuleViolation(
            "region_change_after_dispatch",
            f"the ticket was dispatched to {state.dispatch.service_point_id} in {state.region}: "
            "its region no longer changes (a customer now in another region needs a new "
            "ticket there)",
        )
    return [
        ContactDetailsCorrected(
            customer=command.customer, address=command.address, reason=command.reason
        )
    ]


# --- the customer (data subject): erasure and legal holds ---------------------------------


@dataclass(frozen=True)
class CustomerState:
    customer_id: str
    version: int = 0
    legal_hold: bool = False
    erased: CustomerDataErased | None = None
    erased_at: datetime | None = None


def evolve_customer(
    state: CustomerState, payload: EventPayload, occurred_at: datetime | None = None
) -> CustomerState:
    s = replace(state, version=state.version + 1)
    match payload:
        case CustomerDataErased():
            return replace(s, erased=payload, erased_at=occurred_at, legal_hold=False)
        case LegalHoldPlaced():
            return replace(s, legal_hold=True)
        case LegalHoldReleased():
            return replace(s, legal_hold=False)
    return s


CUSTOMERS: Decider[CustomerState] = Decider(
    stream_type="customer",
    initial_state=lambda stream_id: CustomerState(stream_id.removeprefix("customer-")),
    evolve=evolve_customer,
)


@dataclass(frozen=True)
class EraseCustomer:
    """An erasure request with the facts gathered: the customer's tickets and which of
    them are still open (their data is still needed to finish the repair)."""

    request_id: str
    legal_basis: str
    tickets: tuple[str, ...]
    open_tickets: tuple[str, ...] = ()
    source: str = "request"
    # An erasure made again after a restore from an older backup, whose open tickets were
    # closed (and the customer erased) in the history the restore undid.
    after_restore: bool = False


@dataclass(frozen=True)
class SetLegalHold:
    active: bool
    reason: str


def decide_erase(command: EraseCustomer, state: CustomerState) -> list[EventPayload]:
    """Once: erasing an erased customer records nothing (the first answer is replayed)."""
    if state.erased is not None:
        return []
    if state.legal_hold:
        raise RuleViolation("legal_hold", "the customer is under legal hold; release it first")
    if command.open_tickets and not command.after_restore:
        raise RuleViolation(
            "customer_has_open_tickets",
            "the customer's data is still needed for open tickets: "
            + ", ".join(command.open_tickets),
        )
    return [
        CustomerDataErased(
            customer_id=state.customer_id,
            request_id=command.request_id,
            legal_basis=command.legal_basis,
            source=command.source,
            tickets=list(command.tickets),
        )
    ]


def decide_legal_hold(command: SetLegalHold, state: CustomerState) -> list[EventPayload]:
    if state.erased is not None:
        raise RuleViolation("customer_erased", "the customer's data is already erased")
    if command.active == state.legal_hold:
        return []
    cls = LegalHoldPlaced if command.active else LegalHoldReleased
    return [cls(customer_id=state.customer_id, reason=command.reason)]

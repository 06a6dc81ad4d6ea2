"""Intake decisions: pure functions of (ticket state, command) → events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from shared.app.config import SlaSettings
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.envelope import EventPayload
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
from shared.kernel.ticket import TicketState, TicketStatus, require_open, require_ticket


@dataclass(frozen=True)
class ReceiveTicket:
    customer: Customer
    address: Address
    product: Product
    problem: Problem
    urgency: Urgency
    channel: Channel
    warranty_status: WarrantyStatus | None = None


@dataclass(frozen=True)
class DiagnoseTicket:
    category: FaultCategory
    complexity: Complexity
    resolution_path: ResolutionPath
    expected_parts: tuple[str, ...] = ()
    notes: str | None = None
    remote_outcome: RepairOutcome | None = None


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


def decide_receive(
    state: TicketState,
    command: ReceiveTicket,
    *,
    ticket_number: str,
    now: datetime,
    sla: SlaSettings,
    warranty_months: int,
    possible_duplicate_of: str | None,
) -> list[EventPayload]:
    if state.exists:
        raise RuleViolation("ticket_already_received", "this ticket was already received")
    if command.product.purchase_date > now.date():
        raise InvalidCommand("product.purchase_date", "the purchase date is in the future")
    derived = derive_warranty(command.product.purchase_date, now.date(), warranty_months)
    given = command.warranty_status
    # An extended warranty is a contract we cannot derive; the other two must agree.
    if given is not None and given is not WarrantyStatus.extended and given is not derived:
        raise InvalidCommand(
            "warranty_status",
            f"{given.value} disagrees with the purchase date "
            f"({warranty_months}-month warranty gives {derived.value})",
        )
    return [
        TicketReceived(
            ticket_number=ticket_number,
            customer=command.customer,
            address=command.address,
            product=command.product,
            warranty_status=given or derived,
            problem=command.problem,
            urgency=command.urgency,
            channel=command.channel,
            response_due_at=now + timedelta(hours=sla.response_hours(command.urgency.value)),
            possible_duplicate_of=possible_duplicate_of,
        )
    ]


DIAGNOSABLE = frozenset({TicketStatus.received, TicketStatus.diagnosed, TicketStatus.reopened})


def decide_diagnose(
    state: TicketState, command: DiagnoseTicket, *, now: datetime, sla: SlaSettings
) -> list[EventPayload]:
    require_open(state)
    if state.status not in DIAGNOSABLE:
        raise RuleViolation(
            "diagnosis_after_dispatch",
            f"a ticket in status {state.status.value} can no longer be diagnosed",
        )
    if (
        command.remote_outcome is not None
        and command.resolution_path is not ResolutionPath.remote_guidance
    ):
        raise InvalidCommand(
            "remote_outcome", "an outcome can be recorded here only for remote guidance"
        )
    assert state.received is not None and state.received_at is not None
    events: list[EventPayload] = [
        TicketDiagnosed(
            category=command.category,
            complexity=command.complexity,
            resolution_path=command.resolution_path,
            expected_parts=list(command.expected_parts),
            notes=command.notes,
            resolution_due_at=state.received_at
            + timedelta(hours=sla.resolution_hours(command.complexity.value)),
        )
    ]
    if command.remote_outcome is not None:
        in_warranty = state.received.warranty_status is not WarrantyStatus.out_of_warranty
        events.append(
            TicketRepaired(
                outcome=command.remote_outcome,
                cost_borne_by=CostBearer.warranty if in_warranty else CostBearer.customer,
                notes="resolved by remote guidance",
            )
        )
    return events


def decide_correct_contact(
    state: TicketState, command: CorrectContactDetails
) -> list[EventPayload]:
    require_ticket(state)
    require_open(state)
    if command.customer is None and command.address is None:
        raise InvalidCommand("customer", "give the corrected customer and/or address")
    assert state.received is not None
    unchanged_customer = command.customer in (None, state.received.customer)
    unchanged_address = command.address in (None, state.received.address)
    if unchanged_customer and unchanged_address:
        raise RuleViolation("nothing_to_correct", "the details given are the ones on record")
    return [
        ContactDetailsCorrected(
            customer=command.customer, address=command.address, reason=command.reason
        )
    ]

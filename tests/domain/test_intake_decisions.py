"""Intake's decisions, given/when/then: a state (folded from events), a command, the events
decided or the rule broken. No database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from services.intake import domain
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.envelope import PendingEvent
from shared.kernel.events.tickets import (
    Address,
    Channel,
    Complexity,
    Customer,
    FaultCategory,
    Problem,
    Product,
    RepairOutcome,
    ResolutionPath,
    TicketClosed,
    TicketDiagnosed,
    TicketReceived,
    TicketRepaired,
    Urgency,
    WarrantyStatus,
)
from shared.kernel.ticket import TICKETS, TicketState
from tests.support.factories import diagnosed, received

FRIDAY_1730 = datetime(2026, 11, 20, 17, 30, tzinfo=UTC)


def given(*payloads) -> TicketState:  # type: ignore[no-untyped-def]
    state = TICKETS.initial_state("t-1")
    for p in payloads:
        state = TICKETS.evolve(state, p, FRIDAY_1730)
    return state


def request(**overrides) -> domain.NewTicket:  # type: ignore[no-untyped-def]
    data = {
        "customer": Customer(name="Li Wei", phone="13812345678"),
        "address": Address(line="1 Garden Road", region="east"),
        "product": Product(model="WM-700", purchase_date=date(2026, 3, 1)),
        "problem": Problem(symptom="drum does not spin", frequency="always", environment="home"),
        "urgency": Urgency.urgent,
        "channel": Channel.phone,
        **overrides,
    }
    return domain.NewTicket(**data)


def receive(req: domain.NewTicket | None = None) -> domain.ReceiveTicket:
    return domain.ReceiveTicket(
        req or request(),
        ticket_number="TL-20261120-000001",
        received_at=FRIDAY_1730,
        response_hours=2.0,
        warranty_months=12,
    )


def test_receipt_counts_the_deadline_from_its_own_instant() -> None:
    (event,) = domain.decide_receive(receive(), given())
    assert isinstance(event, PendingEvent) and event.occurred_at == FRIDAY_1730
    payload = event.payload
    assert isinstance(payload, TicketReceived)
    assert payload.response_due_at == FRIDAY_1730 + timedelta(hours=2)
    assert payload.warranty_status is WarrantyStatus.in_warranty


def test_receipt_rejects_a_future_purchase_and_a_contradicting_warranty() -> None:
    with pytest.raises(InvalidCommand) as err:
        domain.decide_receive(
            receive(request(product=Product(model="M", purchase_date=date(2027, 1, 1)))), given()
        )
    assert err.value.field == "product.purchase_date"
    with pytest.raises(InvalidCommand) as err:
        domain.decide_receive(
            receive(request(warranty_status=WarrantyStatus.out_of_warranty)), given()
        )
    assert err.value.field == "warranty_status"


def test_a_given_warranty_agrees_on_the_receipts_day_wherever_the_customer_is() -> None:
    """Bought 2025-11-21 with 12 months: the warranty ends as 2026-11-21 begins. Friday
    17:30 UTC is already Saturday the 21st east of UTC+6:30 — so either status agrees
    then (the time may come written in UTC, read back from an export); a day earlier
    only in_warranty does. Derived (none given): the day of the time as written."""
    bought = Product(model="WM-700", purchase_date=date(2025, 11, 21))
    for status in WarrantyStatus.in_warranty, WarrantyStatus.out_of_warranty:
        (event,) = domain.decide_receive(
            receive(request(product=bought, warranty_status=status)), given()
        )
        assert event.payload.warranty_status is status  # type: ignore[attr-defined]
    (event,) = domain.decide_receive(receive(request(product=bought)), given())
    assert event.payload.warranty_status is WarrantyStatus.in_warranty  # type: ignore[attr-defined]
    earlier = replace(
        receive(request(product=bought, warranty_status=WarrantyStatus.out_of_warranty)),
        received_at=FRIDAY_1730 - timedelta(days=1),
    )
    with pytest.raises(InvalidCommand) as err:
        domain.decide_receive(earlier, given())
    assert err.value.field == "warranty_status"


def test_a_ticket_is_received_once() -> None:
    with pytest.raises(RuleViolation) as err:
        domain.decide_receive(receive(), given(received()))
    assert err.value.rule == "ticket_already_received"


def diagnose(path: ResolutionPath = ResolutionPath.on_site, outcome=None) -> domain.DiagnoseTicket:  # type: ignore[no-untyped-def]
    return domain.DiagnoseTicket(
        domain.Diagnosis(FaultCategory.misuse, Complexity.simple, path, remote_outcome=outcome),
        resolution_hours=4.0,
    )


def test_diagnosis_sets_the_resolution_deadline_from_receipt() -> None:
    state = given(received())
    (event,) = domain.decide_diagnose(diagnose(), state)
    assert isinstance(event, TicketDiagnosed)
    assert event.resolution_due_at == FRIDAY_1730 + timedelta(hours=4)


def test_remote_guidance_with_an_outcome_repairs_on_the_call() -> None:
    events = domain.decide_diagnose(
        diagnose(ResolutionPath.remote_guidance, RepairOutcome.fixed), given(received())
    )
    assert [type(e) for e in events] == [TicketDiagnosed, TicketRepaired]
    # A replacement names its parts and serials: never recorded on the call.
    with pytest.raises(InvalidCommand) as err:
        domain.decide_diagnose(
            diagnose(ResolutionPath.remote_guidance, RepairOutcome.replaced), given(received())
        )
    assert err.value.field == "remote_outcome"


def test_diagnosis_follows_the_lifecycle() -> None:
    with pytest.raises(RuleViolation) as err:
        domain.decide_diagnose(
            diagnose(),
            given(
                received(), diagnosed(), TicketRepaired(outcome="fixed", cost_borne_by="warranty")
            ),
        )
    assert err.value.rule == "diagnosis_after_dispatch"
    with pytest.raises(InvalidCommand):
        domain.decide_diagnose(
            diagnose(ResolutionPath.on_site, RepairOutcome.fixed), given(received())
        )


def test_nothing_to_correct_and_closed_tickets() -> None:
    state = given(received())
    same = domain.CorrectContactDetails("typo", customer=state.received.customer)  # type: ignore[union-attr]
    with pytest.raises(RuleViolation) as err:
        domain.decide_correct_contact(same, state)
    assert err.value.rule == "nothing_to_correct"
    closed = given(received(), TicketClosed())
    new_phone = domain.CorrectContactDetails(
        "moved", customer=Customer(name="Li", phone="13900000000")
    )
    with pytest.raises(RuleViolation) as err:
        domain.decide_correct_contact(new_phone, closed)
    assert err.value.rule == "ticket_closed"
    # Naming neither the customer nor the address is the request's own fault: said first.
    with pytest.raises(InvalidCommand) as refused:
        domain.decide_correct_contact(domain.CorrectContactDetails("moved"), closed)
    assert refused.value.field == "customer"

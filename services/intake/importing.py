"""Intake's steps of an imported ticket's history: the receipt and the diagnosis, decided
by intake's own decide functions as of the times the replaced system recorded.

The historical tickets kind itself (``shared/app/importing/tickets.py``) is intake's: the
ticket enters Ticketline where every ticket does. Its format: ``docs/import/tickets.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from services.intake import commands, domain
from shared.app.config import Settings
from shared.app.importing.fields import Column, Fields
from shared.app.importing.kinds import KindContext, guarded, run_at
from shared.app.importing.tickets import Decided, HistoryStep, TicketHistoryView, TicketRow
from shared.kernel.events.envelope import PendingEvent
from shared.kernel.events.tickets import (
    Address,
    Channel,
    Complexity,
    Customer,
    FaultCategory,
    Problem,
    Product,
    ResolutionPath,
    Urgency,
    WarrantyStatus,
)
from shared.kernel.ticket import TICKETS, TicketState

# What an old system that did not record it gets in the receipt's required fields.
NOT_RECORDED = "not recorded (imported)"

COLUMNS = (
    Column("received_at", True, "When the request was received (ISO 8601 with offset)."),
    Column("customer_name", True),
    Column("customer_phone", True, "7–21 digits, separators allowed."),
    Column("address_line", True),
    Column("city"),
    Column("postcode"),
    Column("region", True, "Region code, e.g. east."),
    Column("product_model", True),
    Column("product_line", False, "Matched against technicians' skills."),
    Column("serial_number", False, "Repeat repairs are found by serial."),
    Column("purchase_date", True, "YYYY-MM-DD."),
    Column("warranty_status", False, "in_warranty, out_of_warranty, extended; default: derived."),
    Column("symptom", True),
    Column("frequency", False, f"Default: {NOT_RECORDED}."),
    Column("environment", False, f"Default: {NOT_RECORDED}."),
    Column("urgency", True, "normal, urgent, critical."),
    Column("channel", True, "phone, web, app, messaging, store."),
    Column("diagnosed_at", False, "The first contact and diagnosis."),
    Column("category", False, "quality_defect, installation, misuse, wear, other."),
    Column("complexity", False, "simple, general, complex."),
    Column("resolution_path", False, "remote_guidance, on_site, replacement."),
    Column("expected_parts", False, "Part numbers, ';'-separated (JSON: a list)."),
    Column("diagnosis_notes"),
)
_CUSTOMER = {"name": "customer_name", "phone": "customer_phone"}
_ADDRESS = {"line": "address_line", "city": "city", "postcode": "postcode", "region": "region"}
_PRODUCT = {
    "model": "product_model",
    "product_line": "product_line",
    "serial_number": "serial_number",
    "purchase_date": "purchase_date",
}
_PROBLEM = {"symptom": "symptom", "frequency": "frequency", "environment": "environment"}
# Decision fields → columns, for the row's error report.
_FIELDS = {"product.purchase_date": "purchase_date", "warranty_status": "warranty_status"}


@dataclass(frozen=True)
class IntakePart:
    received_at: datetime | None
    request: domain.NewTicket | None
    diagnosed_at: datetime | None = None
    diagnosis: domain.Diagnosis | None = None


def _request(f: Fields) -> domain.NewTicket | None:
    customer = f.model(
        Customer,
        _CUSTOMER,
        name=f.text("customer_name", required=True, max_length=200),
        phone=f.text("customer_phone", required=True),
    )
    address = f.model(
        Address,
        _ADDRESS,
        line=f.text("address_line", required=True, max_length=200),
        city=f.text("city", max_length=200),
        postcode=f.text("postcode", max_length=20),
        region=f.text("region", required=True),
    )
    product = f.model(
        Product,
        _PRODUCT,
        model=f.text("product_model", required=True, max_length=200),
        product_line=f.text("product_line", max_length=200),
        serial_number=f.text("serial_number", max_length=200),
        purchase_date=f.day("purchase_date", required=True),
    )
    problem = f.model(
        Problem,
        _PROBLEM,
        symptom=f.text("symptom", required=True),
        frequency=f.text("frequency", max_length=200) or NOT_RECORDED,
        environment=f.text("environment", max_length=200) or NOT_RECORDED,
    )
    urgency = f.choice("urgency", Urgency, required=True)
    channel = f.choice("channel", Channel, required=True)
    warranty = f.choice("warranty_status", WarrantyStatus)
    if None in (customer, address, product, problem, urgency, channel):
        return None
    return domain.NewTicket(customer, address, product, problem, urgency, channel, warranty)  # type: ignore[arg-type]


def _diagnosis(f: Fields) -> domain.Diagnosis | None:
    columns = ("category", "complexity", "resolution_path")
    if not f.given("diagnosed_at"):
        f.given_without("diagnosed_at", (*columns, "expected_parts", "diagnosis_notes"))
        return None
    category = f.choice("category", FaultCategory, required=True)
    complexity = f.choice("complexity", Complexity, required=True)
    path = f.choice("resolution_path", ResolutionPath, required=True)
    expected = tuple(f.items("expected_parts"))
    notes = f.text("diagnosis_notes")
    if category is None or complexity is None or path is None:
        return None
    return domain.Diagnosis(category, complexity, path, expected, notes)


def parse(f: Fields, _context: KindContext) -> IntakePart:
    return IntakePart(
        received_at=f.timestamp("received_at", required=True),
        request=_request(f),
        diagnosed_at=f.timestamp("diagnosed_at"),
        diagnosis=_diagnosis(f),
    )


def times(part: IntakePart) -> list[tuple[str, datetime | None]]:
    return [("received_at", part.received_at), ("diagnosed_at", part.diagnosed_at)]


def gather(_conn: Connection, _rows: Sequence[TicketRow], context: KindContext) -> Settings:
    return context.settings


def decide(
    row: TicketRow, state: TicketState, settings: Settings, _context: KindContext
) -> Decided:
    part: IntakePart = row.parts["intake"]
    assert part.request is not None and part.received_at is not None
    command = commands.receipt_command(
        settings, part.request, ticket_number=row.ticket_number, received_at=part.received_at
    )
    events: list[PendingEvent]
    events, state = guarded(
        row.line,
        "received_at",
        lambda: run_at(TICKETS, state, command, domain.decide_receive, part.received_at),
        _FIELDS,
    )
    if part.diagnosis is None or part.diagnosed_at is None:
        return events, state
    diagnose = commands.diagnosis_command(settings, part.diagnosis)
    diagnosed, state = guarded(
        row.line,
        "diagnosed_at",
        lambda: run_at(TICKETS, state, diagnose, domain.decide_diagnose, part.diagnosed_at),
    )
    return events + diagnosed, state


def export(view: TicketHistoryView) -> dict[str, Any]:
    received, diagnosis = view.state.received, view.state.diagnosis
    assert received is not None
    out: dict[str, Any] = {
        "received_at": view.state.received_at,
        "customer_name": received.customer.name,
        "customer_phone": received.customer.phone,
        "address_line": received.address.line,
        "city": received.address.city,
        "postcode": received.address.postcode,
        "region": received.address.region,
        "product_model": received.product.model,
        "product_line": received.product.product_line,
        "serial_number": received.product.serial_number,
        "purchase_date": received.product.purchase_date,
        "warranty_status": received.warranty_status.value,
        "symptom": received.problem.symptom,
        "frequency": received.problem.frequency,
        "environment": received.problem.environment,
        "urgency": received.urgency.value,
        "channel": received.channel.value,
    }
    if diagnosis is not None:
        out |= {
            "diagnosed_at": view.latest["TicketDiagnosed"][1],
            "category": diagnosis.category.value,
            "complexity": diagnosis.complexity.value,
            "resolution_path": diagnosis.resolution_path.value,
            "expected_parts": list(diagnosis.expected_parts),
            "diagnosis_notes": diagnosis.notes,
        }
    return out


HISTORY = HistoryStep("intake", COLUMNS, parse, times, gather, decide, export)

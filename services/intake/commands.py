"""Intake's command handlers: gather the facts a decision needs, then run it through the
service's executor — inside the caller's unit of work (one transaction)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from services.intake import domain
from services.intake.read_models import find_open_duplicate
from services.intake.tables import ticket_number_counters
from shared.app.config import Settings
from shared.app.executor import Handling, Outcome
from shared.kernel.ids import uuid7
from shared.kernel.ticket import TICKETS, TicketState


@cache
def _take_number(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    counters = ticket_number_counters
    statement = insert(counters).values(day=bindparam("day"), last_number=1)
    return statement.on_conflict_do_update(
        index_elements=[counters.c.day], set_={"last_number": counters.c.last_number + 1}
    ).returning(counters.c.last_number)


def next_ticket_number(conn: Connection, now: datetime, prefix: str) -> str:
    """``TL-YYYYMMDD-NNNNNN``: unique, and sorts by day (UTC) then arrival."""
    day = now.strftime("%Y%m%d")
    number = conn.execute(_take_number(conn.dialect.name), {"day": day}).scalar_one()
    return f"{prefix}-{day}-{number:06d}"


def receipt_command(
    settings: Settings,
    request: domain.NewTicket,
    *,
    ticket_number: str,
    received_at: datetime,
    possible_duplicate_of: str | None = None,
) -> domain.ReceiveTicket:
    """The receipt with the configured figures (also for imported history)."""
    return domain.ReceiveTicket(
        request,
        ticket_number=ticket_number,
        received_at=received_at,
        response_hours=settings.sla.response_hours(request.urgency.value),
        warranty_months=settings.warranty_months(request.product.model),
        possible_duplicate_of=possible_duplicate_of,
    )


def receive(conn: Connection, h: Handling, request: domain.NewTicket) -> Outcome[TicketState]:
    settings, now = h.settings, h.now()
    command = receipt_command(
        settings,
        request,
        ticket_number=next_ticket_number(conn, now, settings.ticket_number_prefix),
        received_at=now,
        possible_duplicate_of=find_open_duplicate(
            conn, request.customer.phone, request.product.serial_number, request.product.model
        ),
    )
    return h.execute(conn, TICKETS, str(uuid7()), command, domain.decide_receive)


def diagnosis_command(settings: Settings, diagnosis: domain.Diagnosis) -> domain.DiagnoseTicket:
    hours = settings.sla.resolution_hours(diagnosis.complexity.value)
    return domain.DiagnoseTicket(diagnosis, resolution_hours=hours)


def diagnose(
    conn: Connection, h: Handling, ticket_id: str, diagnosis: domain.Diagnosis
) -> Outcome[TicketState]:
    command = diagnosis_command(h.settings, diagnosis)
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_diagnose)


def correct_contact(
    conn: Connection, h: Handling, ticket_id: str, command: domain.CorrectContactDetails
) -> Outcome[TicketState]:
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_correct_contact)

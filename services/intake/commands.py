"""Intake's command handlers: gather the facts a decision needs, then run it through the
service's executor — inside the caller's unit of work (one transaction)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection

from services.intake import domain, read_models
from services.intake.read_models import find_open_duplicate
from services.intake.tables import ticket_number_counters
from shared.app.config import Settings
from shared.app.executor import Handling, Outcome
from shared.eventstore.driver import Statement
from shared.kernel.errors import NotFound
from shared.kernel.events.customers import customer_stream_id
from shared.kernel.ids import uuid7_text
from shared.kernel.lifecycle import TicketStatus
from shared.kernel.sla import SlaPin, SlaTerms
from shared.kernel.ticket import TICKETS, TicketState
from shared.readmodels.ticket_state import ticket_state

# Plain SQL on the driver (both databases speak it): one per new ticket, where
# SQLAlchemy's per-statement work cost more than the upsert.
_TAKE_NUMBER = Statement(
    f"INSERT INTO {ticket_number_counters.name} (day, last_number) VALUES (:day, 1) "
    "ON CONFLICT (day) DO UPDATE SET last_number = "
    f"{ticket_number_counters.name}.last_number + 1 RETURNING last_number"
)

_NUMBER_TAKEN = Statement(f"SELECT 1 FROM {ticket_state.name} WHERE ticket_number = :number")
_HIGHEST_OF_DAY = Statement(
    f"SELECT max(ticket_number) FROM {ticket_state.name} "
    "WHERE ticket_number BETWEEN :low AND :high AND length(ticket_number) = :length"
)
_MOVE_PAST = Statement(
    f"UPDATE {ticket_number_counters.name} SET last_number = :highest "
    "WHERE day = :day AND last_number < :highest"
)
_LAST_OF_DAY = 999_999


def next_ticket_number(conn: Connection, now: datetime, prefix: str) -> str:
    """``TL-YYYYMMDD-NNNNNN``: unique, and sorts by day (UTC) then arrival. Imported
    history may hold numbers of this form (an export of Ticketline itself, a legacy system
    numbering alike): the day's first number, or the first one met taken, moves the
    counter past the highest of them below the day's last number (a 999999 imported is
    stepped over once reached, not jumped to)."""
    day = now.strftime("%Y%m%d")
    stem = f"{prefix}-{day}-"
    number = int(_TAKE_NUMBER.scalar(conn, day))
    # The day's first number, or the first one met taken: once past the imported ones.
    jumped = number == 1 and _move_past_imported(conn, stem, day, number)
    if jumped:
        number = int(_TAKE_NUMBER.scalar(conn, day))
    while _NUMBER_TAKEN.scalar(conn, f"{stem}{number:06d}") is not None:
        if not jumped:
            jumped = True
            _move_past_imported(conn, stem, day, number)
        number = int(_TAKE_NUMBER.scalar(conn, day))
    return f"{stem}{number:06d}"


def _move_past_imported(conn: Connection, stem: str, day: str, number: int) -> bool:
    """Move the day's counter past its highest imported number below the day's last;
    whether it moved."""
    low, high = f"{stem}000000", f"{stem}{_LAST_OF_DAY - 1}"
    found = _HIGHEST_OF_DAY.scalar(conn, low, high, len(low))
    tail = found[len(stem) :] if isinstance(found, str) else ""
    if not tail.isdigit() or int(tail) <= number:
        return False
    _MOVE_PAST.execute(conn, int(tail), day, int(tail))
    return True


def phone_digest(conn: Connection, h: Handling, phone: str) -> str | None:
    """The blind index duplicates are found by (no clear number is stored anywhere)."""
    personal = h.executor.store.personal
    return personal.phone_digest(conn, phone) if personal is not None else None


def receipt_command(
    settings: Settings,
    request: domain.NewTicket,
    *,
    ticket_number: str,
    received_at: datetime,
    possible_duplicate_of: str | None = None,
    sla: SlaPin | None = None,
) -> domain.ReceiveTicket:
    """The receipt with the configured figures (also for imported history)."""
    return domain.ReceiveTicket(
        request,
        ticket_number=ticket_number,
        received_at=received_at,
        response_hours=settings.sla.response_hours(request.urgency.value),
        warranty_months=settings.warranty_months(request.product.model),
        possible_duplicate_of=possible_duplicate_of,
        sla=sla,
    )


def receive(conn: Connection, h: Handling, request: domain.NewTicket) -> Outcome[TicketState]:
    settings, now = h.settings, h.now()
    command = receipt_command(
        settings,
        request,
        ticket_number=next_ticket_number(conn, now, settings.ticket_number_prefix),
        received_at=now,
        possible_duplicate_of=find_open_duplicate(
            conn,
            phone_digest(conn, h, request.customer.phone),
            request.product.serial_number,
            request.product.model,
            request.address.region,
        ),
        sla=h.terms(conn).current(settings.sla.policy_id),
    )
    return h.execute(conn, TICKETS, uuid7_text(), command, domain.decide_receive)


def diagnosis_command(
    settings: Settings, diagnosis: domain.Diagnosis, terms: SlaTerms | None = None
) -> domain.DiagnoseTicket:
    """The diagnosis with the built-in policy's target and the ticket's pinned terms."""
    hours = settings.sla.resolution_hours(diagnosis.complexity.value)
    return domain.DiagnoseTicket(diagnosis, resolution_hours=hours, terms=terms)


def diagnose(
    conn: Connection, h: Handling, ticket_id: str, diagnosis: domain.Diagnosis
) -> Outcome[TicketState]:
    loaded = h.visible(conn, TICKETS, ticket_id)
    terms = h.terms(conn).for_ticket(loaded.state) if loaded.state.exists else None
    command = replace(diagnosis_command(h.settings, diagnosis, terms), made_at=h.now())
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_diagnose, loaded=loaded)


def correct_contact(
    conn: Connection, h: Handling, ticket_id: str, command: domain.CorrectContactDetails
) -> Outcome[TicketState]:
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_correct_contact)


# --- customers (data subjects) ------------------------------------------------------------


def _known_customer(conn: Connection, customer_id: str) -> None:
    if read_models.customer_key_row(conn, customer_id) is None:
        raise NotFound("customer_not_found", f"no customer {customer_id}")


def erase_customer(
    conn: Connection,
    h: Handling,
    customer_id: str,
    request_id: str,
    legal_basis: str,
    *,
    source: str = "request",
    after_restore: bool = False,
) -> Outcome[domain.CustomerState]:
    """Record ``CustomerDataErased`` and destroy the customer's data key, in one unit of
    work; erasing again records nothing (the outcome's state holds the first erasure)."""
    _known_customer(conn, customer_id)
    h.personal().hold_customer(conn, customer_id)  # before reading which tickets are open
    tickets = read_models.customer_tickets(conn, customer_id)
    command = domain.EraseCustomer(
        request_id,
        legal_basis,
        tickets=tuple(t.ticket_id for t in tickets),
        open_tickets=tuple(t.ticket_id for t in tickets if t.status != TicketStatus.closed),
        source=source,
        after_restore=after_restore,
    )
    stream = customer_stream_id(customer_id)
    outcome = h.execute(conn, domain.CUSTOMERS, stream, command, domain.decide_erase)
    if outcome.events:  # the key's erasure time is the event's
        erased_at = outcome.after.erased_at or h.now()
        h.personal().erase(conn, customer_id, erased_at, command.tickets)
    return outcome


def set_legal_hold(
    conn: Connection, h: Handling, customer_id: str, command: domain.SetLegalHold
) -> Outcome[domain.CustomerState]:
    _known_customer(conn, customer_id)
    stream = customer_stream_id(customer_id)
    outcome = h.execute(conn, domain.CUSTOMERS, stream, command, domain.decide_legal_hold)
    if outcome.events:
        h.personal().set_legal_hold(conn, customer_id, command.active)
    return outcome

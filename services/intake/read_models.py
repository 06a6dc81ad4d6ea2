"""Intake's reads: the ticket-state projection, filtered and paginated by keyset."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, false, func, select, true

from shared.app.config import SlaSettings
from shared.app.read_log import read_log
from shared.eventstore.driver import Statement
from shared.eventstore.ledger import EventStore
from shared.eventstore.personal.tables import personal_data_keys, personal_data_phones
from shared.kernel.events.customers import customer_stream_id
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.lifecycle import TicketStatus
from shared.kernel.sla import SlaClock
from shared.kernel.ticket import OPEN_STATUSES
from shared.readmodels.paging import after_cursor, next_page
from shared.readmodels.planning import checked_only_if
from shared.readmodels.sla import TermsReader, ticket_clock
from shared.readmodels.ticket_state import apply_changes, ticket_state


@dataclass(frozen=True)
class TicketFilters:
    status: str | None = None
    region: str | None = None
    # A technician's list: only the tickets assigned to them.
    technician_id: str | None = None
    urgency: str | None = None
    # The blind index of the phone searched for (PersonalData.phone_digest); "" = none
    # recorded: nothing matches.
    phone_digest: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def ticket_row_as_of(
    conn: Connection, store: EventStore, ticket_id: str, as_of: datetime
) -> dict[str, Any] | None:
    """The ticket-state row as it stood at ``as_of`` (events recorded until then)."""
    row: dict[str, Any] | None = None
    for event in store.read_stream(conn, ticket_id, recorded_until=as_of):
        row = apply_changes(row, event)
    return row


def ticket_sla(
    conn: Connection,
    store: EventStore,
    sla: SlaSettings,
    ticket_id: str,
    at: datetime,
    as_of: datetime | None = None,
) -> SlaClock | None:
    """The ticket's SLA clock at ``at`` (the events recorded until ``as_of``)."""
    reader = TermsReader.configured(conn, store, sla)
    found = ticket_clock(reader, ticket_id, at, as_of=as_of)
    return found[1] if found is not None else None


def get_ticket_row(conn: Connection, ticket_id: str) -> Any:
    query = select(ticket_state).where(ticket_state.c.ticket_id == ticket_id)
    return conn.execute(query).first()


def list_ticket_rows(
    conn: Connection, filters: TicketFilters, *, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """Newest first. The cursor is the last row's (created_at, ticket_id), so tickets
    created while a client pages never shift the pages it has not read yet."""
    t = ticket_state.c
    query = select(ticket_state).order_by(t.created_at.desc(), t.ticket_id.desc()).limit(limit + 1)
    conditions = []
    # The narrowest filter leads: a customer's tickets (phone), else a technician's; the
    # broad ones are then checked on those rows (planning.py says why).
    by_phone = filters.phone_digest is not None
    narrow = by_phone or filters.technician_id is not None
    if filters.status:
        conditions.append(checked_only_if(narrow, t.status) == filters.status)
    if filters.region:
        conditions.append(checked_only_if(narrow, t.region) == filters.region)
    if filters.technician_id:
        conditions.append(checked_only_if(by_phone, t.technician_id) == filters.technician_id)
    if filters.urgency:
        conditions.append(checked_only_if(narrow, t.urgency) == filters.urgency)
    if filters.phone_digest is not None:
        conditions.append(with_phone(filters.phone_digest))
    if filters.created_from:
        conditions.append(t.created_at >= filters.created_from)
    if filters.created_to:
        conditions.append(t.created_at < filters.created_to)
    if cursor:
        conditions.append(after_cursor(cursor, t.created_at, t.ticket_id, descending=True))
    if conditions:
        query = query.where(and_(*conditions))
    return next_page(list(conn.execute(query).all()), limit, "created_at", "ticket_id")


def with_phone(digest: Any) -> Any:
    """Tickets of the customers recorded with this phone (blind index, no clear number)."""
    if digest == "":
        return false()
    phones = personal_data_phones.c
    return ticket_state.c.customer_id.in_(select(phones.customer_id).where(phones.digest == digest))


def _open_duplicate_sql(same: str) -> Statement:
    """The first open ticket of the customers with this phone (blind index) in the region
    that is also ``same``. Plain SQL run on the driver: every new ticket asks it, and
    SQLAlchemy's per-execution work (the expanded status list) cost more than the query.

    SQLite plans without statistics and liked the region's (or the open tickets') index,
    walking every ticket of the region per new ticket. The customers' own tickets (a
    handful, whatever the table's size) are the one way in: the join is ``CROSS`` (SQLite
    keeps the phones outside) and the other columns are compared as ``x || ''``, which no
    index serves."""
    statuses = ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATUSES, key=lambda s: s.value))
    return Statement(
        "SELECT t.ticket_id FROM personal_data_phones p CROSS JOIN ticket_state t "
        "WHERE p.digest = :phone AND t.customer_id = p.customer_id "
        f"AND {same} AND t.region || '' = :region AND t.status || '' IN ({statuses}) "
        "ORDER BY t.created_at LIMIT 1"
    )


# Built once: every new ticket asks one of these.
_SAME_SERIAL = _open_duplicate_sql("upper(t.serial_number) || '' = upper(:serial)")
_SAME_MODEL = _open_duplicate_sql("t.product_model || '' = :model")


def find_open_duplicate(
    conn: Connection,
    phone_digest: str | None,
    serial_number: str | None,
    model: str,
    region: str,
) -> str | None:
    """An open ticket for the same phone (its blind index) and serial (or model when no
    serial is given) in the new ticket's region: the hint is recorded on the ticket, and
    everyone who reads it may see that region's tickets, never another's."""
    if phone_digest is None:
        return None
    if serial_number:
        found = _SAME_SERIAL.scalar(conn, phone_digest, serial_number, region)
    else:
        found = _SAME_MODEL.scalar(conn, phone_digest, model, region)
    return None if found is None else str(found)


# --- customers (data subjects) ------------------------------------------------------------


def customer_key_row(conn: Connection, customer_id: str) -> Any:
    """The customer's row in the key table (None: no such customer)."""
    k = personal_data_keys.c
    query = select(k.customer_id, k.created_at, k.erased_at, k.legal_hold).where(
        k.customer_id == customer_id
    )
    return conn.execute(query).first()


def customers_sharing_a_phone(conn: Connection, customer_id: str) -> list[str]:
    """The other customers recorded with one of this customer's phones (blind index)."""
    mine, theirs = personal_data_phones.alias("mine"), personal_data_phones.alias("theirs")
    query = (
        select(theirs.c.customer_id)
        .join(mine, mine.c.digest == theirs.c.digest)
        .where(mine.c.customer_id == customer_id, theirs.c.customer_id != customer_id)
        .distinct()
        .order_by(theirs.c.customer_id)
    )
    return list(conn.execute(query).scalars())


def customer_tickets(conn: Connection, customer_id: str) -> list[Any]:
    t = ticket_state.c
    query = (
        select(ticket_state).where(t.customer_id == customer_id).order_by(t.created_at, t.ticket_id)
    )
    return list(conn.execute(query).all())


def retention_candidates(
    conn: Connection, closed_before: datetime, limit: int, customer_id: str | None = None
) -> list[str]:
    """Customers due for erasure by retention: every ticket closed, the last one before
    ``closed_before``, not under legal hold, not yet erased (``customer_id``: is this one?)."""
    k, t = personal_data_keys.c, ticket_state.c
    still_open = func.sum(case((t.status != TicketStatus.closed.value, 1), else_=0))
    query = (
        select(k.customer_id)
        .join(ticket_state, t.customer_id == k.customer_id)
        .where(k.wrapped_key.is_not(None), k.legal_hold.is_(False))
        .where(k.customer_id == customer_id if customer_id else true())
        .group_by(k.customer_id)
        .having(still_open == 0, func.max(t.closed_at) < closed_before)
        .order_by(k.customer_id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


@dataclass(frozen=True)
class CustomerData:
    """What subject access returns (personal fields opened)."""

    key: Any
    tickets: list[dict[str, Any]]
    events: list[EventEnvelope]
    privacy_events: list[EventEnvelope]
    reads: list[Any]
    sharing_a_phone: list[str]


def customer_data(conn: Connection, store: EventStore, customer_id: str) -> CustomerData | None:
    """Everything held about the customer, in one read: the tickets (current values), every
    event of them and of the customer's own stream, opened; and the read log's entries."""
    key = customer_key_row(conn, customer_id)
    if key is None:
        return None
    tickets = [dict(r._mapping) for r in customer_tickets(conn, customer_id)]
    stored = [e for t in tickets for e in store.read_stream(conn, t["ticket_id"])]
    own = store.read_stream(conn, customer_stream_id(customer_id))
    columns = ("customer_name", "customer_phone", "address_line")
    opened = store.personal.open_tokens(conn, [t[c] for t in tickets for c in columns])
    for ticket in tickets:
        ticket.update({c: opened.get(ticket[c], ticket[c]) for c in columns})
    reads = read_log(conn, customer_id=customer_id, limit=100_000)
    sharing = customers_sharing_a_phone(conn, customer_id)
    return CustomerData(key, tickets, store.open(conn, stored), own, reads, sharing)

"""Intake's reads: the ticket-state projection, filtered and paginated by keyset."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select

from shared.app.config import SlaSettings
from shared.eventstore.ledger import EventStore
from shared.kernel.errors import InvalidCommand
from shared.kernel.sla import SlaClock
from shared.kernel.ticket import OPEN_STATUSES
from shared.readmodels.sla import TermsReader, ticket_clock
from shared.readmodels.ticket_state import apply_changes, ticket_state


@dataclass(frozen=True)
class TicketFilters:
    status: str | None = None
    region: str | None = None
    # A technician's list: only the tickets assigned to them.
    technician_id: str | None = None
    urgency: str | None = None
    phone: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def encode_cursor(created_at: datetime, ticket_id: str) -> str:
    raw = f"{created_at.isoformat()}|{ticket_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, ticket_id = raw.split("|", 1)
        return datetime.fromisoformat(created), ticket_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCommand("cursor", "not a cursor this service issued") from None


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
    reader = TermsReader(conn, store, sla.builtin_policy(), sla.horizon)
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
    if filters.status:
        conditions.append(t.status == filters.status)
    if filters.region:
        conditions.append(t.region == filters.region)
    if filters.technician_id:
        conditions.append(t.technician_id == filters.technician_id)
    if filters.urgency:
        conditions.append(t.urgency == filters.urgency)
    if filters.phone:
        conditions.append(t.customer_phone == filters.phone)
    if filters.created_from:
        conditions.append(t.created_at >= filters.created_from)
    if filters.created_to:
        conditions.append(t.created_at < filters.created_to)
    if cursor:
        created, ticket_id = decode_cursor(cursor)
        conditions.append(
            or_(t.created_at < created, and_(t.created_at == created, t.ticket_id < ticket_id))
        )
    if conditions:
        query = query.where(and_(*conditions))
    rows = list(conn.execute(query).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].ticket_id)
    return rows, next_cursor


def _open_duplicate(same: Any) -> Any:
    t = ticket_state.c
    return (
        select(t.ticket_id)
        .where(
            t.customer_phone == bindparam("phone"),
            same,
            t.status.in_([s.value for s in OPEN_STATUSES]),
        )
        .order_by(t.created_at)
        .limit(1)
    )


# Built once: every new ticket asks one of these.
_SAME_SERIAL = _open_duplicate(ticket_state.c.serial_number == bindparam("serial"))
_SAME_MODEL = _open_duplicate(ticket_state.c.product_model == bindparam("model"))


def find_open_duplicate(
    conn: Connection, phone: str, serial_number: str | None, model: str
) -> str | None:
    """An open ticket for the same phone and serial (or model when no serial is given)."""
    if serial_number:
        return conn.execute(_SAME_SERIAL, {"phone": phone, "serial": serial_number}).scalar()
    return conn.execute(_SAME_MODEL, {"phone": phone, "model": model}).scalar()

"""Showing personal data in a response: open the sealed values (one query for the keys,
inside the route's own unit of work), mask what the caller's role sees masked, and put
every customer whose data the response shows unmasked in the read log.

    rows = await platform.db.read(lambda c: open_rows(c, platform, list_rows(c, ...)))
    disclosure = Disclosure(request, principal)
    items = [view(disclosure.row(r)) for r in rows]
    disclosure.record()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import Connection

from shared.app.observability import correlation_var
from shared.app.read_log import Read
from shared.http.auth.personal_data import READ_MODEL_COLUMNS, mask_value, shown_in_clear
from shared.http.context import Principal
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import UnknownEventType, payload_class
from shared.kernel.personal import (
    MARKERS,
    Kind,
    get_path,
    is_sealed,
    personal_fields,
    replace_paths,
)

if TYPE_CHECKING:
    from shared.app.platform import Platform


def open_rows(
    conn: Connection,
    platform: Platform,
    rows: Iterable[Any],
    columns: Mapping[str, Kind] = READ_MODEL_COLUMNS,
) -> list[dict[str, Any]]:
    """Read-model rows as dicts with their personal columns opened (a step of the route's
    unit of work: the keys they need are loaded with one query)."""
    found = [dict(r) if isinstance(r, Mapping) else dict(r._mapping) for r in rows]
    tokens = [row.get(c) for row in found for c in columns]
    opened = platform.personal.open_tokens(conn, tokens)
    for row in found:
        for column in columns:
            value = row.get(column)
            if isinstance(value, str) and value in opened:
                row[column] = opened[value]
    return found


def open_row(conn: Connection, platform: Platform, row: Any) -> dict[str, Any] | None:
    return None if row is None else open_rows(conn, platform, [row])[0]


def _revealing(kind: Kind, value: Any) -> bool:
    return isinstance(value, str) and value not in MARKERS and not is_sealed(value)


class Disclosure:
    """What one response shows: masks values by the caller's role and remembers whose
    personal data went out unmasked; ``record`` puts that in the read log."""

    def __init__(self, request: Request, principal: Principal) -> None:
        self.request = request
        self.principal = principal
        # (customer, ticket) pairs, in the order shown: a list of one customer's tickets
        # is a read of each of them.
        self.seen: dict[tuple[str, str | None], None] = {}

    def show(self, customer_id: str | None, ticket_id: str | None = None) -> None:
        if customer_id:
            self.seen[(customer_id, ticket_id)] = None

    def row(
        self,
        row: dict[str, Any],
        columns: Mapping[str, Kind] = READ_MODEL_COLUMNS,
        *,
        ticket_id_column: str = "ticket_id",
    ) -> dict[str, Any]:
        """The row (opened) as the caller may see it."""
        sees = self.principal.sees_personal_data
        revealed = False
        for column, kind in columns.items():
            if column not in row:
                continue
            if shown_in_clear(kind, sees):
                revealed = revealed or _revealing(kind, row[column])
            else:
                row[column] = mask_value(kind, row[column])
        if revealed:
            self.show(row.get("customer_id"), row.get(ticket_id_column))
        return row

    def payload(
        self, event: EventEnvelope, customer_id: str | None, ticket_id: str | None = None
    ) -> dict[str, Any]:
        """An opened event's payload as the caller may see it."""
        try:
            fields = personal_fields(payload_class(event.event_type))
        except UnknownEventType:
            return event.payload
        sees = self.principal.sees_personal_data
        masked: dict[tuple[str, ...], Any] = {}
        for f in fields:
            value = get_path(event.payload, f.path)
            if not shown_in_clear(f.kind, sees):
                masked[f.path] = mask_value(f.kind, value)
            elif _revealing(f.kind, value):
                self.show(customer_id, ticket_id)
        return replace_paths(event.payload, masked) if masked else event.payload

    def record(self) -> None:
        """Log the customers this response showed (buffered; written off the request path)."""
        platform: Platform = self.request.app.state.platform
        if not self.seen or platform.reads is None:
            return
        route = self.request.scope.get("route")
        path = getattr(route, "path", self.request.url.path)
        endpoint = f"{self.request.method} {path}"
        at = platform.clock.now()
        service = str(getattr(self.request.app.state, "service", "unknown"))
        correlation = correlation_var.get()
        platform.reads.record(
            Read(
                read_at=at,
                customer_id=customer_id,
                actor_subject=self.principal.subject,
                actor_role=self.principal.role,
                service=service,
                endpoint=endpoint[:200],
                ticket_id=ticket_id,
                correlation_id=correlation,
            )
            for customer_id, ticket_id in self.seen
        )

"""Ticket-state projection: one row per ticket with status, key times, assignee, deadlines.

The personal columns (customer_name, customer_phone, address_line) hold the values as the
ledger stores them — sealed tokens (docs/personal-data.md) — so a rebuild gives the same
rows before and after an erasure; responses open them for callers who may see them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Column, Index, Integer, String, Table, Text

from shared.eventstore.db import UtcDateTime, metadata
from shared.eventstore.projection import Row, RowProjection
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import payload_dict
from shared.kernel.lifecycle import STATUS_AFTER_TEXT, TicketStatus

ticket_state = Table(
    "ticket_state",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("ticket_number", String(32), nullable=False, unique=True),
    Column("status", String(20), nullable=False),
    Column("region", String(32), nullable=False),
    Column("urgency", String(10), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("warranty_status", String(20), nullable=False),
    # The customer (data subject); null only for tickets received before version 2.
    Column("customer_id", String(36), nullable=True),
    Column("customer_name", Text, nullable=False),
    Column("customer_phone", Text, nullable=False),
    Column("address_line", Text, nullable=False),
    Column("product_model", String(200), nullable=False),
    Column("product_line", String(200), nullable=True),
    Column("serial_number", String(200), nullable=True),
    Column("category", String(20), nullable=True),
    Column("complexity", String(10), nullable=True),
    Column("resolution_path", String(20), nullable=True),
    Column("service_point_id", String(200), nullable=True),
    Column("technician_id", String(200), nullable=True),
    Column("appointment_start", UtcDateTime, nullable=True),
    Column("appointment_end", UtcDateTime, nullable=True),
    Column("repair_outcome", String(20), nullable=True),
    Column("satisfaction_score", Integer, nullable=True),
    Column("possible_duplicate_of", String(36), nullable=True),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("responded_at", UtcDateTime, nullable=True),
    Column("diagnosed_at", UtcDateTime, nullable=True),
    Column("dispatched_at", UtcDateTime, nullable=True),
    Column("visited_at", UtcDateTime, nullable=True),
    Column("repaired_at", UtcDateTime, nullable=True),
    Column("followed_up_at", UtcDateTime, nullable=True),
    Column("closed_at", UtcDateTime, nullable=True),
    Column("response_due_at", UtcDateTime, nullable=False),
    Column("resolution_due_at", UtcDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_ticket_state_created_at_ticket_id", "created_at", "ticket_id"),
    # Every filter of the ticket list, ending in its order (migrations 0004, 0006).
    *(
        Index(
            f"ix_ticket_state_{'_'.join(columns)}_created_at_ticket_id",
            *columns,
            "created_at",
            "ticket_id",
        )
        for columns in (
            ("status",),
            ("region",),
            ("region", "status"),
            ("urgency",),
            ("technician_id",),
            # A customer's tickets (phone search goes through the blind index to these).
            ("customer_id",),
        )
    ),
    Index("ix_ticket_state_serial_number", "serial_number"),
    # The console's board and SLA lists: a status and region's tickets in deadline order
    # (migration 0007).
    *(
        Index(
            f"ix_ticket_state_status_region_{deadline}", "status", "region", deadline, "ticket_id"
        )
        for deadline in ("response_due_at", "resolution_due_at", "repaired_at")
    ),
)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _received_row(event: EventEnvelope, p: dict[str, Any]) -> Row:
    customer, address, product = p["customer"], p["address"], p["product"]
    return {
        "ticket_id": event.stream_id,
        "ticket_number": p["ticket_number"],
        "region": address["region"],
        "urgency": p["urgency"],
        "channel": p["channel"],
        "warranty_status": p["warranty_status"],
        "customer_id": p.get("customer_id"),
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "address_line": address["line"],
        "product_model": product["model"],
        "product_line": product.get("product_line"),
        "serial_number": product.get("serial_number"),
        "category": None,
        "complexity": None,
        "resolution_path": None,
        "service_point_id": None,
        "technician_id": None,
        "appointment_start": None,
        "appointment_end": None,
        "repair_outcome": None,
        "satisfaction_score": None,
        "possible_duplicate_of": p.get("possible_duplicate_of"),
        "reopen_count": 0,
        "created_at": event.occurred_at,
        "responded_at": None,
        "diagnosed_at": None,
        "dispatched_at": None,
        "visited_at": None,
        "repaired_at": None,
        "followed_up_at": None,
        "closed_at": None,
        "response_due_at": _time(p["response_due_at"]),
        "resolution_due_at": None,
    }


def _changes(row: Row, event: EventEnvelope, p: dict[str, Any]) -> Row:
    """The columns one event sets on an existing row besides its status (which the
    lifecycle table moves); the payload as stored (JSON types)."""
    at = event.occurred_at
    match event.event_type:
        case "ContactDetailsCorrected":
            values: Row = {}
            if customer := p.get("customer"):
                values |= {"customer_name": customer["name"], "customer_phone": customer["phone"]}
            if address := p.get("address"):
                values |= {"address_line": address["line"], "region": address["region"]}
            return values
        case "TicketDiagnosed":
            return {
                "category": p["category"],
                "complexity": p["complexity"],
                "resolution_path": p["resolution_path"],
                "diagnosed_at": at,
                "resolution_due_at": _time(p["resolution_due_at"]),
                # First contact with the customer is the (first) diagnosis call.
                "responded_at": row["responded_at"] or at,
            }
        case "TicketDispatched":
            return {
                "service_point_id": p["service_point_id"],
                "technician_id": p["technician_id"],
                "appointment_start": _time(p["appointment_start"]),
                "appointment_end": _time(p["appointment_end"]),
                "dispatched_at": at,
            }
        case "TicketVisited":
            return {"visited_at": _time(p["arrived_at"])}
        case "TicketRepaired":
            return {
                "repair_outcome": p["outcome"],
                "repaired_at": at,
            }
        case "FollowUpRecorded":
            return {
                "satisfaction_score": p["satisfaction_score"],
                "followed_up_at": at,
            }
        case "TicketReopened":
            return {
                "reopen_count": row["reopen_count"] + 1,
                "closed_at": None,
            }
        case "TicketClosed":
            return {"closed_at": at}
    return {}


def apply_changes(row: Row | None, event: EventEnvelope) -> Row | None:
    """The ticket's row after one more event: the one definition shared by the projection
    and as-of reads (folding a stream up to a time). Updates ``row`` in place (its owner
    folds a stream or a batch)."""
    p = payload_dict(event)
    if event.event_type == "TicketReceived":
        row = _received_row(event, p)
        row["status"] = TicketStatus.received.value
    elif row is None:
        return None
    else:
        row.update(_changes(row, event, p))
        row["status"] = STATUS_AFTER_TEXT.get(event.event_type, row["status"])
    row["version"] = event.stream_version
    row["updated_at"] = event.recorded_at
    return row


class TicketStateProjection(RowProjection):
    name: ClassVar[str] = "ticket_state"
    tables: ClassVar[tuple[Table, ...]] = (ticket_state,)
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)
    table: ClassVar[Table] = ticket_state
    envelope_fields: ClassVar[frozenset[str]] = frozenset(
        {"stream_id", "stream_version", "event_type", "schema_version"}
        | {"occurred_at", "recorded_at", "payload"}
    )

    def key(self, event: EventEnvelope) -> tuple[str]:
        return (event.stream_id,)

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        return apply_changes(row, event)

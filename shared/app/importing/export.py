"""Export in the import formats (``ticketline export --kind …``): what Ticketline holds,
written as the rows ``ticketline import`` reads, so export → import into an empty ledger
reproduces the read models (docs/import/README.md says what a row cannot carry).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from sqlalchemy import Connection, select

from shared.app.importing.cells import spreadsheet_text
from shared.app.importing.kinds import Kind
from shared.eventstore.driver import rows_tolerating_damage
from shared.eventstore.ledger import EventStore, row_to_envelope
from shared.eventstore.tables import events
from shared.kernel.clock import iso_utc
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import payload_class, typed_payload
from shared.kernel.events.sla import SlaPaused, SlaPolicyApplied, SlaResumed, SlaWarning
from shared.kernel.events.tickets import (
    FollowUpRecorded,
    OldPartReturned,
    OldPartReturnOverdue,
    RepeatRepairFlagged,
    SlaBreached,
    TicketClosed,
    TicketDiagnosed,
    TicketDispatched,
    TicketEscalated,
    TicketReceived,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
)
from shared.kernel.personal import ERASED, MARKERS, personal_tree, personal_values
from shared.kernel.ticket import TICKETS
from shared.readmodels.ticket_state import ticket_state

# The steps one row holds, in order, each at most once; the close or reopen follows the
# follow-up. Facts the import decides again (SLA breaches, escalations, repeat flags),
# old-part returns, and the SLA terms a row cannot hold (the policy a ticket was pinned
# to, its clock's pauses and warnings: ``NOT_CARRIED``) are not steps.
ROW_STEPS = (
    TicketReceived.event_type,
    TicketDiagnosed.event_type,
    TicketDispatched.event_type,
    TicketVisited.event_type,
    TicketRepaired.event_type,
    FollowUpRecorded.event_type,
)
ENDINGS = frozenset({TicketClosed.event_type, TicketReopened.event_type})
SLA_TERMS = {
    SlaPolicyApplied.event_type: "its SLA policy",
    SlaPaused.event_type: "its clock's pauses",
    SlaResumed.event_type: "its clock's pauses",
    SlaWarning.event_type: "its SLA warnings",
}
NOT_STEPS = frozenset(
    {
        SlaBreached.event_type,
        TicketEscalated.event_type,
        RepeatRepairFlagged.event_type,
        OldPartReturned.event_type,
        OldPartReturnOverdue.event_type,
        *SLA_TERMS,
    }
)
# A row cannot name the SLA policy version a ticket runs on, nor its clock's pauses:
# imported, the ticket runs on the built-in policy without them. Its row is written, and
# the summary counts it.
NOT_CARRIED = "not_carried"


@dataclass(frozen=True)
class Unrepresentable:
    """A record the kind's row format cannot hold (left out of the export, reported)."""

    key: str
    reason: str


@dataclass
class ExportSummary:
    kind: str
    rows: int = 0
    left_out: list[Unrepresentable] = field(default_factory=list)
    # Rows written without something the ticket holds (its SLA terms): a count and the
    # first examples (most tickets, once a policy exists).
    not_carried: int = 0
    not_carried_examples: list[Unrepresentable] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "left_out": len(self.left_out),
            "left_out_examples": [u.__dict__ for u in self.left_out[:20]],
            "not_carried": self.not_carried,
            "not_carried_examples": [u.__dict__ for u in self.not_carried_examples],
        }


def one_row(types: Sequence[str]) -> str | None:
    """Why a ticket's event types do not fit one row (None: they do)."""
    steps = [t for t in types if t not in NOT_STEPS]
    position = 0
    for index, kind in enumerate(steps):
        if kind in ENDINGS:
            if index != len(steps) - 1:  # reopened (a complaint), or written on after the end
                return f"{steps[index + 1]} after {kind} (a row's ticket ends there)"
            if not index or steps[index - 1] != FollowUpRecorded.event_type:
                return f"{kind} not right after the follow-up"
            continue
        if kind not in ROW_STEPS[position:]:
            return f"{kind} more than once or out of the row's order"
        position = ROW_STEPS.index(kind) + 1
    return None


def export_tickets(
    conn: Connection, steps: Sequence[Any], store: EventStore, page: int = 500
) -> Iterator[dict[str, Any] | Unrepresentable]:
    """Every ticket, in order of receipt, a page of streams per query; personal data in
    clear (what the import reads); a ticket whose customer was erased is left out."""
    from shared.app.importing.tickets import TicketHistoryView

    t = ticket_state.c
    after: tuple[datetime, str] | None = None
    while True:
        query = (
            select(t.ticket_id, t.ticket_number, t.created_at)
            .order_by(t.created_at, t.ticket_id)
            .limit(page)
        )
        if after is not None:
            query = query.where(
                (t.created_at > after[0]) | ((t.created_at == after[0]) & (t.ticket_id > after[1]))
            )
        tickets = list(conn.execute(query))
        if not tickets:
            return
        after = (tickets[-1].created_at, tickets[-1].ticket_id)
        streams = _streams(conn, store, [r.ticket_id for r in tickets])
        for ticket in tickets:
            envelopes = streams.get(ticket.ticket_id, [])
            # Erasure first: whatever else keeps the ticket out, it is the customer's right.
            why = _hidden_personal_data(envelopes) or one_row([e.event_type for e in envelopes])
            if why is not None:
                yield Unrepresentable(ticket.ticket_number, why)
                continue
            latest = {e.event_type: (typed_payload(e), e.occurred_at) for e in envelopes}
            view = TicketHistoryView(
                ticket.ticket_id, TICKETS.fold(ticket.ticket_id, envelopes), latest
            )
            row: dict[str, Any] = {
                "ticket_number": ticket.ticket_number,
                "ticket_id": ticket.ticket_id,
            }
            for step in steps:
                row |= step.export(view)
            dropped = dict.fromkeys(
                SLA_TERMS[e.event_type] for e in envelopes if e.event_type in SLA_TERMS
            )
            if dropped:
                row[NOT_CARRIED] = (
                    f"{', '.join(dropped)}: imported, the ticket runs on the built-in policy"
                )
            yield row


def _hidden_personal_data(envelopes: Sequence[EventEnvelope]) -> str | None:
    """Why the ticket cannot be imported as it stands: the import needs a customer's clear
    name and phone, and an erased (or unreadable) customer's read as a placeholder."""
    hidden = {
        value
        for e in envelopes
        for _, value in personal_values(e.payload, personal_tree(payload_class(e.event_type)))
        if value in MARKERS
    }
    if ERASED in hidden:
        return "the customer's personal data is erased"
    return "the customer's data key is unreadable" if hidden else None


def _streams(conn: Connection, store: EventStore, ids: Sequence[str]) -> dict[str, list[Any]]:
    e = events.c
    query = select(events).where(e.stream_id.in_(list(ids))).order_by(e.stream_id, e.stream_version)
    found: dict[str, list[Any]] = {}
    rows = rows_tolerating_damage(conn, query)
    stored = [row_to_envelope(tuple(row)) for row in rows]
    for envelope in store.open(conn, stored):
        found.setdefault(envelope.stream_id, []).append(envelope)
    return found


def text_value(value: Any) -> str:
    """A value as a CSV cell of the import formats."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return str(value)


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def write_rows(
    out: TextIO, kind: Kind, rows: Iterator[Mapping[str, Any] | Unrepresentable], fmt: str
) -> ExportSummary:
    summary = ExportSummary(kind.name)
    names = [c.name for c in kind.columns]
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(names)
    for row in rows:
        if isinstance(row, Unrepresentable):
            summary.left_out.append(row)
            continue
        if (why := row.get(NOT_CARRIED)) is not None:
            summary.not_carried += 1
            if len(summary.not_carried_examples) < 20:
                example = Unrepresentable(str(row.get("ticket_number")), why)
                summary.not_carried_examples.append(example)
        if writer is not None:
            writer.writerow([spreadsheet_text(text_value(row.get(n))) for n in names])
        else:
            document = {n: json_value(row[n]) for n in names if row.get(n) is not None}
            out.write(orjson.dumps(document).decode() + "\n")
        summary.rows += 1
    return summary


def export_kind(
    conn: Connection, store: EventStore, kind: Kind, path: Path, fmt: str, now: datetime
) -> ExportSummary:
    with path.open("w", encoding="utf-8", newline="") as out:
        return write_rows(out, kind, kind.export(conn, now, store), fmt)

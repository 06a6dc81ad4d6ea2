"""Historical tickets: one row per ticket, turned into the events the services write.

A row holds a ticket's lifecycle in the replaced system — received, diagnosed,
dispatched, visited, repaired, followed up, closed — with the time of each step. Each
service owns its steps (``HistoryStep``, declared in its ``ServiceModule.history``): it
reads its columns, gathers the facts its decisions need for a batch, and runs its own
decide functions on the ticket's state as of each step's time. So an impossible history
(a repair before the receipt, a follow-up without a repair, an on-site repair without a
visit) is a row error from the same rules a live command meets, never a silent event.

The ticket's stream id is the row's ``ticket_id`` or, without one, a UUID derived from its
ticket number; the natural key is the ticket number: a ticket already present (in
``ticket_state``) is skipped. Each step's events are one segment in its service's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, or_, select

from shared.app.importing.fields import Column, Fields, Problem, RowFailed
from shared.app.importing.kinds import Kind, KindContext, Parsed, Segment, Verdict, each
from shared.eventstore.ledger import NEW_STREAM, EventStore
from shared.kernel.clock import iso_utc
from shared.kernel.events.envelope import EventPayload, PendingEvent
from shared.kernel.imports import imported_id
from shared.kernel.ticket import TICKETS, TicketState
from shared.readmodels.ticket_state import ticket_state

if TYPE_CHECKING:
    from shared.app.importing.export import Unrepresentable
    from shared.app.platform import Platform


@dataclass
class TicketRow:
    """A parsed row: its ticket, each step's part of it (by service), its values as read."""

    line: int
    ticket_number: str
    ticket_id: str
    given_id: bool
    parts: dict[str, Any] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TicketHistoryView:
    """An existing ticket as export reads it: its state, and the latest event of each
    type with when it happened."""

    ticket_id: str
    state: TicketState
    latest: Mapping[str, tuple[EventPayload, datetime]]


Decided = tuple[list[PendingEvent], TicketState]


@dataclass(frozen=True)
class HistoryStep:
    """One service's steps of an imported ticket's history.

    ``parse``: its part of a row (problems go to the fields); ``times``: the part's step
    times in lifecycle order, (column, time or None); ``gather``: the facts its decisions
    need for a batch of rows (read models, settings); ``decide``: its events for one row,
    run on the ticket's state with its own decide functions (``RowFailed`` for a refusal);
    ``export``: its columns of an existing ticket; ``finish``: after an import;
    ``accepted``: the row was decided in full (its history is in the batch)."""

    service: str
    columns: tuple[Column, ...]
    parse: Callable[[Fields, KindContext], Any]
    times: Callable[[Any], Sequence[tuple[str, datetime | None]]]
    gather: Callable[[Connection, Sequence[TicketRow], KindContext], Any]
    decide: Callable[[TicketRow, TicketState, Any, KindContext], Decided]
    export: Callable[[TicketHistoryView], dict[str, Any]]
    finish: Callable[[Platform, KindContext], Awaitable[None]] | None = None
    # After the whole row was decided without a problem: what later rows may build on.
    accepted: Callable[[TicketRow, TicketState, Any, KindContext], None] | None = None


@cache
def history_steps() -> tuple[HistoryStep, ...]:
    from shared.app.registry import SERVICES, service

    return tuple(step for name in SERVICES for step in service(name).history)


TICKET_COLUMNS = (
    Column("ticket_number", True, "The replaced system's ticket number (the natural key)."),
    Column(
        "ticket_id", False, "A UUID to keep (export writes it); default: derived from the number."
    ),
)


def chronology(
    line: int, times: Sequence[tuple[str, datetime | None]], now: datetime
) -> list[Problem]:
    """Steps happen in lifecycle order, and before the import."""
    problems: list[Problem] = []
    previous: tuple[str, datetime] | None = None
    for column, at in times:
        if at is None:
            continue
        if at > now:
            problems.append(Problem(line, column, "in the future"))
        if previous is not None and at < previous[1]:
            problems.append(Problem(line, column, f"before {previous[0]} ({iso_utc(previous[1])})"))
        previous = (column, at)
    return problems


class TicketHistory(Kind):
    name = "tickets"
    service = "intake"
    title = "Historical tickets (one row per ticket, its lifecycle)"
    key_column = "ticket_number"

    @property
    def steps(self) -> tuple[HistoryStep, ...]:
        return history_steps()

    @property
    def columns(self) -> tuple[Column, ...]:  # type: ignore[override]
        return TICKET_COLUMNS + tuple(c for step in self.steps for c in step.columns)

    def parse(self, fields: Fields, context: KindContext) -> TicketRow | None:
        number = fields.text("ticket_number", required=True, max_length=32)
        given = fields.text("ticket_id", max_length=36)
        if given is not None:
            try:
                given = str(uuid.UUID(given))
            except ValueError:
                fields.problem("ticket_id", "not a UUID")
        parts = {step.service: step.parse(fields, context) for step in self.steps}
        if number is None:
            return None
        if not fields.problems:
            times = [t for step in self.steps for t in step.times(parts[step.service])]
            fields.problems += chronology(fields.line, times, context.now)
        ticket_id = given or imported_id("ticket", number)
        # With problems the row is not imported; it still claims its ticket number.
        return TicketRow(fields.line, number, ticket_id, given is not None, parts, fields.values)

    def key(self, item: TicketRow) -> str:
        return item.ticket_number

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        rows: list[TicketRow] = [p.item for p in batch]
        known = existing_tickets(conn, rows)
        # Ids the file's earlier rows took: this batch's, and (a validating pass: not
        # written yet) earlier batches'. Two numbers under one id would be one stream.
        taken = {ticket_id: line for line, ticket_id in _taken_ids(rows, context)}
        steps = self.steps
        facts = {step.service: step.gather(conn, rows, context) for step in steps}

        def one(parsed: Parsed) -> Verdict:
            row: TicketRow = parsed.item
            if row.ticket_id in taken:
                problem = f"another row of the file has this id: line {taken[row.ticket_id]}"
                raise RowFailed([Problem(row.line, "ticket_id", problem)])
            if row.ticket_number in known:
                if row.given_id and known[row.ticket_number] != row.ticket_id:
                    raise RowFailed(
                        [
                            Problem(
                                row.line,
                                "ticket_id",
                                f"ticket {row.ticket_number} has id {known[row.ticket_number]}",
                            )
                        ]
                    )
                return Verdict(row.line, present=True)
            if row.ticket_id in known.values():
                raise RowFailed([Problem(row.line, "ticket_id", "another ticket has this id")])
            segments, state = history(row, steps, facts, context)
            for step in steps:
                if step.accepted is not None:
                    step.accepted(row, state, facts[step.service], context)
            taken[row.ticket_id] = row.line
            if context.remembered is not None:
                context.remembered.add(_TICKET_IDS, row.ticket_id, row.line)
            return Verdict(row.line, segments=tuple(segments))

        return each(batch, one)

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any] | Unrepresentable]:
        from shared.app.importing.export import export_tickets

        return export_tickets(conn, self.steps, store)

    async def finish(self, platform: Platform, context: KindContext) -> None:
        for step in self.steps:
            if step.finish is not None:
                await step.finish(platform, context)


def history(
    row: TicketRow, steps: Sequence[HistoryStep], facts: Mapping[str, Any], context: KindContext
) -> tuple[list[Segment], TicketState]:
    """The row's events, step by step on the ticket's state: one segment per step."""
    state = TicketState(ticket_id=row.ticket_id)
    segments: list[Segment] = []
    for step in steps:
        events, state = step.decide(row, state, facts[step.service], context)
        if events:
            head = NEW_STREAM if not segments else None
            region = TICKETS.scope(state).region
            segments.append(Segment(step.service, row.ticket_id, tuple(events), region, head))
    return segments, state


_TICKET_IDS = "ticket_ids"  # KindContext.remembered: id → line of the row that took it


def _taken_ids(rows: Sequence[TicketRow], context: KindContext) -> list[tuple[int, str]]:
    if context.remembered is None:
        return []  # writing: earlier batches are in the database (existing_tickets)
    found = context.remembered.find(_TICKET_IDS, [r.ticket_id for r in rows])
    return [(lines[0], ticket_id) for ticket_id, lines in found.items()]


def existing_tickets(conn: Connection, rows: Sequence[TicketRow]) -> dict[str, str]:
    """Ticket number → id of the tickets the rows name (by number or by id)."""
    t = ticket_state.c
    numbers = [r.ticket_number for r in rows]
    ids = [r.ticket_id for r in rows]
    query = select(t.ticket_number, t.ticket_id).where(
        or_(t.ticket_number.in_(numbers), t.ticket_id.in_(ids))
    )
    return {r.ticket_number: r.ticket_id for r in conn.execute(query)}


TICKETS_KIND = TicketHistory()

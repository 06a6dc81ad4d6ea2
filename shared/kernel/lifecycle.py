"""The ticket lifecycle in one table: the statuses, which event may follow which status,
and where each event takes the ticket.

``evolve`` (the ticket's state), every decide function's guard, the ``ticket_state``
projection and the compliance checklist's "steps in order" item all read this table.
Every event type of the ticket stream has a row (a test walks the table), so a new step
cannot be added without saying where it may happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TicketStatus(StrEnum):
    new = "new"  # no events yet
    received = "received"
    diagnosed = "diagnosed"
    dispatched = "dispatched"
    visited = "visited"
    repaired = "repaired"
    followed_up = "followed_up"
    reopened = "reopened"
    closed = "closed"


S = TicketStatus

OPEN_STATUSES = frozenset(
    {S.received, S.diagnosed, S.dispatched, S.visited, S.repaired, S.followed_up, S.reopened}
)
EXISTING = OPEN_STATUSES | {S.closed}
# Where an SLA clock may be running (not yet responded, or not resolved): docs/sla.md.
CLOCK_STATUSES = frozenset({S.received, S.diagnosed, S.dispatched, S.visited, S.reopened})
# Which deadline runs: the response's until the diagnosis, then the resolution's.
AWAITING_RESPONSE = frozenset({S.received})
AWAITING_RESOLUTION = CLOCK_STATUSES - AWAITING_RESPONSE
# Where a repair is still to come (diagnosed, possibly reopened): parts may be requested
# for it — not before the diagnosis says what is wrong, nor once the repair is recorded.
AWAITING_REPAIR = frozenset({S.diagnosed, S.dispatched, S.visited, S.reopened})


def stored(statuses: frozenset[TicketStatus]) -> tuple[str, ...]:
    """The statuses as the read models store them, in lifecycle order (SQL lists)."""
    return tuple(s.value for s in TicketStatus if s in statuses)


@dataclass(frozen=True)
class Step:
    """An event of the ticket stream: the statuses it may follow, and the status it leads
    to (None: it records a fact and leaves the status as it is)."""

    after: frozenset[TicketStatus]
    to: TicketStatus | None = None


LIFECYCLE: dict[str, Step] = {
    # The five core steps, then the return visit (follow-up) that closes or reopens.
    "TicketReceived": Step(frozenset({S.new}), S.received),
    "TicketDiagnosed": Step(frozenset({S.received, S.diagnosed, S.reopened}), S.diagnosed),
    # Re-dispatch keeps the history; a reopened ticket may go straight back out.
    "TicketDispatched": Step(
        frozenset({S.diagnosed, S.dispatched, S.visited, S.reopened}), S.dispatched
    ),
    "TicketVisited": Step(frozenset({S.dispatched, S.visited}), S.visited),
    # From diagnosed (remote guidance) or dispatched only where no visit is needed; the
    # repair's decide function says which.
    "TicketRepaired": Step(frozenset({S.diagnosed, S.dispatched, S.visited}), S.repaired),
    "FollowUpRecorded": Step(frozenset({S.repaired}), S.followed_up),
    "TicketReopened": Step(frozenset({S.followed_up, S.closed}), S.reopened),
    "TicketClosed": Step(frozenset({S.followed_up}), S.closed),
    # Facts recorded on the ticket without moving it.
    "ContactDetailsCorrected": Step(OPEN_STATUSES),
    "SlaBreached": Step(EXISTING),
    "TicketEscalated": Step(EXISTING),
    "RepeatRepairFlagged": Step(EXISTING),
    # SLA terms and the clock (docs/sla.md): the policy is pinned at receipt or
    # re-evaluated while open; pauses only while a clock may run; warnings like breaches.
    "SlaPolicyApplied": Step(OPEN_STATUSES),
    "SlaPaused": Step(CLOCK_STATUSES),
    "SlaResumed": Step(CLOCK_STATUSES),
    "SlaWarning": Step(EXISTING),
    "ComplaintFiled": Step(EXISTING),
    # Old parts come back after the repair, also after the ticket closed.
    "OldPartReturned": Step(EXISTING),
    "OldPartReturnOverdue": Step(EXISTING),
}

# The steps that move a ticket along (the compliance "steps in order" item checks these).
MOVES: dict[str, Step] = {name: step for name, step in LIFECYCLE.items() if step.to is not None}


def may_follow(status: TicketStatus, event_type: str) -> bool:
    """Whether ``event_type`` may be recorded on a ticket in ``status``."""
    step = LIFECYCLE.get(event_type)
    return step is not None and status in step.after


def status_after(status: TicketStatus, event_type: str) -> TicketStatus:
    step = LIFECYCLE.get(event_type)
    return step.to if step is not None and step.to is not None else status


# Where each moving step leads, as the stored text (read models fold on plain strings).
STATUS_AFTER_TEXT: dict[str, str] = {name: step.to.value for name, step in MOVES.items() if step.to}

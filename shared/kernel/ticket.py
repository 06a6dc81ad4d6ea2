"""The ticket aggregate's state, folded from its events (pure, no I/O).

Every service that decides about a ticket loads its stream and folds it with ``evolve``;
the decisions themselves live in each service's ``domain`` module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.kernel.decider import Decider
from shared.kernel.events.envelope import EventEnvelope, EventPayload
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.sla import SlaPaused, SlaPolicyApplied, SlaResumed, SlaWarning
from shared.kernel.events.tickets import (
    ContactDetailsCorrected,
    FollowUpRecorded,
    OldPartReturned,
    ResolutionPath,
    SlaBreached,
    TicketDiagnosed,
    TicketDispatched,
    TicketReceived,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
)
from shared.kernel.lifecycle import OPEN_STATUSES, TicketStatus, status_after
from shared.kernel.parts import normalise_part_number, normalise_serial_number
from shared.kernel.reach import Scope


@dataclass(frozen=True)
class SlaPause:
    """A pause of the ticket's SLA clocks: until it was resumed (None: still paused)."""

    reason: str
    since: datetime
    until: datetime | None = None
    requisition_id: str | None = None
    note: str | None = None
    # "resumed", or "repaired" when the repair ended it (no clock runs after a repair).
    ended_by: str | None = None


@dataclass(frozen=True)
class TicketState:
    ticket_id: str
    version: int = 0
    status: TicketStatus = TicketStatus.new
    received: TicketReceived | None = None
    diagnosis: TicketDiagnosed | None = None  # the latest
    # Every diagnosis with when it was made (the SLA clock's resolution target: sla.py).
    diagnoses: tuple[tuple[datetime, TicketDiagnosed], ...] = ()
    dispatch: TicketDispatched | None = None
    visit: TicketVisited | None = None
    repair: TicketRepaired | None = None
    follow_up: FollowUpRecorded | None = None
    region: str | None = None
    # The region the ticket was received in: its SLA calendars' (``sla.placement``), so a
    # correction that moves the ticket moves its reach and work lists, not its deadlines.
    received_region: str | None = None
    received_at: datetime | None = None
    reopen_count: int = 0
    # Every dispatch: (when, service point) — the SLA clock's resolution calendar (sla.py).
    dispatches: tuple[tuple[datetime, str], ...] = ()
    # Old parts handed in: (part number as normalised, old serial) of those with a serial.
    returned_serials: frozenset[tuple[str, str]] = frozenset()
    # Deadlines (SlaDeadline values) already recorded as breached: each is breached once.
    breached: frozenset[str] = frozenset()
    # When the response deadline was met (the first diagnosis) and the current resolution
    # (the latest repair; a reopen clears it): a deadline met late is still a breach.
    responded_at: datetime | None = None
    resolved_at: datetime | None = None
    history: tuple[str, ...] = field(default_factory=tuple)
    # The SLA terms pinned on the ticket (None: the built-in policy), its pauses, and the
    # ladder steps short of the breach already recorded ("response:75").
    sla_policy: SlaPolicyApplied | None = None
    # Every pin in order: a re-evaluation's ``standing`` deadlines keep an earlier one's.
    sla_pins: tuple[SlaPolicyApplied, ...] = ()
    sla_pauses: tuple[SlaPause, ...] = ()
    sla_warned: frozenset[str] = frozenset()

    @property
    def dispatch_count(self) -> int:
        return len(self.dispatches)

    @property
    def dispatched_at(self) -> datetime | None:
        """When the latest dispatch was made."""
        return self.dispatches[-1][0] if self.dispatches else None

    @property
    def sla_paused(self) -> bool:
        return bool(self.sla_pauses) and self.sla_pauses[-1].until is None

    @property
    def exists(self) -> bool:
        return self.status is not TicketStatus.new

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def resolution_path(self) -> ResolutionPath | None:
        return self.diagnosis.resolution_path if self.diagnosis else None


def replace(state: TicketState, **changes: Any) -> TicketState:
    """``dataclasses.replace`` without running ``__init__`` again (all the fields): a fold calls
    it twice per event, and an import folds millions of events."""
    copy = object.__new__(TicketState)
    vars(copy).update(vars(state), **changes)
    return copy


def evolve(
    state: TicketState, payload: EventPayload, occurred_at: datetime | None = None
) -> TicketState:
    """The state after one more event. The status moves as the lifecycle table says;
    events outside the table leave it as it is."""
    s = replace(
        state,
        version=state.version + 1,
        status=status_after(state.status, payload.event_type),
        history=(*state.history, payload.event_type),
    )
    match payload:
        case TicketReceived():
            region = payload.address.region
            return replace(
                s, received=payload, region=region, received_region=region, received_at=occurred_at
            )
        case ContactDetailsCorrected():
            assert state.received is not None
            received = state.received.model_copy(
                update={
                    "customer": payload.customer or state.received.customer,
                    "address": payload.address or state.received.address,
                }
            )
            return replace(s, received=received, region=received.address.region)
        case TicketDiagnosed():
            assert occurred_at is not None
            return replace(
                s,
                diagnosis=payload,
                diagnoses=(*state.diagnoses, (occurred_at, payload)),
                responded_at=state.responded_at or occurred_at,
            )
        case TicketDispatched():
            return replace(
                s,
                dispatch=payload,
                visit=None,
                dispatches=(*state.dispatches, (occurred_at, payload.service_point_id)),
            )
        case TicketVisited():
            return replace(s, visit=payload)
        case TicketRepaired():
            s = _end_pause(s, occurred_at, "repaired")
            return replace(s, repair=payload, resolved_at=occurred_at)
        case FollowUpRecorded():
            return replace(s, follow_up=payload)
        case TicketReopened():
            return replace(s, reopen_count=state.reopen_count + 1, repair=None, resolved_at=None)
        case SlaBreached():
            return replace(s, breached=state.breached | {payload.deadline.value})
        case OldPartReturned() if payload.old_serial:
            serial = normalise_serial_number(payload.old_serial)
            key = (normalise_part_number(payload.part_number), serial)
            return replace(s, returned_serials=state.returned_serials | {key})
    return _evolve_sla(s, payload, occurred_at)


def _evolve_sla(s: TicketState, payload: EventPayload, at: datetime | None) -> TicketState:
    match payload:
        case SlaPolicyApplied():
            return replace(s, sla_policy=payload, sla_pins=(*s.sla_pins, payload))
        case SlaPaused():
            assert at is not None
            pause = SlaPause(payload.reason, at, None, payload.requisition_id, payload.note)
            return replace(s, sla_pauses=(*s.sla_pauses, pause))
        case SlaResumed():
            return _end_pause(s, at, "resumed")
        case SlaWarning():
            return replace(s, sla_warned=s.sla_warned | {warning_key(payload)})
    return s


def warning_key(payload: SlaWarning) -> str:
    return f"{payload.deadline.value}:{payload.percent:g}"


def _end_pause(s: TicketState, at: datetime | None, ended_by: str) -> TicketState:
    if not s.sla_paused or at is None:
        return s
    last = dataclasses.replace(s.sla_pauses[-1], until=at, ended_by=ended_by)
    return replace(s, sla_pauses=(*s.sla_pauses[:-1], last))


def fold(ticket_id: str, envelopes: list[EventEnvelope]) -> TicketState:
    state = TicketState(ticket_id=ticket_id)
    for e in envelopes:
        state = evolve(state, typed_payload(e), occurred_at=e.occurred_at)
    return state


def require_ticket(state: TicketState) -> TicketState:
    if not state.exists:
        from shared.kernel.errors import NotFound

        raise NotFound("ticket_not_found", f"no ticket {state.ticket_id}")
    return state


def require_open(state: TicketState) -> TicketState:
    require_ticket(state)
    if state.status is TicketStatus.closed:
        from shared.kernel.errors import RuleViolation

        raise RuleViolation("ticket_closed", "the ticket is closed")
    return state


def ticket_scope(state: TicketState) -> Scope:
    """A ticket sits in its region and, once dispatched, with its technician."""
    return Scope(
        region=state.region, assignee=state.dispatch.technician_id if state.dispatch else None
    )


TICKETS: Decider[TicketState] = Decider(
    stream_type="ticket",
    initial_state=TicketState,
    evolve=evolve,
    scope=ticket_scope,
    exists=lambda state: state.exists,
)

"""SLA terms and pauses: pure decisions ``decide(command, state) -> events``.

Calendars and policies are streams of their own (``calendar:<id>``, ``sla_policy:<id>``);
each definition is a new version carrying the full description. Pausing and resuming
decide on the ticket's state, on the terms pinned on it (docs/sla.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel

from shared.kernel.calendar import (
    Calendar,
    build_calendar,
    check_reachable,
)
from shared.kernel.decider import Decider, described_so
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.envelope import EventPayload, PendingEvent
from shared.kernel.events.sla import (
    CalendarDefined,
    CalendarDescription,
    SlaPaused,
    SlaPolicyDefined,
    SlaPolicyDescription,
    SlaResumed,
)
from shared.kernel.events.tickets import SlaDeadline
from shared.kernel.lifecycle import may_follow
from shared.kernel.sla import (
    RESOLUTION,
    RESPONSE,
    SlaPin,
    SlaTerms,
    check_policy,
    check_reachable_targets,
    policy_from,
    running,
    sla_clock,
)
from shared.kernel.ticket import SlaPause, TicketState, evolve, require_open, require_ticket

# --- calendar and policy streams ----------------------------------------------------------


@dataclass(frozen=True)
class TermsStream:
    """A calendar's or a policy's stream: its latest description and version."""

    stream_id: str
    version: int = 0
    description: BaseModel | None = None


def _evolve_terms(state: TermsStream, payload: EventPayload, _at: datetime) -> TermsStream:
    return replace(state, version=state.version + 1, description=payload)


def _defined(state: TermsStream) -> bool:
    return state.version > 0


CALENDARS: Decider[TermsStream] = Decider(
    stream_type="calendar", initial_state=TermsStream, evolve=_evolve_terms, exists=_defined
)
SLA_POLICIES: Decider[TermsStream] = Decider(
    stream_type="sla_policy", initial_state=TermsStream, evolve=_evolve_terms, exists=_defined
)


def terms_id(stream_id: str) -> str:
    return stream_id.split(":", 1)[1]


@dataclass(frozen=True)
class DefineCalendar:
    description: CalendarDescription
    today: date
    horizon: timedelta
    reason: str | None = None


def decide_define_calendar(command: DefineCalendar, state: TermsStream) -> list[EventPayload]:
    """A new version: valid hours (no overlap), a known timezone, holidays and adjusted
    working days that agree, and no closed stretch longer than the horizon."""
    d = command.description
    if described_so(state.description, d):
        return []
    calendar = build_calendar(terms_id(state.stream_id), state.version + 1, d)
    check_reachable(calendar, command.today, command.horizon)
    return [CalendarDefined(**d.model_dump(), reason=command.reason)]


@dataclass(frozen=True)
class DefinePolicy:
    description: SlaPolicyDescription
    # The latest versions of the calendars the description names, as the ledger holds them.
    calendars: Mapping[str, Calendar]
    now: datetime
    horizon: timedelta
    reason: str | None = None


def decide_define_policy(command: DefinePolicy, state: TermsStream) -> list[EventPayload]:
    """A new version: a target for every urgency and complexity, calendars that exist,
    a ladder without duplicates, reachable targets."""
    d = command.description
    if described_so(state.description, d):
        return []
    check_policy(d)
    policy = policy_from(terms_id(state.stream_id), state.version + 1, d)
    missing = sorted(policy.calendar_ids() - set(command.calendars))
    if missing:
        raise InvalidCommand("calendars", f"no calendar {', '.join(missing)}: define it first")
    check_reachable_targets(policy, command.calendars, command.now, command.horizon)
    return [SlaPolicyDefined(**d.model_dump(), reason=command.reason)]


# --- pause, resume, re-evaluation (ticket stream) -----------------------------------------


@dataclass(frozen=True)
class PauseSla:
    reason: str
    # The terms pinned on the ticket: their policy lists the reasons.
    terms: SlaTerms
    note: str | None = None
    # Set by the automatic pause for parts: nothing to do when it cannot apply.
    requisition_id: str | None = None


def _since(pause: SlaPause) -> str:
    return f"{pause.reason} since {pause.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _auto_pause_applies(command: PauseSla, state: TicketState) -> bool:
    """An automatic pause (for parts) only where the policy asks for it, a manual one
    could be made, and the requisition has not paused the ticket before (a redelivered
    event): never an error."""
    policy = command.terms.policy
    return (
        policy.pause_for_parts
        and all(p.requisition_id != command.requisition_id for p in state.sla_pauses)
        and command.reason in policy.pause_reasons
        and state.is_open
        and not state.sla_paused
        and may_follow(state.status, SlaPaused.event_type)
        and running(state)
    )


def decide_pause(command: PauseSla, state: TicketState) -> list[EventPayload]:
    automatic = command.requisition_id is not None
    if automatic and not _auto_pause_applies(command, state):
        return []
    require_open(state)
    reasons = command.terms.policy.pause_reasons
    if command.reason not in reasons:
        raise InvalidCommand("reason", f"not a pause reason; one of {', '.join(reasons)}")
    if state.sla_paused:
        raise RuleViolation(
            "already_paused", f"the SLA clock is paused: {_since(state.sla_pauses[-1])}"
        )
    if not may_follow(state.status, SlaPaused.event_type) or not running(state):
        raise RuleViolation(
            "no_clock_running", "the response and the resolution are met: no SLA clock runs"
        )
    return [
        SlaPaused(reason=command.reason, note=command.note, requisition_id=command.requisition_id)
    ]


@dataclass(frozen=True)
class ResumeSla:
    terms: SlaTerms
    now: datetime
    note: str | None = None
    # Set by the automatic resume: it ends only the pause that requisition began.
    requisition_id: str | None = None


def decide_resume(command: ResumeSla, state: TicketState) -> list[PendingEvent]:
    """The clocks run again; the event says the deadlines they now have (the pause ends
    at the instant they were computed for: the event occurs then)."""
    if command.requisition_id is not None and (
        not state.sla_paused or state.sla_pauses[-1].requisition_id != command.requisition_id
    ):
        return []  # an automatic resume ends only the pause its requisition began
    require_ticket(state)
    if not state.sla_paused:
        require_open(state)  # a closed ticket has no clock: say so, not "running"
        raise RuleViolation("not_paused", "the SLA clock is running")
    after = evolve(state, SlaResumed(), command.now)
    clock = sla_clock(after, command.terms, command.now)
    due = {d.deadline: d.due_at for d in clock.deadlines if d.open}
    resumed = SlaResumed(
        note=command.note,
        requisition_id=command.requisition_id,
        response_due_at=due.get(RESPONSE),
        resolution_due_at=due.get(RESOLUTION),
    )
    return [PendingEvent(resumed, occurred_at=command.now)]


@dataclass(frozen=True)
class ReevaluateSla:
    """Move the ticket to the policy in force now (and its calendars' latest versions)."""

    pin: SlaPin | None
    reason: str
    # The terms the ticket runs on, and when: a deadline met or passed by then stands.
    terms: SlaTerms
    now: datetime


def decide_reevaluate(command: ReevaluateSla, state: TicketState) -> list[EventPayload]:
    require_open(state)
    if command.pin is None:
        raise RuleViolation("no_policy", "no SLA policy is defined: the built-in policy applies")
    applied = command.pin.applied
    current = state.sla_policy
    if current is not None and (
        current.policy_id,
        current.policy_version,
        current.calendar_versions,
    ) == (applied.policy_id, applied.policy_version, applied.calendar_versions):
        raise RuleViolation("already_current", "the ticket runs on the terms in force")
    # A deadline met or passed stands on the terms it ran on: no breach undone, no
    # response judged again.
    clock = sla_clock(state, command.terms, command.now)
    standing = [SlaDeadline(d.deadline) for d in clock.deadlines if d.settled]
    return [applied.model_copy(update={"reason": command.reason, "standing": standing})]

"""The SLA clock: one pure function of a ticket's state (folded from its events), the
terms it runs on (policy and calendar versions) and an instant.

``sla_clock(state, terms, at)`` says, for the response and the resolution deadline: the
business time elapsed (pauses excluded), what remains, the deadline (moved by every
pause), whether it was met, met late or breached, and when each step of the warning and
escalation ladder is (or was) reached; and the ticket's running and paused segments. The
SLA job, the ticket and timeline views, the compliance checklist, the scorecards, the
as-of views and the what-if report all call it.

Both deadlines count from the receipt. The response is met by the first diagnosis; the
resolution by the latest repair (a reopening un-meets it). A pause stops every clock; a
repair ends a pause. With the built-in policy (no ``SlaPolicyApplied`` on the ticket) the
targets are the deadlines stored on the ticket's events, on the 24×7 calendar: the clock
then gives exactly the wall-clock figures of before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from shared.kernel.calendar import (
    ALWAYS,
    DEFAULT_HORIZON,
    ZERO,
    Calendar,
    add_business,
    business_between,
)
from shared.kernel.errors import InvalidCommand
from shared.kernel.events.sla import (
    ALWAYS_ID,
    DEFAULT_PAUSE_REASONS,
    LOCAL,
    SlaPolicyApplied,
    SlaPolicyDescription,
    SlaTarget,
)
from shared.kernel.events.tickets import Complexity, SlaDeadline, Urgency
from shared.kernel.ticket import SlaPause, TicketState

BREACH = 100.0
RESPONSE, RESOLUTION = SlaDeadline.response.value, SlaDeadline.resolution.value
# Levels an escalation (TicketEscalated) may name; a service point is only warned.
ESCALATION_LEVELS = frozenset({"regional_center", "headquarters"})


def policy_stream(policy_id: str) -> str:
    return f"sla_policy:{policy_id}"


def calendar_stream(calendar_id: str) -> str:
    return f"calendar:{calendar_id}"


# --- the policy ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    amount: timedelta
    calendar: str | None = None  # None: the urgency's (or channel's) calendar


@dataclass(frozen=True)
class Step:
    percent: float
    level: str


@dataclass(frozen=True)
class SlaPolicy:
    """A policy version. ``id`` None: the built-in policy — targets from the deadlines
    stored on the ticket, 24×7, the ladder and pause settings given."""

    id: str | None = None
    version: int = 0
    response: Mapping[str, Target] = field(default_factory=dict)
    resolution: Mapping[str, Target] = field(default_factory=dict)
    calendar_by_urgency: Mapping[str, str] = field(default_factory=dict)
    calendar_by_channel: Mapping[str, str] = field(default_factory=dict)
    region_calendars: Mapping[str, str] = field(default_factory=dict)
    service_point_calendars: Mapping[str, str] = field(default_factory=dict)
    default_calendar: str | None = None
    ladder: tuple[Step, ...] = (Step(BREACH, "regional_center"),)
    pause_reasons: tuple[str, ...] = DEFAULT_PAUSE_REASONS
    pause_for_parts: bool = False

    @property
    def builtin(self) -> bool:
        return self.id is None

    def calendar_ids(self) -> set[str]:
        """Every calendar the policy names."""
        own = {t.calendar for t in (*self.response.values(), *self.resolution.values())}
        return self.routed_calendar_ids() | {c for c in own if c not in (None, LOCAL, ALWAYS_ID)}

    def routed_calendar_ids(self) -> set[str]:
        """The calendars a target without one of its own may run on (besides 24×7)."""
        named = {
            *self.calendar_by_urgency.values(),
            *self.calendar_by_channel.values(),
            *self.region_calendars.values(),
            *self.service_point_calendars.values(),
            self.default_calendar,
        }
        return {c for c in named if c is not None and c not in (LOCAL, ALWAYS_ID)}


def _targets(items: Mapping[str, SlaTarget]) -> dict[str, Target]:
    return {key: Target(timedelta(hours=t.hours), t.calendar) for key, t in items.items()}


def policy_from(policy_id: str, version: int, d: SlaPolicyDescription) -> SlaPolicy:
    return SlaPolicy(
        id=policy_id,
        version=version,
        response=_targets({k.value: v for k, v in d.response.items()}),
        resolution=_targets({k.value: v for k, v in d.resolution.items()}),
        calendar_by_urgency={k.value: v for k, v in d.calendar_by_urgency.items()},
        calendar_by_channel={k.value: v for k, v in d.calendar_by_channel.items()},
        region_calendars=dict(d.region_calendars),
        service_point_calendars=dict(d.service_point_calendars),
        default_calendar=d.default_calendar,
        ladder=tuple(sorted((Step(s.percent, s.level.value) for s in d.ladder), key=_pct)),
        pause_reasons=tuple(d.pause_reasons),
        pause_for_parts=d.pause_for_parts,
    )


def check_policy(d: SlaPolicyDescription) -> None:
    """A target for every urgency and complexity, one ladder step per percentage, and
    the pause for parts with its reason."""
    for name, given, wanted in (
        ("response", d.response, [u.value for u in Urgency]),
        ("resolution", d.resolution, [c.value for c in Complexity]),
    ):
        missing = [k for k in wanted if k not in {str(g) for g in given}]
        if missing:
            raise InvalidCommand(name, f"give a target for every key: missing {missing}")
    check_terms([s.percent for s in d.ladder], d.pause_reasons, d.pause_for_parts)


def check_reachable_targets(
    policy: SlaPolicy, calendars: Mapping[str, Calendar], now: datetime, horizon: timedelta
) -> None:
    """Every target reachable within the horizon, counted from ``now``, on every calendar
    it may run on (its own; else 24×7 and each calendar the policy maps): 422 naming the
    target that is not. Largest first: a calendar reaching one reaches the smaller ones."""
    routed = [ALWAYS, *(calendars.get(c, ALWAYS) for c in sorted(policy.routed_calendar_ids()))]
    targets = [
        (f"{name}.{key}", target)
        for name, by_key in (("response", policy.response), ("resolution", policy.resolution))
        for key, target in by_key.items()
    ]
    reached: dict[str, timedelta] = {}
    for field_name, target in sorted(targets, key=lambda t: t[1].amount, reverse=True):
        own = target.calendar
        runs_on = routed if own in (None, LOCAL) else [calendars.get(own, ALWAYS)]
        for calendar in runs_on:
            if reached.get(calendar.id, timedelta(-1)) >= target.amount:
                continue
            if add_business(calendar, now, target.amount, horizon) is None:
                hours = target.amount.total_seconds() / 3600
                raise InvalidCommand(
                    field_name,
                    f"unreachable: {hours:g} business hours on calendar {calendar.id} take "
                    f"more than the {horizon.days}-day horizon",
                )
            reached[calendar.id] = target.amount


def check_terms(percents: Sequence[float], pause_reasons: Sequence[str], for_parts: bool) -> None:
    """One ladder step per percentage, and the pause for parts with its reason (a policy
    version, and the built-in policy's settings)."""
    if len(set(percents)) != len(percents):
        raise InvalidCommand("ladder", "two steps of the ladder at the same percentage")
    if for_parts and "waiting_for_parts" not in pause_reasons:
        raise InvalidCommand("pause_reasons", "pause_for_parts needs the reason waiting_for_parts")


def _pct(step: Step) -> float:
    return step.percent


@dataclass(frozen=True)
class Placement:
    """Where a ticket sits, for choosing its calendar."""

    urgency: str
    channel: str
    region: str
    service_point_id: str | None = None


def placement(state: TicketState) -> Placement:
    """Where the ticket's calendars are taken: its region as received (docs/sla.md)."""
    region = state.received_region or state.region
    assert state.received is not None and region is not None
    return Placement(
        state.received.urgency.value,
        state.received.channel.value,
        region,
        state.dispatch.service_point_id if state.dispatch else None,
    )


@dataclass(frozen=True)
class SlaTerms:
    """What a ticket's clocks run on: a policy version and the calendar versions pinned
    with it (by id), and the horizon beyond which a deadline is capped."""

    policy: SlaPolicy = field(default_factory=SlaPolicy)
    calendars: Mapping[str, Calendar] = field(default_factory=dict)
    horizon: timedelta = DEFAULT_HORIZON
    # Per deadline, the earlier terms it stands on: met or passed when the ticket was
    # re-evaluated (``SlaPolicyApplied.standing``).
    standing: Mapping[str, SlaTerms] = field(default_factory=dict)

    def governing(self, deadline: str) -> SlaTerms:
        """The terms this deadline runs on."""
        return self.standing.get(deadline, self)

    def calendar_for(self, deadline: str, where: Placement, key: str | None = None) -> Calendar:
        """The calendar of a deadline: the target's own, else the channel's, else the
        urgency's; "local" is the mapped calendar of the service point (resolution, once
        dispatched), else of the region, else the default; missing: 24×7."""
        p = self.policy
        targets = p.response if deadline == RESPONSE else p.resolution
        target = targets.get(key) if key is not None else None
        choice = (
            (target.calendar if target else None)
            or p.calendar_by_channel.get(where.channel)
            or p.calendar_by_urgency.get(where.urgency, LOCAL)
        )
        if choice == LOCAL:
            point = where.service_point_id if deadline == RESOLUTION else None
            choice = (
                (p.service_point_calendars.get(point) if point else None)
                or p.region_calendars.get(where.region)
                or p.default_calendar
                or ALWAYS_ID
            )
        return self.calendars.get(choice, ALWAYS) if choice != ALWAYS_ID else ALWAYS

    def policy_target(self, deadline: str, key: str) -> Target | None:
        targets = self.policy.response if deadline == RESPONSE else self.policy.resolution
        return targets.get(key)


@dataclass(frozen=True)
class SlaPin:
    """The terms a new ticket (or a re-evaluated one) starts under, and the event that
    pins them on it."""

    terms: SlaTerms
    applied: SlaPolicyApplied


def nominal_due(
    terms: SlaTerms, deadline: str, key: str, where: Placement, start: datetime
) -> datetime | None:
    """The deadline of a policy target counted from ``start`` with no pause (what the
    receipt and the diagnosis record); None with the built-in policy."""
    terms = terms.governing(deadline)
    target = terms.policy_target(deadline, key)
    if target is None:
        return None
    calendar = terms.calendar_for(deadline, where, key)
    found = add_business(calendar, start, target.amount, terms.horizon)
    return found if found is not None else start + terms.horizon


# --- the clock -------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    percent: float
    level: str | None  # None: the breach with no ladder step at 100 %
    # When it is (or will be, running on) reached; None: a pause comes first.
    at: datetime | None
    reached: bool
    recorded: bool
    capped: bool = False  # beyond the horizon: ``at`` is the cap, never reached

    @property
    def is_breach(self) -> bool:
        return self.percent == BREACH


@dataclass(frozen=True)
class DeadlineClock:
    deadline: str
    calendar_id: str
    calendar_version: int
    target: timedelta
    started_at: datetime
    elapsed: timedelta
    paused: timedelta  # business time the pauses kept off the clock
    due_at: datetime | None  # None: paused before it
    capped: bool  # beyond the horizon: due_at is the cap, not a real deadline
    met_at: datetime | None
    status: str  # running | paused | met | met_late | breached
    thresholds: tuple[Threshold, ...]

    @property
    def remaining(self) -> timedelta:
        return self.target - self.elapsed

    @property
    def open(self) -> bool:
        return self.met_at is None

    @property
    def settled(self) -> bool:
        """Met (in time or late) or breached: a re-evaluation leaves it standing."""
        return self.status in ("met", "met_late", "breached")

    @property
    def overdue(self) -> timedelta:
        return max(self.elapsed - self.target, ZERO)


@dataclass(frozen=True)
class Segment:
    state: str  # running | paused
    start: datetime
    end: datetime | None  # None: still so at the clock's instant (the repair ends it)
    reason: str | None = None
    requisition_id: str | None = None
    note: str | None = None
    ended_by: str | None = None


@dataclass(frozen=True)
class SlaClock:
    at: datetime
    policy_id: str | None
    policy_version: int
    paused: bool
    pause_reason: str | None
    segments: tuple[Segment, ...]
    deadlines: tuple[DeadlineClock, ...]

    def deadline(self, name: str) -> DeadlineClock | None:
        return next((d for d in self.deadlines if d.deadline == name), None)

    @property
    def due_at(self) -> datetime | None:
        """The nearest deadline still open (None: none, or paused)."""
        dues = [d.due_at for d in self.deadlines if d.open and d.due_at is not None]
        return min(dues) if dues else None

    @property
    def next_check_at(self) -> datetime | None:
        """When the SLA job next has something to record if nothing else happens: the
        earliest unrecorded step (on an open deadline; a breach also when met late).
        None while paused: a paused ticket is never flagged."""
        if self.paused:
            return None
        found = [
            t.at
            for d in self.deadlines
            for t in d.thresholds
            if not t.recorded
            and t.at is not None
            and not t.capped
            and (d.open or (t.is_breach and t.reached))
        ]
        return min(found) if found else None


Interval = tuple[datetime, datetime | None]


def _pauses(pauses: Sequence[SlaPause], at: datetime) -> list[Interval]:
    """The pauses begun by ``at`` (one begun at ``at`` included: the state has it); one
    not ended by then is open (None)."""
    return [
        (p.since, p.until if p.until is not None and p.until <= at else None)
        for p in pauses
        if p.since <= at
    ]


def reach(
    calendar: Calendar,
    start: datetime,
    amount: timedelta,
    pauses: Sequence[Interval],
    horizon: timedelta,
) -> tuple[datetime | None, bool]:
    """When ``amount`` of business time has run since ``start``, pauses off the clock:
    (instant, capped). None when an open pause comes first; capped at the horizon."""
    remaining, cursor = amount, start
    for since, until in pauses:
        if until is not None and until <= cursor:
            continue
        stop = max(since, cursor)
        chunk = business_between(calendar, cursor, stop)
        if chunk >= remaining:
            return _capped(add_business(calendar, cursor, remaining, horizon), cursor, horizon)
        remaining -= chunk
        if until is None:
            return None, False
        cursor = until
    return _capped(add_business(calendar, cursor, remaining, horizon), cursor, horizon)


def _capped(
    found: datetime | None, cursor: datetime, horizon: timedelta
) -> tuple[datetime | None, bool]:
    return (found, False) if found is not None else (cursor + horizon, True)


def elapsed_between(
    calendar: Calendar, start: datetime, end: datetime, pauses: Sequence[Interval]
) -> tuple[timedelta, timedelta]:
    """(business time on the clock, business time paused) in [start, end)."""
    total = business_between(calendar, start, end)
    paused = ZERO
    for since, until in pauses:
        lo, hi = max(since, start), min(until or end, end)
        paused += business_between(calendar, lo, hi)
    return total - paused, paused


def _target(
    terms: SlaTerms, state: TicketState, deadline: str
) -> tuple[timedelta, str, Placement] | None:
    """(the target, the policy key it was chosen by, where its calendar is taken) of a
    deadline; None while it has none (no diagnosis yet for the resolution)."""
    assert state.received is not None and state.received_at is not None
    where = placement(state)
    if deadline == RESPONSE:
        key = state.received.urgency.value
        stored = state.received.response_due_at
    elif not state.diagnoses:
        return None
    else:
        walk = resolution_walk(state, terms, diagnoses_made(state))
        diagnosis = state.diagnoses[walk.in_force[-1][0]][1]
        key, where = diagnosis.complexity.value, walk.where
        stored = diagnosis.resolution_due_at
    target = terms.policy_target(deadline, key)
    if target is not None:
        return target.amount, key, where
    return stored - state.received_at, key, where


def diagnoses_made(state: TicketState) -> list[tuple[datetime, str, datetime]]:
    """The ticket's diagnoses as ``resolution_walk`` weighs them: (when made, complexity,
    stored deadline)."""
    return [(at, d.complexity.value, d.resolution_due_at) for at, d in state.diagnoses]


@dataclass(frozen=True)
class ResolutionWalk:
    """Per diagnosis, in order: the diagnosis the resolution runs on after it (an index)
    and that deadline on the ticket's clock (None: an open pause comes first, or it lies
    beyond the horizon); and where the resolution's calendar is taken."""

    in_force: list[tuple[int, datetime | None]]
    where: Placement


def resolution_walk(
    state: TicketState, terms: SlaTerms, diagnoses: Sequence[tuple[datetime, str, datetime]]
) -> ResolutionWalk:
    """The ticket's diagnoses (when made, complexity, stored deadline) and dispatches in
    time order. A diagnosis sets the target by its complexity, a dispatch the calendar
    (its service point's) — unless the deadline in force had already passed by then: a
    passed deadline stands, and neither a longer target nor a kinder calendar undoes its
    breach."""
    assert state.received_at is not None
    terms = terms.governing(RESOLUTION)
    received_at, pauses = state.received_at, _all_pauses(state)
    # Without per-point calendars a dispatch changes no calendar: only diagnoses count.
    moves = state.dispatches if terms.policy.service_point_calendars else ()
    where = replace(placement(state), service_point_id=None)
    targets: dict[int, tuple[str, timedelta]] = {}

    def due_on(index: int, at: Placement) -> datetime | None:
        key, amount = targets[index]
        calendar = terms.calendar_for(RESOLUTION, at, key)
        when, capped = reach(calendar, received_at, amount, pauses, terms.horizon)
        return None if capped else when

    steps = sorted(
        [(at, 0, n) for n, (at, _, _) in enumerate(diagnoses)]
        + [(at, 1, n) for n, (at, _) in enumerate(moves)],
        key=lambda step: (step[0], step[1]),
    )
    current, chosen = -1, []
    for at, kind, n in steps:
        due = due_on(current, where) if current >= 0 else None
        if due is not None and due <= at:
            if kind == 0:
                chosen.append(current)
            continue  # passed: it stands
        if kind == 1:
            where = replace(where, service_point_id=moves[n][1])
            continue
        _, complexity, stored = diagnoses[n]
        target = terms.policy_target(RESOLUTION, complexity)
        targets[n] = (complexity, target.amount if target else stored - received_at)
        current = n
        chosen.append(current)
    return ResolutionWalk([(c, due_on(c, where)) for c in chosen], where)


def resolution_in_force(
    state: TicketState, terms: SlaTerms, diagnoses: Sequence[tuple[datetime, str, datetime]]
) -> list[tuple[int, datetime | None]]:
    """``resolution_walk``'s diagnoses in force."""
    return resolution_walk(state, terms, diagnoses).in_force


def _steps(policy: SlaPolicy) -> list[tuple[float, str | None]]:
    steps: list[tuple[float, str | None]] = [(s.percent, s.level) for s in policy.ladder]
    if all(p != BREACH for p, _ in steps):
        steps.append((BREACH, None))
    return sorted(steps, key=lambda s: s[0])


def _recorded(state: TicketState, deadline: str, percent: float) -> bool:
    if percent == BREACH:
        return deadline in state.breached
    return f"{deadline}:{percent:g}" in state.sla_warned


def deadline_clock(
    state: TicketState, terms: SlaTerms, deadline: str, at: datetime
) -> DeadlineClock | None:
    terms = terms.governing(deadline)
    chosen = _target(terms, state, deadline)
    if chosen is None:
        return None
    target, key, where = chosen
    assert state.received_at is not None
    calendar = terms.calendar_for(deadline, where, key)
    met = state.responded_at if deadline == RESPONSE else state.resolved_at
    met_at = met if met is not None and met <= at else None
    end = met_at or at
    pauses = _pauses(state.sla_pauses, end)
    start = state.received_at
    elapsed, paused = elapsed_between(calendar, start, end, pauses)
    due_at, capped = reach(calendar, start, target, pauses, terms.horizon)
    thresholds = []
    for percent, level in _steps(terms.policy):
        when, cut = (
            (due_at, capped)
            if percent == BREACH
            else reach(calendar, start, target * (percent / 100), pauses, terms.horizon)
        )
        reached = when is not None and not cut and when < end
        recorded = _recorded(state, deadline, percent)
        thresholds.append(Threshold(percent, level, when, reached, recorded, cut))
    late = due_at is not None and not capped and due_at < end
    if met_at is not None:
        status = "met_late" if late else "met"
    elif state.sla_paused and state.sla_pauses[-1].since <= at:
        status = "breached" if late else "paused"
    else:
        status = "breached" if late else "running"
    return DeadlineClock(
        deadline,
        calendar.id,
        calendar.version,
        target,
        start,
        elapsed,
        paused,
        due_at,
        capped,
        met_at,
        status,
        tuple(thresholds),
    )


def segments(state: TicketState, at: datetime) -> tuple[Segment, ...]:
    """Running and paused stretches of the ticket's clocks from its receipt to ``at``, or
    to the repair that stopped them (no clock runs after it; a reopening runs them again)."""
    assert state.received_at is not None
    repaired = state.resolved_at if state.resolved_at and state.resolved_at <= at else None
    until_then = repaired or at
    out: list[Segment] = []
    cursor = state.received_at
    for p in state.sla_pauses:
        if p.since > until_then:
            break
        if p.since > cursor:
            out.append(Segment("running", cursor, p.since))
        until = p.until if p.until is not None and p.until <= until_then else None
        out.append(
            Segment("paused", p.since, until, p.reason, p.requisition_id, p.note, p.ended_by)
        )
        if until is None:
            return tuple(out)
        cursor = until
    if repaired is None or cursor < repaired or not out:  # (a repair that ended a pause
        out.append(Segment("running", cursor, repaired))  # leaves no running moment after)
    return tuple(out)


def sla_clock(state: TicketState, terms: SlaTerms, at: datetime) -> SlaClock:
    """The ticket's SLA clocks as they stand at ``at`` (``state`` folded from the events
    recorded by then)."""
    assert state.received_at is not None
    clocks = tuple(
        c
        for deadline in (RESPONSE, RESOLUTION)
        if (c := deadline_clock(state, terms, deadline, at)) is not None
    )
    pause = state.sla_pauses[-1] if state.sla_paused else None
    paused = pause is not None and pause.since <= at
    return SlaClock(
        at=at,
        policy_id=terms.policy.id,
        policy_version=terms.policy.version,
        paused=paused,
        pause_reason=pause.reason if pause is not None and paused else None,
        segments=segments(state, at),
        deadlines=clocks,
    )


def running(state: TicketState) -> bool:
    """Whether a clock runs: the response or the resolution is not met yet."""
    return state.responded_at is None or state.resolved_at is None


def _all_pauses(state: TicketState) -> list[Interval]:
    return [(p.since, p.until) for p in state.sla_pauses]


def response_due_instant(state: TicketState, terms: SlaTerms) -> datetime | None:
    """For compliance: the instant the response target runs out on the ticket's clock
    (pauses off; None: a pause comes first, or it lies beyond the horizon)."""
    assert state.received_at is not None
    terms = terms.governing(RESPONSE)
    chosen = _target(terms, state, RESPONSE)
    assert chosen is not None
    amount, key, where = chosen
    calendar = terms.calendar_for(RESPONSE, where, key)
    when, capped = reach(calendar, state.received_at, amount, _all_pauses(state), terms.horizon)
    return None if capped else when


def resolution_due_instants(
    state: TicketState, terms: SlaTerms, diagnoses: Sequence[tuple[str, datetime, str, datetime]]
) -> dict[str, datetime | None]:
    """For compliance: per diagnosis (event id, when made, complexity, stored deadline),
    the instant the resolution target in force after it runs out on the ticket's clock
    (as ``response_due_instant``; ``resolution_in_force``)."""
    made = [(at, complexity, stored) for _, at, complexity, stored in diagnoses]
    in_force = resolution_in_force(state, terms, made)
    return {d[0]: due for d, (_, due) in zip(diagnoses, in_force, strict=True)}

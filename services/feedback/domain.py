"""Feedback decisions: pure functions ``decide(command, state) -> events``.

The ticket's decisions (the follow-up that closes or reopens it, a complaint) decide on
the ticket's state (``shared.kernel.ticket.TICKETS``). The feedback service's own streams
have their deciders here: a service point's manual scorecard items (``scorecard``) and a
quality alert (``quality``, one stream per product model, fault category and day, so an
alert is recorded once).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import NamedTuple

from shared.kernel.clock import EARLIEST_BUSINESS_DAY
from shared.kernel.decider import Decider
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.quality import (
    QualityAlertRaised,
    ScorecardItemKind,
    ScorecardItemRecorded,
)
from shared.kernel.events.tickets import (
    Channel,
    ComplaintFiled,
    EscalationCause,
    FaultCategory,
    FollowUpChannel,
    FollowUpRecorded,
    TicketClosed,
    TicketEscalated,
    TicketReopened,
)
from shared.kernel.lifecycle import TicketStatus, may_follow
from shared.kernel.reach import Scope
from shared.kernel.ticket import TicketState, require_open, require_ticket

ESCALATION_LEVEL = "regional_center"

# --- the follow-up and complaints (ticket stream) ----------------------------------------


@dataclass(frozen=True)
class FollowUp:
    """What the customer said on the return visit."""

    satisfaction_score: int
    would_recommend: int
    problem_solved: bool
    channel: FollowUpChannel
    comment: str | None = None


@dataclass(frozen=True)
class RecordFollowUp:
    follow_up: FollowUp
    # The configured threshold: a score below it (or an unsolved problem) reopens.
    dissatisfied_below: int


@dataclass(frozen=True)
class FileComplaint:
    complaint: str
    channel: Channel
    public: bool = False
    # The ticket's customer was erased: no one could repair for them (their address and
    # phone are gone), so a complaint on their closed ticket does not reopen it.
    customer_erased: bool = False


def is_satisfactory(score: int, problem_solved: bool, *, dissatisfied_below: int) -> bool:
    return problem_solved and score >= dissatisfied_below


def why_unsatisfactory(follow_up: FollowUp, dissatisfied_below: int) -> str:
    if not follow_up.problem_solved:
        return "problem not solved"
    # Not "dissatisfied": the closing threshold may lie above the bands' (neutral reopens).
    return f"not satisfactory (score {follow_up.satisfaction_score} < {dissatisfied_below})"


def decide_follow_up(command: RecordFollowUp, state: TicketState) -> list[EventPayload]:
    """Only after a repair. Satisfied and solved closes the ticket; otherwise it is
    reopened and escalated, and goes back to dispatch."""
    require_open(state)
    if not may_follow(state.status, "FollowUpRecorded"):
        raise RuleViolation(
            "follow_up_requires_repair",
            f"a follow-up is recorded after the repair; the ticket is {state.status.value}",
        )
    f, threshold = command.follow_up, command.dissatisfied_below
    recorded = FollowUpRecorded(
        satisfaction_score=f.satisfaction_score,
        would_recommend=f.would_recommend,
        problem_solved=f.problem_solved,
        comment=f.comment,
        channel=f.channel,
    )
    if is_satisfactory(f.satisfaction_score, f.problem_solved, dissatisfied_below=threshold):
        return [recorded, TicketClosed(reason="satisfied")]
    why = why_unsatisfactory(f, threshold)
    assert state.region is not None
    return [
        recorded,
        TicketReopened(reason=f"follow-up: {why}", source="follow_up", escalated=True),
        TicketEscalated(
            level=ESCALATION_LEVEL,
            cause=EscalationCause.reopened,
            region=state.region,
            reason=f"reopened after follow-up: {why}",
        ),
    ]


def decide_complaint(command: FileComplaint, state: TicketState) -> list[EventPayload]:
    """A complaint is always recorded; against a closed ticket it reopens and escalates —
    unless the customer was erased."""
    require_ticket(state)
    complaint = ComplaintFiled(
        complaint=command.complaint, channel=command.channel, public=command.public
    )
    if state.status is not TicketStatus.closed or command.customer_erased:
        return [complaint]
    assert state.region is not None
    return [
        complaint,
        # The reasons point at the complaint instead of quoting it: the customer's words
        # are personal data, kept once, sealed, in ComplaintFiled (docs/personal-data.md).
        TicketReopened(reason="complaint against the closed ticket", source="complaint"),
        TicketEscalated(
            level=ESCALATION_LEVEL,
            cause=EscalationCause.complaint,
            region=state.region,
            reason="complaint against a closed ticket",
        ),
    ]


# --- manual scorecard items (stream per service point) -----------------------------------

SCORECARD_STREAM_PREFIX = "scorecard-"


def scorecard_stream_id(service_point_id: str) -> str:
    """One stream per service point; short and fixed-length whatever the point's id."""
    return SCORECARD_STREAM_PREFIX + str(uuid.uuid5(uuid.NAMESPACE_URL, service_point_id))


@dataclass(frozen=True)
class ScorecardItem:
    """A scorecard item entered by hand, with its evidence."""

    service_point_id: str
    item: ScorecardItemKind
    occurred_on: date
    evidence: str
    region: str | None = None
    ticket_ids: tuple[str, ...] = ()


class NetworkMember(NamedTuple):
    """A member of dispatch's service network as the ledger has it."""

    level: str
    region: str | None
    joined_on: date  # (UTC) the day of its first registration


@dataclass(frozen=True)
class RecordScorecardItem:
    item: ScorecardItem
    # The latest date it is anywhere as it is recorded (clock.latest_today): an item
    # cannot have happened later.
    today: date
    # The network member with the item's id (dispatch's service-point streams); None: no
    # such member.
    member: NetworkMember | None
    # Those of the item's ticket ids that name a ticket within the caller's reach.
    known_tickets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ScorecardState:
    stream_id: str
    version: int = 0
    # The region the latest item named (where the service point's stream sits).
    region: str | None = None


def evolve_scorecard(
    state: ScorecardState, payload: EventPayload, _occurred_at: datetime
) -> ScorecardState:
    if isinstance(payload, ScorecardItemRecorded):
        return replace(state, version=state.version + 1, region=payload.region)
    return replace(state, version=state.version + 1)


SCORECARDS: Decider[ScorecardState] = Decider(
    stream_type="scorecard",
    initial_state=ScorecardState,
    evolve=evolve_scorecard,
    scope=lambda state: Scope(region=state.region),
    exists=lambda state: state.version > 0,
)


def decide_scorecard_item(
    command: RecordScorecardItem, _state: ScorecardState
) -> list[EventPayload]:
    item = command.item
    level, region = command.member[:2] if command.member else (None, None)
    if level != "service_point":
        raise InvalidCommand(
            "service_point_id",
            f"no service point {item.service_point_id} in the network (ids as registered)"
            if level is None
            else f"{item.service_point_id} is a {level}, not a service point",
        )
    if item.region is not None and item.region.casefold() != (region or "").casefold():
        raise InvalidCommand("region", f"{item.service_point_id} is in region {region}")
    if item.occurred_on > command.today:
        raise InvalidCommand("occurred_on", "the date is in the future")
    if item.occurred_on < EARLIEST_BUSINESS_DAY:
        raise InvalidCommand("occurred_on", f"before {EARLIEST_BUSINESS_DAY.isoformat()}")
    if command.member is not None and item.occurred_on < command.member.joined_on:
        raise InvalidCommand(  # its scorecard lists it from then on only
            "occurred_on",
            f"before {item.service_point_id} joined the network "
            f"({command.member.joined_on.isoformat()})",
        )
    for index, ticket_id in enumerate(item.ticket_ids):
        if ticket_id not in command.known_tickets:
            raise InvalidCommand(f"ticket_ids.{index}", f"no ticket {ticket_id}")
        if ticket_id in item.ticket_ids[:index]:
            raise InvalidCommand(f"ticket_ids.{index}", f"{ticket_id} is given twice")
    return [
        ScorecardItemRecorded(
            service_point_id=item.service_point_id,
            region=region,
            item=item.item,
            occurred_on=item.occurred_on,
            evidence=item.evidence,
            ticket_ids=list(item.ticket_ids),
        )
    ]


# --- quality alerts (stream per product model, fault category and day) -------------------

ALERT_NAMESPACE = uuid.UUID("6f1d2c1e-6d0b-4c3e-9a55-7a2f0c1b9e47")


def alert_stream_id(product_model: str, category: str, day: date) -> str:
    key = f"{product_model}\x1f{category}\x1f{day.isoformat()}"
    return f"quality-{uuid.uuid5(ALERT_NAMESPACE, key)}"


@dataclass(frozen=True)
class RaiseQualityAlert:
    """The repairs of ``day`` for one product model and fault category."""

    product_model: str
    fault_category: FaultCategory
    day: date
    # The ticket of each repair, once per repair (a ticket repaired twice counts twice).
    repairs: tuple[str, ...]
    # The configured number of repairs a day that raises an alert.
    threshold: int

    @property
    def stream_id(self) -> str:
        return alert_stream_id(self.product_model, self.fault_category.value, self.day)


def alert_due(command: RaiseQualityAlert) -> bool:
    return len(command.repairs) >= command.threshold


@dataclass(frozen=True)
class QualityAlertState:
    stream_id: str
    raised: bool = False


def evolve_alert(
    state: QualityAlertState, _payload: EventPayload, _occurred_at: datetime
) -> QualityAlertState:
    return replace(state, raised=True)


QUALITY_ALERTS: Decider[QualityAlertState] = Decider(
    stream_type="quality",
    initial_state=QualityAlertState,
    evolve=evolve_alert,
    exists=lambda state: state.raised,
)


def decide_quality_alert(
    command: RaiseQualityAlert, state: QualityAlertState
) -> list[EventPayload]:
    """Once per model, category and day: a second pass (or process) records nothing."""
    if state.raised or not alert_due(command):
        return []
    return [
        QualityAlertRaised(
            product_model=command.product_model,
            fault_category=command.fault_category,
            day=command.day,
            count=len(command.repairs),
            threshold=command.threshold,
            ticket_ids=list(dict.fromkeys(command.repairs)),
        )
    ]

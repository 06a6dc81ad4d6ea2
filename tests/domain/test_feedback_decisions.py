"""Feedback's decisions, given/when/then: a state (folded from events), a command, the
events decided or the rule broken. No database."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from services.feedback import domain
from shared.kernel.errors import InvalidCommand, NotFound, RuleViolation
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.quality import (
    QualityAlertRaised,
    ScorecardItemKind,
    ScorecardItemRecorded,
)
from shared.kernel.events.tickets import (
    Channel,
    ComplaintFiled,
    CostBearer,
    EscalationCause,
    FaultCategory,
    FollowUpChannel,
    FollowUpRecorded,
    RepairOutcome,
    TicketClosed,
    TicketDispatched,
    TicketEscalated,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
)
from shared.kernel.reach import Scope
from shared.kernel.ticket import TICKETS, TicketState
from tests.support.factories import diagnosed, received

MONDAY_9 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def given(*payloads: EventPayload) -> TicketState:
    state = TICKETS.initial_state("t-1")
    for p in payloads:
        state = TICKETS.evolve(state, p, MONDAY_9)
    return state


def repaired_ticket() -> TicketState:
    return given(
        received(region="west"),
        diagnosed(),
        TicketDispatched(
            region="west",
            service_point_id="sp-1",
            technician_id="tech-1",
            appointment_start=MONDAY_9,
            appointment_end=MONDAY_9 + timedelta(hours=2),
            reason="nearest",
        ),
        TicketVisited(technician_id="tech-1", arrived_at=MONDAY_9, findings="worn bearings"),
        TicketRepaired(outcome=RepairOutcome.fixed, cost_borne_by=CostBearer.warranty),
    )


def follow_up(score: int = 92, solved: bool = True, below: int = 60) -> domain.RecordFollowUp:
    said = domain.FollowUp(
        score, would_recommend=9, problem_solved=solved, channel=FollowUpChannel.call
    )
    return domain.RecordFollowUp(said, dissatisfied_below=below)


# --- the follow-up -------------------------------------------------------------------------


def test_a_satisfied_solved_follow_up_closes_the_ticket() -> None:
    events = domain.decide_follow_up(follow_up(score=60), repaired_ticket())
    assert [type(e) for e in events] == [FollowUpRecorded, TicketClosed]
    recorded = events[0]
    assert isinstance(recorded, FollowUpRecorded) and recorded.satisfaction_score == 60


@pytest.mark.parametrize(
    ("score", "solved", "why"),
    [(59, True, "not satisfactory (score 59 < 60)"), (95, False, "problem not solved")],
)
def test_a_dissatisfied_or_unsolved_follow_up_reopens_and_escalates(
    score: int, solved: bool, why: str
) -> None:
    recorded, reopened, escalated = domain.decide_follow_up(
        follow_up(score=score, solved=solved), repaired_ticket()
    )
    assert isinstance(recorded, FollowUpRecorded)
    assert isinstance(reopened, TicketReopened) and reopened.source == "follow_up"
    assert reopened.reason == f"follow-up: {why}"
    assert isinstance(escalated, TicketEscalated)
    assert (escalated.level, escalated.cause, escalated.region) == (
        "regional_center",
        EscalationCause.reopened,
        "west",
    )


def test_the_threshold_travels_in_the_command() -> None:
    events = domain.decide_follow_up(follow_up(score=75, below=80), repaired_ticket())
    assert TicketReopened in [type(e) for e in events]


def test_a_follow_up_comes_after_the_repair() -> None:
    with pytest.raises(RuleViolation) as err:
        domain.decide_follow_up(follow_up(), given(received(), diagnosed()))
    assert err.value.rule == "follow_up_requires_repair"
    with pytest.raises(RuleViolation) as err:
        domain.decide_follow_up(follow_up(), given(received(), TicketClosed()))
    assert err.value.rule == "ticket_closed"
    with pytest.raises(NotFound):
        domain.decide_follow_up(follow_up(), given())


# --- complaints ----------------------------------------------------------------------------


def complaint(text: str = "broke again", public: bool = False) -> domain.FileComplaint:
    return domain.FileComplaint(text, Channel.phone, public)


def test_a_complaint_on_an_open_ticket_is_only_recorded() -> None:
    (event,) = domain.decide_complaint(complaint(public=True), repaired_ticket())
    assert isinstance(event, ComplaintFiled) and event.public


def test_a_complaint_on_a_closed_ticket_reopens_and_escalates() -> None:
    closed = given(received(region="west"), TicketClosed())
    filed, reopened, escalated = domain.decide_complaint(complaint("x" * 4000), closed)
    assert isinstance(filed, ComplaintFiled)
    assert isinstance(reopened, TicketReopened) and reopened.source == "complaint"
    # The customer's words stay in ComplaintFiled only (personal data, sealed there).
    assert "x" * 20 not in reopened.reason and "x" * 20 not in escalated.reason
    assert isinstance(escalated, TicketEscalated)
    assert (escalated.cause, escalated.region) == (EscalationCause.complaint, "west")


def test_a_complaint_on_an_erased_customers_closed_ticket_is_only_recorded() -> None:
    closed = given(received(region="west"), TicketClosed())
    erased = dataclasses.replace(complaint(), customer_erased=True)
    (event,) = domain.decide_complaint(erased, closed)
    assert isinstance(event, ComplaintFiled)


def test_a_complaint_needs_a_ticket() -> None:
    with pytest.raises(NotFound):
        domain.decide_complaint(complaint(), given())


# --- manual scorecard items ----------------------------------------------------------------


def item(
    occurred_on: date = date(2026, 11, 2), region: str | None = "east"
) -> domain.ScorecardItem:
    return domain.ScorecardItem(
        "sp-1", ScorecardItemKind.poor_service, occurred_on, "mystery shopper", region
    )


JOINED = date(2026, 1, 5)
POINT = domain.NetworkMember("service_point", "east", JOINED)


def test_a_scorecard_item_is_recorded_with_its_evidence() -> None:
    state = domain.SCORECARDS.initial_state(domain.scorecard_stream_id("sp-1"))
    command = domain.RecordScorecardItem(
        replace(item(), ticket_ids=("t-1",)),
        date(2026, 11, 3),
        POINT,
        frozenset({"t-1"}),
    )
    (event,) = domain.decide_scorecard_item(command, state)
    assert isinstance(event, ScorecardItemRecorded)
    assert (event.service_point_id, event.region, event.ticket_ids) == ("sp-1", "east", ["t-1"])
    after = domain.SCORECARDS.evolve(state, event, MONDAY_9)
    assert domain.SCORECARDS.exists(after) and not domain.SCORECARDS.exists(state)
    assert domain.SCORECARDS.scope(after) == Scope(region="east")


@pytest.mark.parametrize(
    ("day", "says"), [(date(2026, 12, 1), "in the future"), (date(1949, 12, 31), "before 1950")]
)
def test_a_scorecard_item_happened_on_a_plausible_day(day: date, says: str) -> None:
    state = domain.SCORECARDS.initial_state(domain.scorecard_stream_id("sp-1"))
    command = domain.RecordScorecardItem(item(day), date(2026, 11, 30), POINT)
    with pytest.raises(InvalidCommand) as err:
        domain.decide_scorecard_item(command, state)
    assert err.value.field == "occurred_on" and says in str(err.value)


def test_a_scorecard_item_is_not_before_its_service_point_joined() -> None:
    """Its scorecard lists the point from then on: an item before would score a month
    whose card the point is not on."""
    state = domain.SCORECARDS.initial_state(domain.scorecard_stream_id("sp-1"))
    early = domain.RecordScorecardItem(item(date(2026, 1, 4)), date(2026, 11, 30), POINT)
    with pytest.raises(InvalidCommand) as err:
        domain.decide_scorecard_item(early, state)
    assert err.value.field == "occurred_on" and "joined the network (2026-01-05)" in str(err.value)
    that_day = domain.RecordScorecardItem(item(JOINED), date(2026, 11, 30), POINT)
    assert domain.decide_scorecard_item(that_day, state)


def test_a_scorecard_items_tickets_are_known_and_each_given_once() -> None:
    state = domain.SCORECARDS.initial_state(domain.scorecard_stream_id("sp-1"))
    member = POINT
    given = replace(item(), ticket_ids=("t-1", "t-2", "t-1"))
    for known, field, says in (
        (frozenset({"t-1"}), "ticket_ids.1", "no ticket t-2"),
        (frozenset({"t-1", "t-2"}), "ticket_ids.2", "given twice"),
    ):
        command = domain.RecordScorecardItem(given, date(2026, 11, 3), member, known)
        with pytest.raises(InvalidCommand) as err:
            domain.decide_scorecard_item(command, state)
        assert err.value.field == field and says in str(err.value)


def test_a_scorecard_item_is_for_a_service_point_of_the_network() -> None:
    state = domain.SCORECARDS.initial_state(domain.scorecard_stream_id("sp-1"))
    for member, says in (
        (None, "no service point sp-1"),
        (domain.NetworkMember("regional_center", "east", JOINED), "not a service"),
    ):
        command = domain.RecordScorecardItem(item(), date(2026, 11, 3), member)
        with pytest.raises(InvalidCommand) as err:
            domain.decide_scorecard_item(command, state)
        assert err.value.field == "service_point_id" and says in str(err.value)


def test_a_scorecard_item_has_its_service_points_region() -> None:
    state = domain.SCORECARDS.initial_state(domain.scorecard_stream_id("sp-1"))
    member = POINT
    (event,) = domain.decide_scorecard_item(
        domain.RecordScorecardItem(item(region=None), date(2026, 11, 3), member), state
    )
    assert isinstance(event, ScorecardItemRecorded) and event.region == "east"
    with pytest.raises(InvalidCommand) as err:
        domain.decide_scorecard_item(
            domain.RecordScorecardItem(item(region="west"), date(2026, 11, 3), member), state
        )
    assert err.value.field == "region"


def test_one_scorecard_stream_per_service_point() -> None:
    a, b = domain.scorecard_stream_id("sp-1"), domain.scorecard_stream_id("sp-2")
    assert a == domain.scorecard_stream_id("sp-1") and a != b
    assert a.startswith("scorecard-") and len(a) <= 64


# --- quality alerts ------------------------------------------------------------------------


def alert(repairs: int, threshold: int = 3) -> domain.RaiseQualityAlert:
    ids = tuple(f"t-{n}" for n in range(repairs))
    return domain.RaiseQualityAlert(
        "WM-700", FaultCategory.quality_defect, date(2026, 11, 2), ids, threshold
    )


def test_an_alert_is_raised_when_the_day_reaches_the_threshold() -> None:
    command = alert(3)
    state = domain.QUALITY_ALERTS.initial_state(command.stream_id)
    (event,) = domain.decide_quality_alert(command, state)
    assert isinstance(event, QualityAlertRaised)
    assert (event.count, event.threshold, len(event.ticket_ids)) == (3, 3, 3)
    assert domain.decide_quality_alert(alert(2), state) == []
    assert not domain.alert_due(alert(2)) and domain.alert_due(alert(3))


def test_a_ticket_repaired_twice_counts_two_repairs_and_is_named_once() -> None:
    command = domain.RaiseQualityAlert(
        "WM-700", FaultCategory.quality_defect, date(2026, 11, 2), ("t-1", "t-2", "t-1"), 3
    )
    state = domain.QUALITY_ALERTS.initial_state(command.stream_id)
    (event,) = domain.decide_quality_alert(command, state)
    assert isinstance(event, QualityAlertRaised)
    assert (event.count, event.ticket_ids) == (3, ["t-1", "t-2"])


def test_an_alert_is_raised_once_per_model_category_and_day() -> None:
    command = alert(4)
    state = domain.QUALITY_ALERTS.initial_state(command.stream_id)
    (event,) = domain.decide_quality_alert(alert(3), state)
    raised = domain.QUALITY_ALERTS.evolve(state, event, MONDAY_9)
    assert domain.decide_quality_alert(command, raised) == []
    assert command.stream_id == alert(3).stream_id
    other_day = domain.RaiseQualityAlert(
        "WM-700", FaultCategory.quality_defect, date(2026, 11, 3), (), 3
    )
    assert other_day.stream_id != command.stream_id

"""SLA decisions, given/when/then: defining calendars and policies, pausing, resuming and
re-evaluating a ticket's clock, the ladder the SLA job records, and the iCalendar reader.
No database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.dispatch import ics
from services.dispatch.domain import CheckSla, decide_sla
from services.dispatch.sla_domain import (
    CALENDARS,
    SLA_POLICIES,
    DefineCalendar,
    DefinePolicy,
    PauseSla,
    ReevaluateSla,
    ResumeSla,
    decide_define_calendar,
    decide_define_policy,
    decide_pause,
    decide_reevaluate,
    decide_resume,
)
from shared.kernel.calendar import ALWAYS, build_calendar
from shared.kernel.errors import InvalidCommand, RuleViolation
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.sla import (
    CalendarDescription,
    SlaPaused,
    SlaPolicyApplied,
    SlaPolicyDescription,
    SlaResumed,
    SlaWarning,
)
from shared.kernel.events.tickets import (
    SlaBreached,
    SlaDeadline,
    TicketClosed,
    TicketEscalated,
    TicketRepaired,
)
from shared.kernel.sla import SlaPin, SlaPolicy, SlaTerms, policy_from, sla_clock
from shared.kernel.ticket import TicketState, evolve
from tests.support.factories import diagnosed, received

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
HOURS = {
    "name": "Outlets",
    "timezone": "UTC",
    "hours": [{"weekday": "mon", "start": "09:00", "end": "18:00"}],
}
APPLIED = SlaPolicyApplied(policy_id="standard", policy_version=1)
LADDER = policy_from(
    "standard",
    1,
    SlaPolicyDescription(
        name="24x7",
        resolution={"simple": {"hours": 4}, "general": {"hours": 4}, "complex": {"hours": 72}},
        calendar_by_urgency={"normal": "24x7", "urgent": "24x7", "critical": "24x7"},
    ),
)
TERMS = SlaTerms(LADDER)


def ticket(*steps: tuple[EventPayload, datetime]) -> TicketState:
    state = evolve(TicketState(ticket_id="t1"), received(response_due_at=T0 + 24 * H), T0)
    state = evolve(state, APPLIED, T0)
    state = evolve(state, diagnosed(resolution_due_at=T0 + 4 * H), T0)
    for payload, at in steps:
        state = evolve(state, payload, at)
    return state


def apply(state: TicketState, events: list[EventPayload], at: datetime) -> TicketState:
    for event in events:
        state = evolve(state, event, at)
    return state


# --- calendars and policies ---------------------------------------------------------------


def define_calendar(state: Any = None, **changes: Any) -> list[EventPayload]:
    command = DefineCalendar(
        CalendarDescription(**{**HOURS, **changes}), today=date(2026, 11, 2), horizon=366 * 24 * H
    )
    return decide_define_calendar(command, state or CALENDARS.initial_state("calendar:hz"))


def test_a_calendar_version_is_defined_and_an_unchanged_one_records_nothing() -> None:
    (event,) = define_calendar()
    state = CALENDARS.evolve(CALENDARS.initial_state("calendar:hz"), event, T0)
    assert state.version == 1
    assert define_calendar(state) == []
    (changed,) = define_calendar(state, holidays=[{"day": "2026-12-25"}])
    assert changed.holidays[0].day == date(2026, 12, 25)  # type: ignore[attr-defined]
    with pytest.raises(InvalidCommand) as bad:
        define_calendar(state, timezone="Nowhere/Atlantis")
    assert bad.value.field == "timezone"


def define_policy(calendars: dict[str, Any] | None = None, **changes: Any) -> list[EventPayload]:
    command = DefinePolicy(
        SlaPolicyDescription(**{"name": "p", **changes}),
        calendars if calendars is not None else {},
        now=T0,
        horizon=366 * 24 * H,
    )
    return decide_define_policy(command, SLA_POLICIES.initial_state("sla_policy:standard"))


def test_a_policy_names_existing_calendars_every_target_and_reachable_hours() -> None:
    hz = build_calendar("hz", 1, CalendarDescription(**HOURS))
    (event,) = define_policy({"hz": hz}, region_calendars={"east": "hz"})
    assert event.event_type == "SlaPolicyDefined"
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({}, {"region_calendars": {"east": "hz"}}, "calendars"),
        ({"hz": hz}, {"response": {"normal": {"hours": 1}}}, "response"),
        ({"hz": hz}, {"ladder": [{"percent": 80, "level": "service_point"}] * 2}, "ladder"),
        ({"hz": hz}, {"pause_reasons": ["customer_unavailable"]}, "pause_reasons"),
        # 9 business hours a week: 2000 hours take more than a year.
        (
            {"hz": hz},
            {
                "region_calendars": {"east": "hz"},
                "resolution": {
                    "simple": {"hours": 4},
                    "general": {"hours": 8},
                    "complex": {"hours": 2000},
                },
            },
            "resolution.complex",
        ),
    ]
    for calendars, changes, field in cases:
        with pytest.raises(InvalidCommand) as err:
            define_policy(calendars, **changes)
        assert err.value.field == field, changes


# --- pause, resume, re-evaluation ---------------------------------------------------------


def pause(
    state: TicketState, reason: str = "customer_unavailable", **kw: Any
) -> list[EventPayload]:
    return decide_pause(PauseSla(reason, TERMS, **kw), state)


def resume(state: TicketState, at: datetime, **kw: Any) -> list[EventPayload]:
    """The resume's payloads (it occurs at ``at``: when its deadlines were computed)."""
    decided = decide_resume(ResumeSla(TERMS, at, **kw), state)
    assert all(e.occurred_at == at for e in decided)
    return [e.payload for e in decided]


def test_pause_needs_a_listed_reason_a_running_clock_and_happens_once() -> None:
    state = ticket()
    (paused,) = pause(state, note="away")
    assert isinstance(paused, SlaPaused) and paused.reason == "customer_unavailable"
    with pytest.raises(InvalidCommand) as bad:
        pause(state, "lunch")
    assert bad.value.field == "reason"
    after = apply(state, [paused], T0 + H)
    with pytest.raises(RuleViolation) as err:
        pause(after)
    assert err.value.rule == "already_paused"
    with pytest.raises(InvalidCommand) as bad:  # the input first, whatever the state
        pause(after, "lunch")
    assert bad.value.field == "reason"
    repaired = apply(state, [TicketRepaired(outcome="fixed", cost_borne_by="warranty")], T0 + H)
    with pytest.raises(RuleViolation) as err:
        pause(repaired)
    assert err.value.rule == "no_clock_running"


def test_resume_says_the_moved_deadline_and_refuses_a_running_clock() -> None:
    state = ticket((SlaPaused(reason="customer_unavailable"), T0 + H))
    (resumed,) = resume(state, T0 + 3 * H)
    assert isinstance(resumed, SlaResumed)
    # 1 hour ran before the pause, 2 hours paused: the 4-hour target now ends at T0 + 6 h.
    assert resumed.resolution_due_at == T0 + 6 * H and resumed.response_due_at is None
    with pytest.raises(RuleViolation) as err:
        resume(apply(state, [resumed], T0 + 3 * H), T0 + 4 * H)
    assert err.value.rule == "not_paused"
    # A closed ticket has no clock at all: that is the reason given.
    closed = apply(state, [resumed, TicketClosed()], T0 + 3 * H)
    with pytest.raises(RuleViolation) as err:
        resume(closed, T0 + 4 * H)
    assert err.value.rule == "ticket_closed"


def test_the_automatic_pause_for_parts_never_fails_and_resumes_only_its_own() -> None:
    parts = SlaTerms(policy_from("standard", 1, SlaPolicyDescription(name="p")))
    state = ticket()

    def auto_pause(s: TicketState, terms: SlaTerms = parts) -> list[EventPayload]:
        return decide_pause(PauseSla("waiting_for_parts", terms, requisition_id="r1"), s)

    (paused,) = auto_pause(state)
    assert paused.requisition_id == "r1"  # type: ignore[attr-defined]
    assert auto_pause(state, SlaTerms(SlaPolicy())) == []  # the built-in policy: off
    after = apply(state, [paused], T0 + H)
    assert auto_pause(after) == []  # already paused
    assert decide_resume(ResumeSla(parts, T0 + 2 * H, requisition_id="r2"), after) == []
    (resumed,) = decide_resume(ResumeSla(parts, T0 + 2 * H, requisition_id="r1"), after)
    again = apply(after, [resumed.payload], T0 + 2 * H)
    assert auto_pause(again) == []  # the same requisition delivered twice
    closed = apply(state, [TicketClosed()], T0)
    assert auto_pause(closed) == []


def test_re_evaluation_moves_to_the_terms_in_force_on_purpose_only() -> None:
    newer = SlaPolicyApplied(policy_id="standard", policy_version=2)
    pin = SlaPin(SlaTerms(), newer)
    (event,) = decide_reevaluate(ReevaluateSla(pin, "new year", TERMS, T0 + H), ticket())
    assert isinstance(event, SlaPolicyApplied) and event.reason == "new year"
    with pytest.raises(RuleViolation) as err:
        decide_reevaluate(ReevaluateSla(SlaPin(SlaTerms(), APPLIED), "again", TERMS, T0), ticket())
    assert err.value.rule == "already_current"
    with pytest.raises(RuleViolation) as err:
        decide_reevaluate(ReevaluateSla(None, "x", TERMS, T0), ticket())
    assert err.value.rule == "no_policy"


def test_re_evaluation_leaves_the_deadlines_met_or_passed_standing() -> None:
    """The diagnosis at T0 met the response; the 4-hour resolution passed at T0 + 4 h."""
    pin = SlaPin(SlaTerms(), SlaPolicyApplied(policy_id="standard", policy_version=2))
    (early,) = decide_reevaluate(ReevaluateSla(pin, "r", TERMS, T0 + H), ticket())
    (late,) = decide_reevaluate(ReevaluateSla(pin, "r", TERMS, T0 + 5 * H), ticket())
    assert isinstance(early, SlaPolicyApplied) and isinstance(late, SlaPolicyApplied)
    assert early.standing == [SlaDeadline.response]
    assert late.standing == [SlaDeadline.response, SlaDeadline.resolution]
    kinder = SlaTerms(
        policy_from(
            "standard",
            2,
            SlaPolicyDescription(
                name="kind",
                resolution={"general": {"hours": 72}},
                calendar_by_urgency={"normal": "24x7"},
            ),
        )
    )
    moved = sla_clock(ticket(), kinder, T0 + 6 * H).deadlines[1]
    kept = sla_clock(ticket(), replace(kinder, standing={"resolution": TERMS}), T0 + 6 * H)
    assert (moved.status, moved.due_at) == ("running", T0 + 72 * H)
    assert (kept.deadlines[1].status, kept.deadlines[1].due_at) == ("breached", T0 + 4 * H)


# --- the ladder ---------------------------------------------------------------------------


def sla(state: TicketState, at: datetime) -> list[EventPayload]:
    return decide_sla(CheckSla(at, TERMS), state)


def test_each_step_of_the_ladder_is_decided_once_from_the_stream() -> None:
    state = ticket()
    assert sla(state, T0 + 2 * H) == []
    (warning,) = sla(state, T0 + 3 * H + H / 2)
    assert isinstance(warning, SlaWarning)
    assert (warning.percent, warning.level.value, warning.reached_at) == (
        75,
        "service_point",
        T0 + 3 * H,
    )
    state = apply(state, [warning], T0 + 3 * H + H / 2)
    assert sla(state, T0 + 3 * H + H / 2) == []
    # The scheduler was away: breach and 150 % at once, each escalated.
    events = sla(state, T0 + 7 * H)
    assert [type(e) for e in events] == [SlaBreached, TicketEscalated, SlaWarning, TicketEscalated]
    assert [e.level for e in events if isinstance(e, TicketEscalated)] == [
        "regional_center",
        "headquarters",
    ]
    state = apply(state, events, T0 + 7 * H)
    assert sla(state, T0 + 30 * H) == []


def test_a_paused_clock_decides_nothing_and_a_met_deadline_only_its_late_breach() -> None:
    paused = ticket((SlaPaused(reason="waiting_for_approval"), T0 + H))
    assert sla(paused, T0 + 100 * H) == []
    repaired_late = ticket((TicketRepaired(outcome="fixed", cost_borne_by="warranty"), T0 + 5 * H))
    (breach,) = sla(repaired_late, T0 + 9 * H)
    assert isinstance(breach, SlaBreached) and breach.overdue_minutes == 60


# --- iCalendar -----------------------------------------------------------------------------


def test_the_icalendar_reader_takes_all_day_events_and_working_days() -> None:
    text = (
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20270211\r\n"
        "DTEND;VALUE=DATE:20270214\r\nSUMMARY:Spring\r\n  Festival\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nDTSTART:20270207\r\nSUMMARY:Make-up day\r\nCATEGORIES:WORKDAY\r\n"
        "END:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20270101\r\nDURATION:P1D\r\n"
        "SUMMARY:New Year\\, 2027\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART:20270301T090000\r\n"
        "SUMMARY:meeting\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20270501\r\n"
        "RRULE:FREQ=YEARLY\r\nSUMMARY:Labour Day\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    found = ics.parse(text)
    assert [(h.day.isoformat(), h.name) for h in found.holidays] == [
        ("2027-02-11", "Spring Festival"),
        ("2027-02-12", "Spring Festival"),
        ("2027-02-13", "Spring Festival"),
        ("2027-01-01", "New Year, 2027"),
    ]
    assert [w.day.isoformat() for w in found.working_days] == ["2027-02-07"]
    assert found.skipped == ["meeting", "Labour Day"]
    calendar = ics.merged(CalendarDescription(**HOURS), found, replace=False)
    assert [h.day.isoformat() for h in calendar.holidays][0] == "2027-01-01"
    with pytest.raises(InvalidCommand):
        ics.parse("BEGIN:VEVENT\r\nEND:VEVENT")
    assert ALWAYS.always


# --- intake: the receipt pins the terms, the deadlines are counted on them ----------------


def test_the_receipt_pins_the_policy_and_counts_the_deadline_in_business_hours() -> None:
    from services.intake import domain as intake
    from shared.kernel.events.tickets import (
        Address,
        Channel,
        Complexity,
        Customer,
        FaultCategory,
        Problem,
        Product,
        ResolutionPath,
        Urgency,
    )

    hz = build_calendar(
        "hz",
        1,
        CalendarDescription(
            name="hz",
            timezone="Asia/Shanghai",
            hours=[
                {"weekday": d, "start": "09:00", "end": "18:00"}
                for d in ("mon", "tue", "wed", "thu", "fri")
            ],
        ),
    )
    policy = policy_from(
        "standard",
        3,
        SlaPolicyDescription(
            name="p",
            response={"normal": {"hours": 4}, "urgent": {"hours": 2}, "critical": {"hours": 0.5}},
            region_calendars={"east": "hz"},
        ),
    )
    applied = SlaPolicyApplied(policy_id="standard", policy_version=3, calendar_versions={"hz": 1})
    pin = SlaPin(SlaTerms(policy, {"hz": hz}), applied)
    friday = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)  # 17:30 in Hangzhou
    request = intake.NewTicket(
        customer=Customer(name="Li Wei", phone="13812345678"),
        address=Address(line="1 Garden Road", region="east"),
        product=Product(model="WM-700", purchase_date=date(2026, 3, 1)),
        problem=Problem(symptom="drum", frequency="always", environment="home"),
        urgency=Urgency.normal,
        channel=Channel.phone,
    )
    command = intake.ReceiveTicket(request, "TL-1", friday, 24.0, 12, sla=pin)
    received_event, pinned = intake.decide_receive(command, TicketState(ticket_id="t"))
    assert received_event.payload.response_due_at == datetime(2026, 11, 23, 4, 30, tzinfo=UTC)  # type: ignore[attr-defined]
    assert pinned.payload == applied and pinned.occurred_at == friday
    # Without a policy: the built-in wall-clock hours, and nothing pinned.
    (plain,) = intake.decide_receive(
        intake.ReceiveTicket(request, "TL-2", friday, 24.0, 12), TicketState(ticket_id="t")
    )
    assert plain.payload.response_due_at == friday + 24 * H  # type: ignore[attr-defined]
    # The diagnosis counts the resolution from the receipt on the same calendar (simple: 4 h).
    state = evolve(TicketState(ticket_id="t"), received_event.payload, friday)
    state = evolve(state, applied, friday)
    diagnosis = intake.Diagnosis(FaultCategory.wear, Complexity.simple, ResolutionPath.on_site)
    (diagnosed_event,) = intake.decide_diagnose(
        intake.DiagnoseTicket(diagnosis, resolution_hours=4.0, terms=pin.terms), state
    )
    assert diagnosed_event.resolution_due_at == datetime(2026, 11, 23, 4, 30, tzinfo=UTC)  # type: ignore[attr-defined]


def test_a_resume_occurs_when_its_deadlines_were_computed() -> None:
    """SlaResumed carries the deadlines as of the decision; the pause it ends ends then too
    (the recording comes microseconds later on a real clock): the event and the clock
    agree to the microsecond."""
    from services.dispatch.sla_domain import ResumeSla, decide_resume
    from shared.kernel.events.envelope import PendingEvent
    from shared.kernel.events.sla import SlaPaused
    from shared.kernel.sla import SlaTerms, sla_clock
    from shared.kernel.ticket import TicketState, evolve
    from tests.support.factories import received

    start = datetime(2026, 11, 23, 2, 0, 0, 123456, tzinfo=UTC)
    state = evolve(TicketState("t-1"), received(1), start)
    state = evolve(state, SlaPaused(reason="customer_unavailable"), start + timedelta(minutes=5))
    now = start + timedelta(minutes=9, microseconds=789)
    (resumed,) = decide_resume(ResumeSla(SlaTerms(), now), state)
    assert isinstance(resumed, PendingEvent) and resumed.occurred_at == now
    after = evolve(state, resumed.payload, resumed.occurred_at)
    recorded_later = now + timedelta(microseconds=11)
    (response,) = sla_clock(after, SlaTerms(), recorded_later).deadlines
    assert response.due_at == resumed.payload.response_due_at

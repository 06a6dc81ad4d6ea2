"""The SLA clock, given/when/then: business-time arithmetic on calendars (hours, holidays,
adjusted working days, midnight, time zones, the horizon), and the clock folded from a
ticket's events (pauses, deadlines, ladder steps, segments). No database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.kernel.calendar import (
    ALWAYS,
    add_business,
    build_calendar,
    business_between,
    check_reachable,
)
from shared.kernel.errors import InvalidCommand
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
    TicketDiagnosed,
    TicketDispatched,
    TicketReopened,
    TicketRepaired,
)
from shared.kernel.sla import (
    Placement,
    SlaTerms,
    nominal_due,
    policy_from,
    response_due_instant,
    sla_clock,
)
from shared.kernel.ticket import TicketState, evolve
from tests.support.factories import diagnosed, received

SHANGHAI = ZoneInfo("Asia/Shanghai")
WORKDAYS = ("mon", "tue", "wed", "thu", "fri")
H = timedelta(hours=1)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


def calendar(**overrides: Any):  # type: ignore[no-untyped-def]
    data: dict[str, Any] = {
        "name": "Hangzhou outlet",
        "timezone": "Asia/Shanghai",
        "hours": [{"weekday": d, "start": "09:00", "end": "18:00"} for d in WORKDAYS],
        **overrides,
    }
    return build_calendar("sp-hz", 1, CalendarDescription(**data))


NINE_TO_SIX = calendar()


# --- business-time arithmetic -------------------------------------------------------------


def test_friday_evening_plus_four_business_hours_is_monday_half_past_twelve() -> None:
    friday = local(2026, 11, 20, 17, 30)
    due = add_business(NINE_TO_SIX, friday, 4 * H)
    assert due == local(2026, 11, 23, 12, 30)
    assert business_between(NINE_TO_SIX, friday, due) == 4 * H  # type: ignore[arg-type]
    # Running out exactly at the close is the close, not the next opening.
    assert add_business(NINE_TO_SIX, local(2026, 11, 20, 14), 4 * H) == local(2026, 11, 20, 18)
    # Outside the hours nothing passes; at the opening it starts again.
    assert business_between(NINE_TO_SIX, local(2026, 11, 21, 10), local(2026, 11, 22, 23)) == (
        timedelta(0)
    )


def test_holidays_close_a_day_and_adjusted_working_days_open_one() -> None:
    friday = local(2026, 11, 20, 17, 30)
    monday_off = calendar(holidays=[{"day": "2026-11-23", "name": "Local holiday"}])
    assert add_business(monday_off, friday, 4 * H) == local(2026, 11, 24, 12, 30)
    saturday_on = calendar(working_days=[{"day": "2026-11-21", "hours_of": "mon"}])
    assert add_business(saturday_on, friday, 4 * H) == local(2026, 11, 21, 12, 30)


def test_several_intervals_a_day_and_a_lunch_break() -> None:
    lunch = calendar(
        hours=[
            *({"weekday": d, "start": "09:00", "end": "12:00"} for d in WORKDAYS),
            *({"weekday": d, "start": "13:00", "end": "18:00"} for d in WORKDAYS),
        ]
    )
    assert add_business(lunch, local(2026, 11, 23, 11), 2 * H) == local(2026, 11, 23, 14)
    # Touching intervals are one: 09:00-12:00 + 12:00-18:00.
    touching = calendar(
        hours=[
            {"weekday": "mon", "start": "09:00", "end": "12:00"},
            {"weekday": "mon", "start": "12:00", "end": "18:00"},
        ]
    )
    assert touching.week[0] == ((540, 1080),)


def test_an_interval_crossing_midnight_is_split_and_the_night_belongs_to_the_next_day() -> None:
    night = calendar(hours=[{"weekday": "fri", "start": "22:00", "end": "06:00"}])
    assert night.week[4] == ((1320, 1440),) and night.week[5] == ((0, 360),)
    assert add_business(night, local(2026, 11, 20, 21), 3 * H) == local(2026, 11, 21, 1)
    # A holiday on Saturday closes the part after midnight.
    closed = calendar(
        hours=[{"weekday": "fri", "start": "22:00", "end": "06:00"}],
        holidays=[{"day": "2026-11-21"}],
    )
    assert add_business(closed, local(2026, 11, 20, 21), 3 * H) == local(2026, 11, 27, 23)
    whole_day = calendar(hours=[{"weekday": "sun", "start": "00:00", "end": "00:00"}])
    assert whole_day.week[6] == ((0, 1440),)


def test_time_zones_and_the_24x7_calendar() -> None:
    new_york = calendar(timezone="America/New_York")
    start = datetime(2026, 11, 20, 22, 30, tzinfo=UTC)  # 17:30 in New York
    assert add_business(new_york, start, 4 * H) == datetime(2026, 11, 23, 17, 30, tzinfo=UTC)
    assert add_business(ALWAYS, start, 4 * H) == start + 4 * H
    assert business_between(ALWAYS, start, start + 90 * H) == 90 * H


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        (
            {
                "hours": [
                    {"weekday": "mon", "start": "09:00", "end": "12:00"},
                    {"weekday": "mon", "start": "11:00", "end": "13:00"},
                ]
            },
            "hours",
            "overlapping working hours: mon 09:00-12:00 and mon 11:00-13:00",
        ),
        (
            {
                "hours": [
                    {"weekday": "sun", "start": "22:00", "end": "02:00"},
                    {"weekday": "mon", "start": "01:00", "end": "05:00"},
                ]
            },
            "hours",
            "overlapping",
        ),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown timezone"),
        (
            {"holidays": [{"day": "2026-11-21"}], "working_days": [{"day": "2026-11-21"}]},
            "working_days",
            "both a holiday and a working day",
        ),
        (
            {"working_days": [{"day": "2026-11-21", "hours_of": "sun"}]},
            "working_days",
            "which has none",
        ),
        ({"holidays": [{"day": "9999-12-31"}]}, "holidays", "a day between"),
    ],
)
def test_bad_calendars_are_refused_naming_the_field(
    overrides: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidCommand) as err:
        calendar(**overrides)
    assert err.value.field == field and words in err.value.detail


def test_a_deadline_beyond_the_horizon_is_capped_and_a_calendar_closing_longer_is_refused() -> None:
    year_off = calendar(
        holidays=[{"day": date(2027, 1, 1) + timedelta(days=n)} for n in range(400)]
    )
    start = local(2026, 12, 31, 17)
    assert add_business(year_off, start, 4 * H) is None  # beyond 366 days
    with pytest.raises(InvalidCommand) as err:
        check_reachable(year_off, date(2026, 11, 1), timedelta(days=366))
    assert err.value.field == "holidays" and "unreachable" in err.value.detail
    check_reachable(NINE_TO_SIX, date(2026, 11, 1), timedelta(days=366))


# --- the clock of a ticket ----------------------------------------------------------------

FRIDAY = local(2026, 11, 20, 17, 30)
POLICY = policy_from(
    "standard",
    1,
    SlaPolicyDescription(
        name="Business hours",
        region_calendars={"east": "sp-hz"},
        response={"normal": {"hours": 4}, "urgent": {"hours": 2}, "critical": {"hours": 0.5}},
    ),
)
TERMS = SlaTerms(POLICY, {"sp-hz": NINE_TO_SIX})
APPLIED = SlaPolicyApplied(policy_id="standard", policy_version=1, calendar_versions={"sp-hz": 1})


def ticket(*steps: tuple[EventPayload, datetime], at: datetime = FRIDAY) -> TicketState:
    state = evolve(TicketState(ticket_id="t1"), received(response_due_at=at + 4 * H), at)
    state = evolve(state, APPLIED, at)
    for payload, when in steps:
        state = evolve(state, payload, when)
    return state


def test_the_response_clock_runs_in_business_hours_only() -> None:
    state = ticket()
    clock = sla_clock(state, TERMS, local(2026, 11, 23, 10))
    response = clock.deadline("response")
    assert response is not None and clock.deadline("resolution") is None
    assert response.due_at == local(2026, 11, 23, 12, 30)
    assert (response.elapsed, response.remaining, response.status) == (
        timedelta(minutes=90),
        timedelta(minutes=150),
        "running",
    )
    [t75, t100, t150] = response.thresholds
    assert (t75.percent, t75.level, t75.at, t75.reached) == (
        75,
        "service_point",
        local(2026, 11, 23, 11, 30),
        False,
    )
    assert t100.at == response.due_at and t150.at == local(2026, 11, 23, 14, 30)
    assert clock.next_check_at == local(2026, 11, 23, 11, 30)
    where = Placement("normal", "phone", "east")
    assert nominal_due(TERMS, "response", "normal", where, FRIDAY) == response.due_at


def test_a_pause_moves_the_deadline_by_exactly_the_paused_business_time() -> None:
    paused_at, resumed_at = local(2026, 11, 23, 10), local(2026, 11, 24, 11)
    state = ticket(
        (SlaPaused(reason="customer_unavailable"), paused_at),
        (SlaResumed(), resumed_at),
    )
    paused_business = business_between(NINE_TO_SIX, paused_at, resumed_at)
    assert paused_business == 10 * H  # Mon 10-18 and Tue 9-11
    response = sla_clock(state, TERMS, local(2026, 11, 24, 12)).deadline("response")
    assert response is not None
    assert response.due_at == add_business(NINE_TO_SIX, local(2026, 11, 23, 12, 30), 10 * H)
    assert response.due_at == local(2026, 11, 24, 13, 30)
    assert (response.paused, response.elapsed) == (10 * H, timedelta(minutes=150))
    # The ladder moved too (docs/sla.md, worked example): 75 %, 100 %, 150 %.
    assert [t.at for t in response.thresholds] == [
        local(2026, 11, 24, 12, 30),
        local(2026, 11, 24, 13, 30),
        local(2026, 11, 24, 15, 30),
    ]
    # The timeline: running, paused (with its reason), running again.
    segments = sla_clock(state, TERMS, local(2026, 11, 24, 12)).segments
    assert [(s.state, s.start, s.end, s.reason) for s in segments] == [
        ("running", FRIDAY, paused_at, None),
        ("paused", paused_at, resumed_at, "customer_unavailable"),
        ("running", resumed_at, None, None),
    ]


def test_a_paused_clock_never_breaches_and_is_never_due() -> None:
    state = ticket((SlaPaused(reason="waiting_for_parts"), local(2026, 11, 23, 12)))
    clock = sla_clock(state, TERMS, local(2026, 12, 30, 12))
    response = clock.deadline("response")
    assert response is not None
    assert (response.status, response.due_at, response.remaining) == (
        "paused",
        None,
        timedelta(minutes=30),
    )
    assert clock.paused and clock.pause_reason == "waiting_for_parts"
    assert clock.next_check_at is None
    assert not any(t.reached for t in response.thresholds if t.percent >= 100)
    # A step reached before the pause stays reached (and is recorded once resumed).
    assert response.thresholds[0].reached


def test_met_late_breached_and_recorded_steps() -> None:
    diagnosis = diagnosed(resolution_due_at=FRIDAY + 4 * H)
    state = ticket((diagnosis, local(2026, 11, 23, 14)))
    response = sla_clock(state, TERMS, local(2026, 11, 23, 15)).deadline("response")
    assert response is not None
    assert (response.status, response.met_at, response.overdue) == (
        "met_late",
        local(2026, 11, 23, 14),
        timedelta(minutes=90),
    )
    # Recorded steps are marked (the breach by SlaBreached, others by SlaWarning).
    warned = evolve(
        state,
        SlaWarning(
            deadline="response",
            percent=75,
            level="service_point",
            region="east",
            due_at=FRIDAY,
            reached_at=FRIDAY,
            detected_at=FRIDAY,
        ),
        FRIDAY,
    )
    breached = evolve(
        warned,
        SlaBreached(deadline="response", due_at=FRIDAY, detected_at=FRIDAY, overdue_minutes=90),
        FRIDAY,
    )
    clock = sla_clock(breached, TERMS, local(2026, 11, 23, 15))
    response = clock.deadline("response")
    assert response is not None
    assert [(t.percent, t.reached, t.recorded) for t in response.thresholds] == [
        (75, True, True),
        (100, True, True),
        (150, False, False),
    ]


def point_terms() -> SlaTerms:
    """The region's 9-to-6 calendar, and a 24-hour one for the service point sp-24."""
    policy = policy_from(
        "standard",
        1,
        SlaPolicyDescription(
            name="p",
            region_calendars={"east": "sp-hz"},
            service_point_calendars={"sp-24": "always-open"},
        ),
    )
    always_open = build_calendar(
        "always-open",
        1,
        CalendarDescription(
            name="24h",
            timezone="UTC",
            hours=[
                {"weekday": d, "start": "00:00", "end": "00:00"} for d in (*WORKDAYS, "sat", "sun")
            ],
        ),
    )
    return SlaTerms(policy, {"sp-hz": NINE_TO_SIX, "always-open": always_open})


def dispatched_to(point: str) -> TicketDispatched:
    return TicketDispatched(
        region="east",
        service_point_id=point,
        technician_id="t",
        appointment_start=FRIDAY,
        appointment_end=FRIDAY + H,
        reason="x",
    )


def test_resolution_counts_from_receipt_on_the_service_points_calendar_and_reopens() -> None:
    terms = point_terms()
    state = ticket((diagnosed(complexity="simple", resolution_due_at=FRIDAY), FRIDAY))
    resolution = sla_clock(state, terms, FRIDAY).deadline("resolution")
    assert resolution is not None and resolution.due_at == local(2026, 11, 23, 12, 30)
    moved = evolve(state, dispatched_to("sp-24"), FRIDAY)
    resolution = sla_clock(moved, terms, FRIDAY).deadline("resolution")
    assert resolution is not None
    assert (resolution.calendar_id, resolution.due_at) == ("always-open", FRIDAY + 4 * H)
    # Repaired in time, then reopened: the clock runs again from where it stood.
    repaired = evolve(moved, TicketRepaired(outcome="fixed", cost_borne_by="warranty"), FRIDAY + H)
    assert sla_clock(repaired, terms, FRIDAY + 9 * H).deadline("resolution").status == "met"  # type: ignore[union-attr]
    reopened = evolve(repaired, TicketReopened(reason="again", source="follow_up"), FRIDAY + 2 * H)
    again = sla_clock(reopened, terms, FRIDAY + 9 * H).deadline("resolution")
    assert again is not None and again.status == "breached"


def test_a_move_after_the_resolution_deadline_passed_does_not_undo_its_breach() -> None:
    """Found by a black-box pass: re-dispatched to a point with a kinder calendar after
    the breach, the clock said `met` while the breach, escalation and checklist stood."""
    terms = point_terms()
    state = ticket((diagnosed(complexity="simple", resolution_due_at=FRIDAY), FRIDAY))

    on_24 = evolve(
        state, dispatched_to("sp-24"), FRIDAY
    )  # due FRIDAY + 4 h on the 24-hour calendar
    moved_late = evolve(
        on_24, dispatched_to("sp-hz-2"), FRIDAY + 5 * H
    )  # the region's 9-to-6 calendar
    repaired = evolve(
        moved_late, TicketRepaired(outcome="fixed", cost_borne_by="warranty"), FRIDAY + 6 * H
    )
    for at, status in ((FRIDAY + 5 * H, "breached"), (FRIDAY + 7 * H, "met_late")):
        resolution = sla_clock(repaired if status == "met_late" else moved_late, terms, at)
        clock = resolution.deadline("resolution")
        assert clock is not None
        assert (clock.calendar_id, clock.due_at, clock.status) == (
            "always-open",
            FRIDAY + 4 * H,
            status,
        )
    # Moved while the deadline still lay ahead: the new point's calendar counts.
    moved_early = evolve(on_24, dispatched_to("sp-hz-2"), FRIDAY + 3 * H)
    early = sla_clock(moved_early, terms, FRIDAY + 3 * H).deadline("resolution")
    assert early is not None and early.calendar_id == "sp-hz"
    assert early.due_at == local(2026, 11, 23, 12, 30)
    # Each move is judged by the target in force when it was made: moved under a complex
    # diagnosis (far off), then re-diagnosed simple — the simple target on the new calendar.
    complex_ = ticket((diagnosed(complexity="complex", resolution_due_at=FRIDAY), FRIDAY))
    steps = ((dispatched_to("sp-24"), FRIDAY), (dispatched_to("sp-hz-2"), FRIDAY + 5 * H))
    for payload, when in steps:
        complex_ = evolve(complex_, payload, when)
    simple = evolve(
        complex_, diagnosed(complexity="simple", resolution_due_at=FRIDAY), FRIDAY + 6 * H
    )
    again = sla_clock(simple, terms, FRIDAY + 6 * H).deadline("resolution")
    assert again is not None
    assert (again.calendar_id, again.due_at, again.status) == (
        "sp-hz",
        local(2026, 11, 23, 12, 30),
        "running",
    )


def test_the_built_in_policy_gives_the_wall_clock_figures() -> None:
    """No SlaPolicyApplied: the targets are the deadlines stored on the events, 24×7."""
    at = datetime(2026, 11, 2, 9, tzinfo=UTC)
    state = evolve(TicketState(ticket_id="t"), received(response_due_at=at + 2 * H), at)
    state = evolve(state, diagnosed(resolution_due_at=at + 24 * H), at + 3 * H)
    clock = sla_clock(state, SlaTerms(), at + 30 * H)
    response, resolution = clock.deadline("response"), clock.deadline("resolution")
    assert response is not None and resolution is not None
    assert (response.due_at, response.status, response.overdue) == (at + 2 * H, "met_late", H)
    assert (resolution.due_at, resolution.status, resolution.overdue) == (
        at + 24 * H,
        "breached",
        6 * H,
    )
    assert [t.percent for t in resolution.thresholds] == [100]
    assert response_due_instant(state, SlaTerms()) == at + 2 * H


def test_a_repair_ends_a_pause() -> None:
    state = ticket(
        (diagnosed(resolution_due_at=FRIDAY), FRIDAY),
        (SlaPaused(reason="waiting_for_parts"), local(2026, 11, 23, 10)),
        (TicketRepaired(outcome="fixed", cost_borne_by="warranty"), local(2026, 11, 25, 10)),
    )
    assert not state.sla_paused
    clock = sla_clock(state, TERMS, local(2026, 11, 26, 10))
    last = clock.segments[-1]  # the clock stopped paused: no running moment after it
    assert (last.state, last.end, last.ended_by) == ("paused", local(2026, 11, 25, 10), "repaired")
    resolution = clock.deadline("resolution")
    assert resolution is not None and resolution.status == "met"
    assert TicketDiagnosed  # the diagnosis above is the factory's


def test_an_unreachable_deadline_is_capped_at_the_horizon_and_says_so() -> None:
    closed = calendar(holidays=[{"day": date(2026, 11, 21) + timedelta(n)} for n in range(400)])
    terms = SlaTerms(POLICY, {"sp-hz": closed})
    state = ticket()
    response = sla_clock(state, terms, local(2027, 6, 1)).deadline("response")
    assert response is not None
    assert (response.capped, response.due_at) == (True, FRIDAY + timedelta(days=366))
    assert response.status == "running"  # a cap never breaches
    assert not any(t.reached for t in response.thresholds)
    assert sla_clock(state, terms, local(2027, 6, 1)).next_check_at is None

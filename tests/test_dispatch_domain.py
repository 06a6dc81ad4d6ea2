"""Dispatch's pure decisions (no database): working hours across timezones, ranking, the
SLA decision and the repeat-repair window."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from services.dispatch import domain
from services.dispatch.domain import EarlierRepair, ServicePointInfo, TechnicianInfo, TicketFacts
from shared.kernel.errors import RuleViolation
from shared.kernel.events.network import NetworkLevel, Shift, Weekday
from shared.kernel.events.tickets import RepairOutcome, SlaBreached, TicketRepaired
from shared.kernel.ticket import TicketState, evolve
from tests.support.factories import diagnosed, received

MONDAY_9 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def tech(tid: str, *, days=("mon",), start=time(8), end=time(18), tz="UTC", **kw) -> TechnicianInfo:  # type: ignore[no-untyped-def]
    shifts = tuple(Shift(weekday=Weekday(d), start=start, end=end) for d in days)
    data = {
        "name": tid,
        "service_point_id": "sp",
        "skills": frozenset({"wm"}),
        "working_hours": shifts,
        "timezone": tz,
        **kw,
    }
    return TechnicianInfo(id=tid, **data)


POINT = ServicePointInfo(id="sp", name="SP", level=NetworkLevel.service_point, region="east")
FACTS = TicketFacts(region="east", postcode="310000", product_line="wm")


def test_next_slot_uses_the_technicians_timezone_and_skips_to_the_next_shift() -> None:
    shanghai = tech("t", days=("mon", "tue"), start=time(9), end=time(17), tz="Asia/Shanghai")
    # Monday 09:00 UTC is 17:00 in Shanghai: Monday's shift is over; Tuesday 09:00 local.
    start, end = domain.next_slot(shanghai, MONDAY_9, timedelta(hours=2), 7)  # type: ignore[misc]
    assert (start, end) == (
        datetime(2026, 11, 3, 1, tzinfo=UTC),
        datetime(2026, 11, 3, 3, tzinfo=UTC),
    )
    # A window is cut at the shift's end; seconds round up to the next minute.
    late = tech("t", start=time(8), end=time(10))
    slot = domain.next_slot(late, MONDAY_9 + timedelta(seconds=5), timedelta(hours=2), 7)
    assert slot == (MONDAY_9 + timedelta(minutes=1), MONDAY_9 + timedelta(hours=1))
    assert domain.next_slot(tech("t", days=()), MONDAY_9, timedelta(hours=2), 7) is None


def test_works_during_needs_the_whole_window_inside_one_shift() -> None:
    t = tech("t", start=time(8), end=time(12))
    assert domain.works_during(t, MONDAY_9, MONDAY_9 + timedelta(hours=3))
    assert not domain.works_during(t, MONDAY_9, MONDAY_9 + timedelta(hours=4))
    assert not domain.works_during(
        t, MONDAY_9 + timedelta(days=1), MONDAY_9 + timedelta(days=1, hours=1)
    )


def test_ranking_is_by_load_then_appointment_then_id() -> None:
    techs = [
        tech("b"),
        tech("a"),
        tech("c", start=time(10)),
        tech("d", active=False),
        tech("e", skills=frozenset({"fridge"})),
    ]
    ranked = domain.suggest(
        FACTS,
        [POINT],
        techs,
        {"a": 1},
        now=MONDAY_9,
        window=None,
        window_length=timedelta(hours=2),
        horizon_days=7,
    )
    assert [c.technician.id for c in ranked] == ["b", "c", "a"]
    assert "the fewest among 3 candidate(s)" in domain.suggestion_reason(FACTS, ranked)
    with pytest.raises(RuleViolation) as info:
        domain.suggest(
            FACTS,
            [POINT],
            [tech("e", skills=frozenset())],
            {},
            now=MONDAY_9,
            window=None,
            window_length=timedelta(hours=2),
            horizon_days=7,
        )
    assert info.value.rule == "no_technician_available"


def test_postcode_prefixes_narrow_coverage() -> None:
    narrow = ServicePointInfo(
        id="n", name="N", level=NetworkLevel.service_point, region="east", postcodes=("3100",)
    )
    assert domain.covers(narrow, FACTS)
    assert not domain.covers(narrow, TicketFacts("east", "2000 01", None))
    assert domain.covers(narrow, TicketFacts("east", None, None))  # no postcode: region
    assert not domain.covers(narrow, TicketFacts("west", "310000", None))


def state_after(*payloads, at: datetime = MONDAY_9) -> TicketState:  # type: ignore[no-untyped-def]
    state = TicketState(ticket_id="t1")
    for p in payloads:
        state = evolve(state, p, occurred_at=at)
    return state


def test_sla_decision_records_each_deadline_once() -> None:
    fresh = state_after(received(response_due_at=MONDAY_9 + timedelta(hours=2)))
    assert domain.decide_sla(fresh, now=MONDAY_9 + timedelta(hours=1)) == []
    events = domain.decide_sla(fresh, now=MONDAY_9 + timedelta(hours=3))
    assert [e.event_type for e in events] == ["SlaBreached", "TicketEscalated"]
    breached = state_after(received(response_due_at=MONDAY_9 + timedelta(hours=2)), events[0])
    assert isinstance(events[0], SlaBreached) and breached.breached == {"response"}
    assert domain.decide_sla(breached, now=MONDAY_9 + timedelta(days=3)) == []
    # Once diagnosed, the resolution deadline runs on its own.
    due = MONDAY_9 + timedelta(hours=4)
    later = evolve(breached, diagnosed(resolution_due_at=due), occurred_at=MONDAY_9)
    (breach, escalation) = domain.decide_sla(later, now=due + timedelta(minutes=90))
    assert breach.deadline.value == "resolution" and breach.overdue_minutes == 90  # type: ignore[attr-defined]
    assert "resolution deadline" in escalation.reason  # type: ignore[attr-defined]


def test_repeat_repair_window_uses_event_times() -> None:
    state = state_after(
        received(product={"model": "WM-700", "serial_number": "SN1", "purchase_date": "2026-03-01"})
    )
    inside = EarlierRepair("old", MONDAY_9 - timedelta(days=30), RepairOutcome.replaced)
    outside = EarlierRepair("older", MONDAY_9 - timedelta(days=31), RepairOutcome.fixed)
    declined = EarlierRepair("x", MONDAY_9 - timedelta(days=1), RepairOutcome.customer_declined)
    (flag,) = domain.decide_repeat_repair(state, [outside, inside, declined], window_days=30)
    assert flag.earlier_ticket_id == "old"  # type: ignore[attr-defined]
    assert domain.decide_repeat_repair(state, [outside, declined], window_days=30) == []
    flagged = evolve(state, flag, occurred_at=MONDAY_9)
    assert domain.decide_repeat_repair(flagged, [inside], window_days=30) == []


def test_a_deadline_met_late_while_no_scheduler_ran_is_still_recorded_once() -> None:
    due = MONDAY_9 + timedelta(hours=2)
    answered_late = evolve(
        state_after(received(response_due_at=due)),
        diagnosed(resolution_due_at=MONDAY_9 + timedelta(hours=4)),
        occurred_at=due + timedelta(minutes=50),
    )
    repaired_late = evolve(
        answered_late,
        TicketRepaired(outcome="fixed", cost_borne_by="warranty"),
        occurred_at=MONDAY_9 + timedelta(hours=6),
    )
    # The scheduler comes back a day later: both breaches, with their real overdue time,
    # and no escalation (nothing is waiting any more).
    events = domain.decide_sla(repaired_late, now=MONDAY_9 + timedelta(days=1))
    assert [(e.deadline.value, e.overdue_minutes) for e in events] == [  # type: ignore[attr-defined]
        ("response", 50),
        ("resolution", 120),
    ]
    settled = repaired_late
    for event in events:
        settled = evolve(settled, event, occurred_at=MONDAY_9 + timedelta(days=1))
    assert domain.decide_sla(settled, now=MONDAY_9 + timedelta(days=2)) == []
    # Met in time: nothing to record.
    on_time = evolve(
        state_after(received(response_due_at=due)),
        diagnosed(resolution_due_at=MONDAY_9 + timedelta(hours=4)),
        occurred_at=MONDAY_9 + timedelta(hours=1),
    )
    assert domain.decide_sla(on_time, now=MONDAY_9 + timedelta(hours=3)) == []

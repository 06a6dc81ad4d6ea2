"""Dispatch's decisions, given/when/then: a state (folded from events), a command carrying
its facts, the events decided or the rule broken. No database.

Also the pure helpers the decisions use: working hours across timezones, coverage and
ranking."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.dispatch import domain
from services.dispatch.domain import (
    SERVICE_POINTS,
    TECHNICIANS,
    CheckSla,
    DispatchRequest,
    DispatchTicket,
    EarlierRepair,
    FlagRepeatRepair,
    Network,
    NetworkMember,
    RecordRepair,
    RecordVisit,
    ServicePointInfo,
    TechnicianInfo,
    TicketFacts,
    Visit,
)
from shared.kernel.errors import DomainError, InvalidCommand, NotFound, RuleViolation
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.network import (
    NetworkLevel,
    ServicePointDescription,
    ServicePointRegistered,
    ServicePointUpdated,
    Shift,
    TechnicianDeactivated,
    TechnicianDescription,
    TechnicianReactivated,
    TechnicianRegistered,
    Weekday,
)
from shared.kernel.events.tickets import (
    Address,
    CostBearer,
    RepairOutcome,
    SlaBreached,
    TicketClosed,
    TicketDispatched,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
    UsedPart,
)
from shared.kernel.ticket import TICKETS, TicketState, evolve
from tests.support.factories import diagnosed, received

MONDAY_9 = datetime(2026, 11, 2, 9, tzinfo=UTC)


# --- building blocks ---------------------------------------------------------------------


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


def rule(error: pytest.ExceptionInfo[DomainError]) -> str:
    """The rule broken, or the field a 422 names."""
    return getattr(error.value, "field", None) or error.value.rule


def given_ticket(*payloads: EventPayload, at: datetime = MONDAY_9) -> TicketState:
    state = TICKETS.initial_state("t1")
    for p in payloads:
        state = TICKETS.evolve(state, p, at)
    return state


def washing_machine(**overrides: Any) -> EventPayload:
    product = {"model": "WM-700", "product_line": "WM", "purchase_date": "2026-03-01"}
    return received(product={**product, **overrides.pop("product", {})}, **overrides)


def dispatched(technician: str = "t-a", point: str = "sp") -> TicketDispatched:
    return TicketDispatched(
        region="east",
        service_point_id=point,
        technician_id=technician,
        appointment_start=MONDAY_9,
        appointment_end=MONDAY_9 + timedelta(hours=2),
        reason="named",
    )


def visited(technician: str = "t-a") -> TicketVisited:
    return TicketVisited(technician_id=technician, arrived_at=MONDAY_9, findings="worn belt")


def repaired() -> TicketRepaired:
    return TicketRepaired(outcome=RepairOutcome.fixed, cost_borne_by=CostBearer.warranty)


def dispatch_command(
    *,
    technicians: tuple[TechnicianInfo, ...] = (tech("t-a"), tech("t-b")),
    points: tuple[ServicePointInfo, ...] = (POINT,),
    loads: dict[str, int] | None = None,
    **request: Any,
) -> DispatchTicket:
    return DispatchTicket(
        DispatchRequest(**request),
        Network(points, technicians, loads or {}),
        now=MONDAY_9,
        window_length=timedelta(hours=2),
        horizon_days=7,
    )


def given_member(decider: Any, *payloads: EventPayload) -> NetworkMember:
    state: NetworkMember = decider.initial_state("m-1")
    for p in payloads:
        state = decider.evolve(state, p, MONDAY_9)
    return state


# --- working hours, coverage, ranking (pure helpers) -------------------------------------


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


def test_works_during_takes_touching_shifts_as_one_stretch() -> None:
    """The docs' overnight pattern (a day's end written 23:59:59, the next day from 00:00)
    and a morning in two shifts that touch: a window across the seam fits; one across a
    break does not."""
    night = (
        Shift(weekday=Weekday.mon, start=time(22), end=time(23, 59, 59)),
        Shift(weekday=Weekday.tue, start=time(0), end=time(6)),
    )
    t = dataclasses.replace(tech("t"), working_hours=night, timezone="Asia/Shanghai")
    monday_23 = datetime(2026, 11, 2, 23, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert domain.works_during(t, monday_23, monday_23 + timedelta(hours=2))
    assert domain.works_during(t, monday_23 + timedelta(minutes=30), monday_23 + timedelta(hours=1))
    assert not domain.works_during(t, monday_23, monday_23 + timedelta(hours=8))
    morning = (
        Shift(weekday=Weekday.mon, start=time(8), end=time(12)),
        Shift(weekday=Weekday.mon, start=time(12), end=time(13)),
        Shift(weekday=Weekday.mon, start=time(14), end=time(18)),
    )
    # The suggestion runs across the seam too (it stopped at 23:59:59 with 15 minutes).
    late = monday_23 + timedelta(minutes=45)
    slot = domain.next_slot(t, late, timedelta(hours=2), 7)
    assert slot == (late.astimezone(UTC), (late + timedelta(hours=2)).astimezone(UTC))
    # And the reason names the whole night, not the half the appointment starts in.
    after_midnight = monday_23 + timedelta(hours=2)
    assert domain._hours_text(t, after_midnight) == "Mon 22:00-Tue 06:00 Asia/Shanghai"
    m = dataclasses.replace(tech("m"), working_hours=morning)
    assert domain.works_during(m, MONDAY_9 + timedelta(hours=2), MONDAY_9 + timedelta(hours=4))
    assert not domain.works_during(m, MONDAY_9 + timedelta(hours=3), MONDAY_9 + timedelta(hours=6))


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


# --- the network -------------------------------------------------------------------------

HQ = ServicePointInfo(id="hq", name="HQ", level=NetworkLevel.headquarters, region=None)
RC_EAST = ServicePointInfo(
    id="rc-east", name="RC", level=NetworkLevel.regional_center, region="east", parent_id="hq"
)


def outlet(**changes: Any) -> ServicePointDescription:
    data = {
        "name": "East outlet",
        "level": "service_point",
        "kind": "own_outlet",
        "parent_id": "rc-east",
        "region": "east",
        **changes,
    }
    return ServicePointDescription(**data)


def test_a_service_point_is_registered_once_under_a_regional_center_of_its_region() -> None:
    command = domain.RegisterServicePoint(outlet(), parent=RC_EAST)
    (event,) = domain.decide_register_service_point(command, given_member(SERVICE_POINTS))
    assert isinstance(event, ServicePointRegistered) and event.region == "east"
    registered = given_member(SERVICE_POINTS, event)
    assert SERVICE_POINTS.scope(registered).region == "east"
    with pytest.raises(RuleViolation) as err:
        domain.decide_register_service_point(command, registered)
    assert rule(err) == "already_registered"
    # An id taken by a technician is taken too.
    technician = given_member(TECHNICIANS, TechnicianRegistered(name="A", service_point_id="sp"))
    with pytest.raises(RuleViolation):
        domain.decide_register_service_point(command, technician)


def test_a_service_point_without_a_region_is_in_its_regional_centers() -> None:
    """The tree's one rule (shared/kernel/network.py), as parts' locations have it."""
    command = domain.RegisterServicePoint(outlet(region=None), RC_EAST)
    (event,) = domain.decide_register_service_point(command, given_member(SERVICE_POINTS))
    assert isinstance(event, ServicePointRegistered) and event.region == "east"
    center = outlet(level="regional_center", kind=None, parent_id=None, region="east")
    (event,) = domain.decide_register_service_point(
        domain.RegisterServicePoint(center, None), given_member(SERVICE_POINTS)
    )
    assert isinstance(event, ServicePointRegistered)
    assert event.parent_id is None and event.region == "east"  # headquarters is optional


def test_a_regional_center_keeps_its_region_while_points_under_it_serve_it() -> None:
    """A black-box pass moved a center to another region and left its points behind, no
    longer updatable with their own description."""
    center = outlet(level="regional_center", kind=None, parent_id=None, region="south")
    state = given_member(
        SERVICE_POINTS,
        ServicePointRegistered(
            **outlet(level="regional_center", kind=None, parent_id=None).model_dump()
        ),
    )
    moved = domain.UpdateServicePoint(center, None, "moved", child_regions=frozenset({"east"}))
    with pytest.raises(RuleViolation) as err:
        domain.decide_update_service_point(moved, state)
    assert rule(err) == "child_region"
    empty = domain.UpdateServicePoint(center, None, "moved")
    (event,) = domain.decide_update_service_point(empty, state)
    assert isinstance(event, ServicePointUpdated) and event.region == "south"
    # Headquarters has no region: the centers under it serve every one, and it stays
    # updatable (it was refused for serving them).
    hq = outlet(level="headquarters", kind=None, parent_id=None, region=None)
    hq_state = given_member(SERVICE_POINTS, ServicePointRegistered(**hq.model_dump()))
    renamed = domain.UpdateServicePoint(
        hq.model_copy(update={"name": "Head office"}),
        None,
        "renamed",
        child_regions=frozenset({"east", "west"}),
    )
    (event,) = domain.decide_update_service_point(renamed, hq_state)
    assert isinstance(event, ServicePointUpdated) and event.name == "Head office"


@pytest.mark.parametrize(
    ("description", "parent", "expected"),
    [
        (outlet(kind=None), RC_EAST, "kind"),
        (outlet(level="regional_center", kind=None, parent_id="hq", region=None), HQ, "region"),
        (outlet(level="headquarters", kind=None, parent_id=None), None, "region"),
        (outlet(parent_id=None), None, "parent_id"),
        (outlet(parent_id="nowhere"), None, "parent_id"),
        (outlet(parent_id="m-1"), RC_EAST, "parent_id"),  # its own parent
        (outlet(region="west", kind="dealer"), RC_EAST, "parent_region"),
        (outlet(parent_id="hq"), HQ, "parent_level"),
        (outlet(level="headquarters", kind=None, region=None), RC_EAST, "parent_id"),
        (outlet(level="regional_center", parent_id="hq"), HQ, "kind"),
    ],
)
def test_the_network_structure_rules(
    description: ServicePointDescription, parent: ServicePointInfo | None, expected: str
) -> None:
    command = domain.RegisterServicePoint(description, parent)
    with pytest.raises(DomainError) as err:
        domain.decide_register_service_point(command, given_member(SERVICE_POINTS))
    assert rule(err) == expected


def test_an_update_keeps_the_level_and_needs_a_service_point() -> None:
    point = given_member(SERVICE_POINTS, ServicePointRegistered(**outlet().model_dump()))
    update = domain.UpdateServicePoint(outlet(postcodes=["3100"]), RC_EAST, reason="narrower")
    (event,) = domain.decide_update_service_point(update, point)
    assert event.event_type == "ServicePointUpdated" and event.reason == "narrower"  # type: ignore[attr-defined]
    moved = domain.UpdateServicePoint(outlet(level="regional_center", kind=None), HQ)
    with pytest.raises(RuleViolation) as err:
        domain.decide_update_service_point(moved, point)
    assert rule(err) == "level_fixed"
    with pytest.raises(NotFound):
        domain.decide_update_service_point(update, given_member(SERVICE_POINTS))


def technician_description(**changes: Any) -> TechnicianDescription:
    data = {"name": "A", "service_point_id": "sp", "skills": ["wm"], **changes}
    return TechnicianDescription(**data)


def test_a_technician_works_at_an_active_service_point_in_a_known_timezone() -> None:
    fresh = given_member(TECHNICIANS)
    command = domain.RegisterTechnician(technician_description(), POINT)
    (event,) = domain.decide_register_technician(command, fresh)
    assert isinstance(event, TechnicianRegistered)
    assert domain.technicians_in("east").scope(fresh).region == "east"
    for description, point, expected in (
        (technician_description(), None, "service_point_id"),
        (
            technician_description(),
            ServicePointInfo("sp", "SP", POINT.level, "east", active=False),
            "service_point_inactive",
        ),
        (technician_description(timezone="Mars/Base"), POINT, "timezone"),
    ):
        with pytest.raises(DomainError) as err:
            domain.decide_register_technician(domain.RegisterTechnician(description, point), fresh)
        assert rule(err) == expected
    with pytest.raises(RuleViolation) as err:
        domain.decide_register_technician(command, given_member(TECHNICIANS, event))
    assert rule(err) == "already_registered"


def test_a_technician_update_and_duty_changes() -> None:
    registered = given_member(
        TECHNICIANS, TechnicianRegistered(**technician_description().model_dump())
    )
    update = domain.UpdateTechnician(technician_description(skills=["dryers"]), POINT, "new skill")
    (event,) = domain.decide_update_technician(update, registered)
    assert event.event_type == "TechnicianUpdated"
    with pytest.raises(NotFound) as missing:
        domain.decide_update_technician(update, given_member(TECHNICIANS))
    assert rule(missing) == "technician_not_found"

    off = domain.SetTechnicianActive(active=False, reason="on leave")
    (deactivated,) = domain.decide_set_technician_active(off, registered)
    assert isinstance(deactivated, TechnicianDeactivated)
    inactive = given_member(
        TECHNICIANS, TechnicianRegistered(name="A", service_point_id="sp"), deactivated
    )
    with pytest.raises(RuleViolation) as err:
        domain.decide_set_technician_active(off, inactive)
    assert rule(err) == "already_inactive"
    back = domain.SetTechnicianActive(active=True, reason="back")
    (reactivated,) = domain.decide_set_technician_active(back, inactive)
    assert isinstance(reactivated, TechnicianReactivated)
    with pytest.raises(RuleViolation) as err:
        domain.decide_set_technician_active(back, registered)
    assert rule(err) == "already_active"


# --- dispatch ----------------------------------------------------------------------------


def test_the_service_chooses_the_least_loaded_technician_and_says_why() -> None:
    ticket = given_ticket(washing_machine(), diagnosed())
    command = dispatch_command(loads={"t-a": 2})
    (event,) = domain.decide_dispatch(command, ticket)
    assert isinstance(event, TicketDispatched)
    assert (event.technician_id, event.service_point_id, event.redispatch) == ("t-b", "sp", False)
    assert (event.appointment_start, event.appointment_end) == (
        MONDAY_9,
        MONDAY_9 + timedelta(hours=2),
    )
    assert event.reason.startswith("suggested: t-b at sp")
    assert [c.technician.id for c in domain.assign(command, ticket).candidates] == ["t-b", "t-a"]
    elsewhere = dispatch_command(service_point_id="sp-other")
    with pytest.raises(InvalidCommand) as unknown:  # no such point: the field is wrong
        domain.decide_dispatch(elsewhere, ticket)
    assert unknown.value.field == "service_point_id"


def test_a_named_technician_must_exist_be_active_and_work_in_the_region() -> None:
    ticket = given_ticket(washing_machine(), diagnosed())
    west = ServicePointInfo(id="sp-w", name="W", level=NetworkLevel.service_point, region="west")
    cases = [
        (dispatch_command(technician_id="t-x", technicians=()), "technician_id"),
        (dispatch_command(technician_id="t-a", service_point_id="sp-2"), "service_point_id"),
        (
            dispatch_command(technician_id="t-a", technicians=(tech("t-a", active=False),)),
            "technician_inactive",
        ),
        (dispatch_command(technician_id="t-a", points=()), "service_point_inactive"),
        (
            dispatch_command(
                technician_id="t-w",
                technicians=(tech("t-w", service_point_id="sp-w"),),
                points=(west,),
            ),
            "region_mismatch",
        ),
    ]
    for command, expected in cases:
        with pytest.raises(DomainError) as err:
            domain.decide_dispatch(command, ticket)
        assert rule(err) == expected, expected


def test_a_named_technician_may_be_an_override_recorded_in_the_reason() -> None:
    ticket = given_ticket(washing_machine(), diagnosed())
    fridges = tech("t-c", skills=frozenset({"fridges"}))
    command = dispatch_command(
        technician_id="t-c",
        technicians=(fridges,),
        loads={"t-c": 1},
        window=(MONDAY_9 + timedelta(hours=10), MONDAY_9 + timedelta(hours=11)),
        reason="customer asked for C",
    )
    (event,) = domain.decide_dispatch(command, ticket)
    assert isinstance(event, TicketDispatched)
    assert event.reason.startswith("dispatcher's note: customer asked for C — named by the")
    assert "override: no wm skill on record" in event.reason
    assert "outside the technician's working hours" in event.reason
    assert "1 other open assignment(s)" in event.reason
    assert domain.assign(command, ticket).candidates == ()
    idle = dispatch_command(technician_id="t-a", technicians=(tech("t-a", days=()),))
    with pytest.raises(InvalidCommand) as err:
        domain.decide_dispatch(idle, ticket)
    assert rule(err) == "appointment_start"


def test_dispatch_follows_the_lifecycle() -> None:
    command = dispatch_command()
    for state, expected in (
        (given_ticket(), "ticket_not_found"),
        (given_ticket(washing_machine()), "not_diagnosed"),
        (
            given_ticket(washing_machine(), diagnosed(), dispatched(), visited(), repaired()),
            "already_repaired",
        ),
        (given_ticket(washing_machine(), diagnosed(), TicketClosed()), "ticket_closed"),
    ):
        with pytest.raises(DomainError) as err:
            domain.decide_dispatch(command, state)
        assert rule(err) == expected, expected
    reopened = given_ticket(
        washing_machine(),
        diagnosed(),
        dispatched(),
        visited(),
        repaired(),
        TicketReopened(reason="still noisy", source="follow_up"),
    )
    with pytest.raises(InvalidCommand) as err:
        domain.decide_dispatch(command, reopened)
    assert rule(err) == "reason"
    (again,) = domain.decide_dispatch(dispatch_command(reason="noise persists"), reopened)
    assert isinstance(again, TicketDispatched) and again.redispatch
    assert again.reason.startswith("re-dispatch: noise persists — suggested")


def test_an_appointment_window_must_be_ordered_and_ahead() -> None:
    ticket = given_ticket(washing_machine(), diagnosed())
    for window in (
        (MONDAY_9 + timedelta(hours=2), MONDAY_9 + timedelta(hours=1)),
        (MONDAY_9 - timedelta(hours=3), MONDAY_9 - timedelta(hours=1)),
    ):
        with pytest.raises(InvalidCommand) as err:
            domain.decide_dispatch(dispatch_command(window=window), ticket)
        assert rule(err) == "appointment_end"
    # Worded for an imported row too, whose dispatch time is its dispatched_at.
    assert "ended by the dispatch's time (2026-" in str(err.value)
    evening = (MONDAY_9 + timedelta(hours=11), MONDAY_9 + timedelta(hours=12))
    with pytest.raises(RuleViolation) as nobody:
        domain.decide_dispatch(dispatch_command(window=evening), ticket)
    assert "during the requested window" in str(nobody.value.detail)


# --- visit and repair --------------------------------------------------------------------


def visit_at(arrived_at: datetime | None = None) -> RecordVisit:
    return RecordVisit(Visit(findings="belt worn", arrived_at=arrived_at), now=MONDAY_9)


def test_a_visit_follows_a_dispatch_by_the_dispatched_technician() -> None:
    ticket = given_ticket(washing_machine(), diagnosed(), dispatched("t-a"))
    (event,) = domain.decide_visit(visit_at(), ticket)
    assert isinstance(event, TicketVisited)
    assert (event.technician_id, event.arrived_at) == ("t-a", MONDAY_9)
    for arrived_at in (MONDAY_9 + timedelta(minutes=1), MONDAY_9 - timedelta(days=1)):
        with pytest.raises(InvalidCommand) as err:
            domain.decide_visit(visit_at(arrived_at), ticket)
        assert rule(err) == "arrived_at"
    for state, expected in (
        (given_ticket(washing_machine(), diagnosed()), "not_dispatched"),
        (
            given_ticket(washing_machine(), diagnosed(), dispatched(), visited(), repaired()),
            "already_repaired",
        ),
    ):
        with pytest.raises(RuleViolation) as err:
            domain.decide_visit(visit_at(), state)
        assert rule(err) == expected


def test_a_visit_is_not_before_the_dispatch() -> None:
    ticket = given_ticket(washing_machine(), diagnosed(), at=MONDAY_9 - timedelta(hours=3))
    ticket = TICKETS.evolve(ticket, dispatched("t-a"), MONDAY_9 - timedelta(hours=1))
    early = MONDAY_9 - timedelta(hours=2)  # after the receipt, before the dispatch
    with pytest.raises(InvalidCommand) as err:
        domain.decide_visit(visit_at(early), ticket)
    assert rule(err) == "arrived_at" and "before the dispatch" in str(err.value)
    (event,) = domain.decide_visit(visit_at(MONDAY_9 - timedelta(minutes=30)), ticket)
    assert isinstance(event, TicketVisited)
    # Arrivals are written to the minute: 08:00 follows a dispatch recorded at 08:00:37.
    late = TICKETS.evolve(ticket, dispatched("t-a"), MONDAY_9 - timedelta(minutes=59, seconds=23))
    (event,) = domain.decide_visit(visit_at(MONDAY_9 - timedelta(hours=1)), late)
    assert isinstance(event, TicketVisited)


def test_a_check_in_again_is_not_before_the_previous_one() -> None:
    earlier = MONDAY_9 - timedelta(hours=3)
    ticket = given_ticket(washing_machine(), diagnosed(), dispatched("t-a"), visited(), at=earlier)
    with pytest.raises(InvalidCommand) as err:
        domain.decide_visit(visit_at(MONDAY_9 - timedelta(minutes=1)), ticket)
    assert rule(err) == "arrived_at" and "before the previous check-in" in str(err.value)
    # To the minute, as against the dispatch: 09:00 written by hand follows an app's 09:00:23.
    at_23 = TICKETS.evolve(
        ticket,
        visited().model_copy(update={"arrived_at": MONDAY_9 + timedelta(seconds=23)}),
        MONDAY_9,
    )
    (event,) = domain.decide_visit(visit_at(MONDAY_9), at_23)
    assert isinstance(event, TicketVisited)


def test_a_repair_on_site_needs_a_visit_since_the_dispatch() -> None:
    repair = RecordRepair(outcome=RepairOutcome.fixed, labour_minutes=40)
    for state, expected in (
        (given_ticket(washing_machine()), "not_diagnosed"),
        (given_ticket(washing_machine(), diagnosed()), "not_dispatched"),
        (given_ticket(washing_machine(), diagnosed(), dispatched()), "visit_required"),
        (
            given_ticket(washing_machine(), diagnosed(), dispatched(), visited(), repaired()),
            "already_repaired",
        ),
    ):
        with pytest.raises(RuleViolation) as err:
            domain.decide_repair(repair, state)
        assert rule(err) == expected
    visited_ticket = given_ticket(washing_machine(), diagnosed(), dispatched("t-a"), visited())
    (event,) = domain.decide_repair(repair, visited_ticket)
    assert isinstance(event, TicketRepaired)
    assert (event.technician_id, event.cost_borne_by) == ("t-a", CostBearer.warranty)
    with pytest.raises(InvalidCommand) as err:
        domain.decide_repair(RecordRepair(outcome=RepairOutcome.replaced), visited_ticket)
    assert rule(err) == "parts_used"
    part = UsedPart(part_number="M-1", new_serial="N1", old_serial="O1", under_warranty=True)
    replaced = RecordRepair(outcome=RepairOutcome.replaced, parts_used=(part,))
    (event,) = domain.decide_repair(replaced, visited_ticket)
    assert event.parts_used[0].old_serial == "O1"  # type: ignore[attr-defined]


def test_remote_guidance_is_repaired_without_a_visit_and_cost_follows_the_warranty() -> None:
    remote = given_ticket(
        washing_machine(warranty_status="out_of_warranty"),
        diagnosed(resolution_path="remote_guidance"),
    )
    (event,) = domain.decide_repair(RecordRepair(outcome=RepairOutcome.fixed), remote)
    assert isinstance(event, TicketRepaired)
    assert (event.technician_id, event.cost_borne_by) == (None, CostBearer.customer)
    # Reopened, it goes out again (or is diagnosed again) before the next repair.
    reopened = given_ticket(
        washing_machine(),
        diagnosed(resolution_path="remote_guidance"),
        repaired(),
        TicketReopened(reason="still broken", source="follow_up"),
    )
    with pytest.raises(RuleViolation) as err:
        domain.decide_repair(RecordRepair(outcome=RepairOutcome.fixed), reopened)
    assert rule(err) == "not_dispatched"


# --- SLA clock and repeat repairs --------------------------------------------------------


def state_after(*payloads, at: datetime = MONDAY_9) -> TicketState:  # type: ignore[no-untyped-def]
    state = TicketState(ticket_id="t1")
    for p in payloads:
        state = evolve(state, p, occurred_at=at)
    return state


def sla(now: datetime, state: TicketState) -> list[EventPayload]:
    return domain.decide_sla(CheckSla(now), state)


def test_sla_decision_records_each_deadline_once() -> None:
    fresh = state_after(received(response_due_at=MONDAY_9 + timedelta(hours=2)))
    assert sla(MONDAY_9 + timedelta(hours=1), fresh) == []
    assert sla(MONDAY_9, TicketState(ticket_id="none")) == []
    events = sla(MONDAY_9 + timedelta(hours=3), fresh)
    assert [e.event_type for e in events] == ["SlaBreached", "TicketEscalated"]
    breached = state_after(received(response_due_at=MONDAY_9 + timedelta(hours=2)), events[0])
    assert isinstance(events[0], SlaBreached) and breached.breached == {"response"}
    assert sla(MONDAY_9 + timedelta(days=3), breached) == []
    # Once diagnosed, the resolution deadline runs on its own.
    due = MONDAY_9 + timedelta(hours=4)
    later = evolve(breached, diagnosed(resolution_due_at=due), occurred_at=MONDAY_9)
    (breach, escalation) = sla(due + timedelta(minutes=90), later)
    assert breach.deadline.value == "resolution" and breach.overdue_minutes == 90  # type: ignore[attr-defined]
    assert "resolution deadline" in escalation.reason  # type: ignore[attr-defined]


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
    events = sla(MONDAY_9 + timedelta(days=1), repaired_late)
    assert [(e.deadline.value, e.overdue_minutes) for e in events] == [  # type: ignore[attr-defined]
        ("response", 50),
        ("resolution", 120),
    ]
    settled = repaired_late
    for event in events:
        settled = evolve(settled, event, occurred_at=MONDAY_9 + timedelta(days=1))
    assert sla(MONDAY_9 + timedelta(days=2), settled) == []
    # Met in time: nothing to record.
    on_time = evolve(
        state_after(received(response_due_at=due)),
        diagnosed(resolution_due_at=MONDAY_9 + timedelta(hours=4)),
        occurred_at=MONDAY_9 + timedelta(hours=1),
    )
    assert sla(MONDAY_9 + timedelta(hours=3), on_time) == []


def test_repeat_repair_window_uses_event_times() -> None:
    state = state_after(
        received(product={"model": "WM-700", "serial_number": "SN1", "purchase_date": "2026-03-01"})
    )
    inside = EarlierRepair("old", MONDAY_9 - timedelta(days=30), RepairOutcome.replaced)
    outside = EarlierRepair("older", MONDAY_9 - timedelta(days=31), RepairOutcome.fixed)
    declined = EarlierRepair("x", MONDAY_9 - timedelta(days=1), RepairOutcome.customer_declined)
    itself = EarlierRepair("t1", MONDAY_9 - timedelta(days=1), RepairOutcome.fixed)

    def flag(state: TicketState, *earlier: EarlierRepair) -> list[EventPayload]:
        return domain.decide_repeat_repair(FlagRepeatRepair(earlier, window_days=30), state)

    (event,) = flag(state, outside, inside, declined, itself)
    assert event.earlier_ticket_id == "old"  # type: ignore[attr-defined]
    assert flag(state, outside, declined) == []
    flagged = evolve(state, event, occurred_at=MONDAY_9)
    assert flag(flagged, inside) == []
    no_serial = state_after(received(product={"model": "WM-700", "purchase_date": "2026-03-01"}))
    assert flag(no_serial, inside) == []
    assert flag(TicketState(ticket_id="none"), inside) == []


def test_addresses_in_facts_are_normalised_for_coverage() -> None:
    ticket = given_ticket(
        washing_machine(address=Address(line="1 Road", region="east", postcode="3100 01"))
    )
    assert domain.ticket_facts(ticket) == TicketFacts("east", "3100 01", "wm")


def test_an_erased_postcode_leaves_coverage_to_the_region() -> None:
    """A reopened ticket of an erased customer can still be dispatched by region."""
    from shared.kernel.personal import ERASED

    address = Address.model_construct(line=ERASED, region="east", postcode=ERASED, city=None)
    ticket = given_ticket(washing_machine(address=address))
    assert domain.ticket_facts(ticket) == TicketFacts("east", None, "wm")

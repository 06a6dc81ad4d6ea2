"""The closed-loop checklist, given/when/then: given a ticket's events (and the parts
service's paperwork), when a rule reads the facts they fold into, then the item it gives.
No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.feedback import compliance
from services.feedback.compliance import FALSE, PENDING, TRUE, Item
from services.feedback.facts import Facts, Recorded, Seen, fold
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.parts import OldPartReturnExpected
from shared.kernel.events.tickets import (
    Address,
    Channel,
    ComplaintFiled,
    ContactDetailsCorrected,
    CostBearer,
    FollowUpChannel,
    FollowUpRecorded,
    OldPartReturned,
    OldPartReturnOverdue,
    RepairOutcome,
    RepeatRepairFlagged,
    SlaBreached,
    SlaDeadline,
    TicketClosed,
    TicketDispatched,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
    UsedPart,
)
from shared.kernel.events.tickets import (
    ResolutionPath as P,
)
from shared.kernel.lifecycle import TicketStatus as S
from tests.support.factories import diagnosed, received

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


class Ticket:
    """A ticket's story: ``at(hours)`` moves the clock, each event returns its id."""

    def __init__(self) -> None:
        self.now = T0
        self.events: list[Recorded] = []
        self.paperwork: list[Recorded] = []
        self.record(received(response_due_at=T0 + timedelta(hours=2)))

    def at(self, hours: float) -> Ticket:
        self.now = T0 + timedelta(hours=hours)
        return self

    def record(self, payload: EventPayload) -> str:
        event_id = f"e{len(self.events) + 1}"
        self.events.append(Recorded(event_id, self.now, len(self.events) + 1, payload))
        return event_id

    def diagnose(self, path: str = "on_site", due_hours: float = 24) -> str:
        due = T0 + timedelta(hours=due_hours)
        return self.record(diagnosed(resolution_path=path, resolution_due_at=due))

    def dispatch(self, point: str = "sp-1", window_hours: float = 2) -> str:
        return self.record(
            TicketDispatched(
                region="east",
                service_point_id=point,
                technician_id="tech-1",
                appointment_start=self.now,
                appointment_end=self.now + timedelta(hours=window_hours),
                reason="nearest",
            )
        )

    def visit(self) -> str:
        return self.record(TicketVisited(technician_id="tech-1", arrived_at=self.now, findings="-"))

    def repair(self, *parts: UsedPart, outcome: str = "fixed") -> str:
        return self.record(
            TicketRepaired(
                outcome=RepairOutcome(outcome),
                parts_used=list(parts),
                cost_borne_by=CostBearer.warranty,
            )
        )

    def follow_up(self, satisfied: bool = True) -> tuple[str, str]:
        said = self.record(
            FollowUpRecorded(
                satisfaction_score=95 if satisfied else 30,
                would_recommend=9,
                problem_solved=True,
                channel=FollowUpChannel.call,
            )
        )
        if satisfied:
            return said, self.record(TicketClosed())
        return said, self.record(TicketReopened(reason="follow-up", source="follow_up"))

    def through_repair(self, *parts: UsedPart) -> str:
        self.at(1).diagnose()
        self.at(2).dispatch()
        self.at(3).visit()
        return self.at(4).repair(*parts)

    def expect(self, part: str, quantity: int = 1) -> str:
        """The parts service decided this old part must come back."""
        event_id = f"x{len(self.paperwork) + 1}"
        payload = OldPartReturnExpected(
            ticket_id="t-1",
            part_number=part,
            quantity=quantity,
            due_at=self.now + timedelta(days=7),
            trigger_event_id="e?",
        )
        self.paperwork.append(Recorded(event_id, self.now, len(self.paperwork) + 1, payload))
        return event_id

    def returned(
        self, part: str, quantity: int = 1, late: bool = False, old_serial: str | None = None
    ) -> str:
        due = self.now + timedelta(days=-1 if late else 7)
        payload = OldPartReturned(
            part_number=part,
            old_serial=old_serial,
            quantity=quantity,
            location_id="loc-1",
            due_at=due,
            late=late,
        )
        return self.record(payload)

    def overdue(self, part: str, old_serial: str | None = None) -> str:
        return self.record(
            OldPartReturnOverdue(
                part_number=part,
                old_serial=old_serial,
                due_at=self.now - timedelta(days=1),  # as a late return recorded now
                detected_at=self.now,
            )
        )

    @property
    def facts(self) -> Facts:
        facts = fold("t-1", "agent-7", self.events, self.paperwork)
        assert facts is not None
        return facts


def part(number: str = "MOTOR-1", under_warranty: bool = True) -> UsedPart:
    return UsedPart(part_number=number, under_warranty=under_warranty)


# --- 1. responded within the SLA -----------------------------------------------------------


def test_responded_in_time_names_the_receipt_and_the_first_diagnosis() -> None:
    t = Ticket()
    first = t.at(1).diagnose()
    t.at(5).diagnose()
    assert compliance.responded_within_sla(t.facts) == Item(
        TRUE, ("e1", first), "responded in time"
    )


def test_responded_late() -> None:
    t = Ticket()
    late = t.at(3).diagnose()
    assert compliance.responded_within_sla(t.facts).status == FALSE
    assert compliance.responded_within_sla(t.facts).evidence == ("e1", late)


def test_no_response_is_pending_until_an_event_shows_the_deadline_passed() -> None:
    t = Ticket()
    assert compliance.responded_within_sla(t.facts) == Item(
        PENDING, ("e1",), "awaiting the first response"
    )
    breach = t.at(3).record(
        SlaBreached(deadline=SlaDeadline.response, due_at=T0, detected_at=t.now, overdue_minutes=60)
    )
    assert compliance.responded_within_sla(t.facts) == Item(FALSE, ("e1", breach), "SLA breached")
    silent = Ticket()
    later = silent.at(3).record(ComplaintFiled(complaint="nobody called", channel=Channel.phone))
    item = compliance.responded_within_sla(silent.facts)
    assert (item.status, item.evidence) == (FALSE, ("e1", later))


# --- 2. resolved within the SLA ------------------------------------------------------------


def test_resolved_in_time_and_late() -> None:
    t = Ticket()
    diagnosis = t.at(1).diagnose(due_hours=6)
    repair = t.at(5).repair()
    assert compliance.resolved_within_sla(t.facts) == Item(
        TRUE, (diagnosis, repair), "resolved in time"
    )
    late = Ticket()
    late.at(1).diagnose(due_hours=4)
    late.at(5).repair()
    assert compliance.resolved_within_sla(late.facts).status == FALSE


def test_unresolved_is_pending_until_an_event_shows_the_deadline_passed() -> None:
    t = Ticket()
    t.at(1).diagnose(due_hours=4)
    t.at(2).dispatch()
    assert compliance.resolved_within_sla(t.facts) == Item(PENDING, (), "not resolved yet")
    visit = t.at(5).visit()
    assert compliance.resolved_within_sla(t.facts) == Item(
        FALSE, (visit,), "not resolved before a later event past the deadline"
    )


def test_a_repair_without_a_diagnosis_is_not_resolved_in_time() -> None:
    t = Ticket()
    repair = t.at(1).repair()
    assert compliance.resolved_within_sla(t.facts) == Item(
        FALSE, (repair,), "repaired without a diagnosis"
    )


# --- 3. visited before the repair ----------------------------------------------------------


def test_an_on_site_repair_needs_a_visit_since_the_latest_dispatch() -> None:
    t = Ticket()
    t.through_repair()
    visit = "e4"
    assert compliance.visited_before_repair(t.facts) == Item(
        TRUE, (visit,), "visited before the repair"
    )
    again = Ticket()
    again.at(1).diagnose()
    again.at(2).dispatch()
    again.at(3).visit()
    again.at(4).dispatch()  # re-dispatched: the earlier visit no longer counts
    repair = again.at(5).repair()
    assert compliance.visited_before_repair(again.facts) == Item(
        FALSE, (repair,), "on-site repair without a visit"
    )


def test_a_remote_repair_needs_no_visit_and_no_repair_is_pending() -> None:
    t = Ticket()
    assert compliance.visited_before_repair(t.facts).status == PENDING
    t.at(1).diagnose(path="remote_guidance")
    repair = t.repair()
    assert compliance.visited_before_repair(t.facts) == Item(
        TRUE, (repair,), "not an on-site repair"
    )


# --- 4. follow-up done ---------------------------------------------------------------------


def test_a_follow_up_after_the_repair() -> None:
    t = Ticket()
    repair = t.through_repair()
    assert compliance.follow_up_done(t.facts) == Item(PENDING, (repair,), "awaiting the follow-up")
    said, _ = t.at(5).follow_up()
    assert compliance.follow_up_done(t.facts) == Item(TRUE, (repair, said), "after the repair")


def test_closing_without_a_follow_up_fails() -> None:
    t = Ticket()
    t.through_repair()
    closed = t.at(5).record(TicketClosed())
    assert compliance.follow_up_done(t.facts) == Item(
        FALSE, (closed,), "closed without a follow-up"
    )


def test_a_follow_up_without_a_repair_fails_and_a_new_repair_awaits_its_own() -> None:
    t = Ticket()
    said = t.record(
        FollowUpRecorded(
            satisfaction_score=90, would_recommend=9, problem_solved=True, channel="call"
        )
    )
    assert compliance.follow_up_done(t.facts) == Item(FALSE, (said,), "follow-up without a repair")
    reopened = Ticket()
    reopened.through_repair()
    reopened.at(5).follow_up(satisfied=False)
    reopened.at(6).dispatch()
    reopened.at(7).visit()
    second = reopened.at(8).repair()
    assert compliance.follow_up_done(reopened.facts).evidence == (second,)


# --- 5. satisfied --------------------------------------------------------------------------


def test_the_customers_latest_word_counts() -> None:
    t = Ticket()
    t.through_repair()
    assert compliance.satisfied(t.facts) == Item(PENDING, (), "no follow-up yet")
    said, reopened = t.at(5).follow_up(satisfied=False)
    assert compliance.satisfied(t.facts) == Item(
        FALSE, (said, reopened), "dissatisfied or unsolved: reopened"
    )
    t.at(6).dispatch()
    t.at(7).visit()
    t.at(8).repair()
    said, closed = t.at(9).follow_up()
    assert compliance.satisfied(t.facts) == Item(TRUE, (said, closed), "satisfied and solved")
    complaint = t.at(10).record(ComplaintFiled(complaint="broke again", channel=Channel.web))
    reopened = t.record(TicketReopened(reason="complaint", source="complaint"))
    assert compliance.satisfied(t.facts) == Item(
        FALSE, (complaint, reopened), "complaint reopened it"
    )


# --- 6. parts returned ---------------------------------------------------------------------


def test_an_expected_part_is_pending_until_returned_matched_case_insensitively() -> None:
    t = Ticket()
    t.through_repair(part("pump-7", under_warranty=False))
    expected = t.expect("PUMP-7")
    assert compliance.parts_returned(t.facts) == Item(
        PENDING, (expected,), "awaiting return of PUMP-7"
    )
    returned = t.at(30).returned(" pump-7 ")
    assert compliance.parts_returned(t.facts) == Item(TRUE, (returned,), "all returned on time")


def test_quantities_are_summed_per_part() -> None:
    t = Ticket()
    t.through_repair(part(), part())
    t.expect("MOTOR-1")
    t.expect("MOTOR-1")
    t.at(30).returned("MOTOR-1")
    assert compliance.parts_returned(t.facts).status == PENDING
    t.returned("motor-1")
    assert compliance.parts_returned(t.facts).status == TRUE


def test_a_part_replaced_under_warranty_is_owed_before_the_parts_service_says_so() -> None:
    """The parts service decides what must come back (``return_expected``); a part the
    repair replaced under warranty always must, so the checklist owes it from the repair
    itself (the service's reactor may lag) and takes the service's expectation, when it
    comes, for the same part. Parts the warranty did not bear are owed only once the
    service expects them (the catalogue's say): until then the repair is compliant."""
    t = Ticket()
    assert compliance.parts_returned(t.facts) == Item(PENDING, (), "not repaired yet")
    repair = t.through_repair(part(under_warranty=True))
    owed = "awaiting return of MOTOR-1"
    assert compliance.parts_returned(t.facts) == Item(PENDING, (repair,), owed)
    expected = t.expect("MOTOR-1")
    assert compliance.parts_returned(t.facts) == Item(PENDING, (expected,), owed)
    other = Ticket()
    fixed = other.through_repair(part(under_warranty=False))
    nothing = "no old parts expected back"
    assert compliance.parts_returned(other.facts) == Item(TRUE, (fixed,), nothing)


def test_a_late_or_overdue_part_fails_grouped_by_part() -> None:
    t = Ticket()
    t.through_repair(part("A-1"), part("B-2"))
    t.expect("A-1")
    t.expect("B-2")
    overdue_a = t.at(200).overdue("a-1")
    overdue_b = t.overdue("B-2")
    late_a = t.returned("A-1", late=True)
    assert compliance.parts_returned(t.facts) == Item(
        FALSE, (overdue_a, late_a, overdue_b), "returned late or overdue"
    )


# --- 7. steps in order ---------------------------------------------------------------------


def test_every_step_in_order_is_true_once_closed() -> None:
    t = Ticket()
    t.through_repair()
    assert compliance.steps_in_order(t.facts) == Item(PENDING, (), "ticket still open")
    _, closed = t.at(5).follow_up()
    assert compliance.steps_in_order(t.facts) == Item(
        TRUE, ("e1", closed), "closed, every step in order"
    )


def test_the_lifecycle_table_judges_each_step() -> None:
    t = Ticket()
    visit = t.at(1).visit()  # before any diagnosis or dispatch
    assert compliance.steps_in_order(t.facts) == Item(
        FALSE, (visit,), "TicketVisited after received"
    )
    skipped = Ticket()
    skipped.at(1).diagnose()
    skipped.at(2).dispatch()
    repair = skipped.at(3).repair()  # on site, but no visit
    closed = skipped.at(4).record(TicketClosed())  # and no follow-up
    assert compliance.steps_in_order(skipped.facts) == Item(
        FALSE,
        (repair, closed),
        "TicketRepaired after dispatched; TicketClosed after repaired",
    )


def test_remote_guidance_may_repair_straight_after_the_diagnosis() -> None:
    t = Ticket()
    t.at(1).diagnose(path="remote_guidance")
    t.repair()
    t.at(2).follow_up()
    assert compliance.steps_in_order(t.facts).status == TRUE


# --- first-time fix and the overall verdict ------------------------------------------------


def test_first_time_fix() -> None:
    t = Ticket()
    repair = t.through_repair()
    assert compliance.first_time_fix(t.facts) == Item(PENDING, (repair,), "awaiting the follow-up")
    _, closed = t.at(5).follow_up()
    assert compliance.first_time_fix(t.facts) == Item(
        TRUE, (repair, closed), "fixed the first time"
    )
    reopened = Ticket()
    first = reopened.through_repair()
    _, reopen = reopened.at(5).follow_up(satisfied=False)
    assert compliance.first_time_fix(reopened.facts) == Item(FALSE, (first, reopen), "reopened")
    not_fixed = Ticket()
    not_fixed.at(1).diagnose()
    not_fixed.at(2).dispatch()
    not_fixed.at(3).visit()
    first = not_fixed.at(4).repair(outcome="not_fixable")
    assert compliance.first_time_fix(not_fixed.facts) == Item(
        FALSE, (first,), "first repair not_fixable"
    )
    twice = Ticket()
    twice.at(1).diagnose()
    twice.at(2).dispatch()
    visits = (twice.at(3).visit(), twice.at(4).visit())
    twice.at(5).repair()
    assert compliance.first_time_fix(twice.facts) == Item(FALSE, visits, "more than one visit")


def test_compliant_only_when_every_item_is_true() -> None:
    yes, no, wait = Item(TRUE), Item(FALSE), Item(PENDING)
    assert compliance.compliant([yes, yes]) == TRUE
    assert compliance.compliant([yes, wait]) == PENDING
    assert compliance.compliant([wait, no, yes]) == FALSE
    assert tuple(compliance.RULES) == compliance.ITEMS


# --- the facts the scorecards read ---------------------------------------------------------


def test_deductions_at_the_point_and_region_of_their_moment() -> None:
    t = Ticket()
    t.through_repair(part())
    t.at(5).record(ComplaintFiled(complaint="on the radio", channel=Channel.web, public=True))
    t.at(200).overdue("motor-1")
    t.returned("MOTOR-1", late=True)  # the same part: no second deduction
    t.record(
        ContactDetailsCorrected(address=Address(line="2 Lake Road", region="west"), reason="moved")
    )
    flag = t.record(
        RepeatRepairFlagged(
            earlier_ticket_id="t-0",
            earlier_repaired_at=T0 - timedelta(days=3),
            serial_number="SN",
            window_days=30,
        )
    )
    kinds = [(d.kind, d.service_point_id, d.region) for d in t.facts.deductions]
    assert kinds == [
        ("public_complaint", "sp-1", "east"),
        ("late_parts_return", "sp-1", "east"),
        ("repeat_repair", None, "west"),
    ]
    assert t.facts.deductions[-1].event_ids == (flag,)


def test_each_late_old_part_is_one_deduction() -> None:
    """Two old parts of one part number overdue are two deductions (DOMAIN.md: every
    part replaced under warranty comes back); the late return of one adds none."""
    t = Ticket()
    t.through_repair(part(), part())
    t.at(200).overdue("MOTOR-1", old_serial="O-A")
    t.overdue("MOTOR-1", old_serial="O-B")
    t.returned("MOTOR-1", late=True, old_serial="O-A")
    assert [d.kind for d in t.facts.deductions] == ["late_parts_return"] * 2
    # Without serials the notices still count one each; a late return never adds one.
    t = Ticket()
    t.through_repair(part(), part())
    t.at(200).overdue("MOTOR-1")
    t.overdue("MOTOR-1")
    t.returned("MOTOR-1", late=True)
    t.returned("MOTOR-1", late=True)
    assert len(t.facts.deductions) == 2
    # A late return with no notice before it is a late part too.
    t = Ticket()
    t.through_repair(part())
    t.at(200).returned("MOTOR-1", late=True)
    assert len(t.facts.deductions) == 1
    # The serial given only at the hand-in; a return handed in in parts; a notice for
    # what a late hand-in left outstanding: each still one late part.
    for steps in (
        [("overdue", None), ("returned", "O-A")],
        [("overdue", None), ("returned", None), ("returned", None)],
        [("returned", None), ("overdue", None)],
    ):
        t = Ticket()
        t.through_repair(part())
        t.at(200)
        for kind, serial in steps:
            if kind == "overdue":
                t.overdue("MOTOR-1", old_serial=serial)
            else:
                t.returned("MOTOR-1", late=True, old_serial=serial)
        assert len(t.facts.deductions) == 1, steps


def test_a_late_visit_judged_dissatisfied_is_a_deduction() -> None:
    t = Ticket()
    t.at(1).diagnose()
    dispatch = t.at(2).dispatch(window_hours=1)
    visit = t.at(4).visit()  # an hour after the window
    t.at(5).repair()
    said, _ = t.at(6).follow_up(satisfied=False)
    (deduction,) = t.facts.deductions
    assert (deduction.kind, deduction.event_ids) == (
        "late_visit_dissatisfied",
        (dispatch, visit, said),
    )
    assert t.facts.follow_ups[0].satisfactory is False


def test_a_repair_without_a_visit_is_in_order_only_where_none_is_needed() -> None:
    """docs/feedback.md: repaired ← visited, dispatched (not on-site), diagnosed (remote
    guidance) — a replacement straight from its diagnosis skipped the dispatch."""

    def allowed(before: S, path: P | None) -> bool:
        return compliance.step_allowed(Seen("e", "TicketRepaired", T0, before, path))

    assert [allowed(S.diagnosed, p) for p in (P.remote_guidance, P.replacement, P.on_site)] == [
        True,
        False,
        False,
    ]
    assert [allowed(S.dispatched, p) for p in (P.remote_guidance, P.replacement, P.on_site)] == [
        True,
        True,
        False,
    ]
    assert allowed(S.visited, P.on_site) and not allowed(S.dispatched, None)
    assert not allowed(S.received, P.remote_guidance)

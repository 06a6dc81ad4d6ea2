"""The closed-loop checklist of one ticket, computed from its events alone (pure).

Every item is ``"true"``, ``"false"`` or ``"pending"`` with the ids of the events that
decide it. "Pending" never depends on the wall clock: a deadline is missed only when an
event says so (an ``SlaBreached``, an ``OldPartReturnOverdue``, or any later event that
happened after the deadline with the step still missing). The same function feeds the
projection and the tests, so an auditor can recompute each row from the ticket's stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.kernel.events.envelope import EventEnvelope, EventPayload
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import (
    ComplaintFiled,
    ContactDetailsCorrected,
    FollowUpRecorded,
    OldPartReturned,
    OldPartReturnOverdue,
    RepairOutcome,
    RepeatRepairFlagged,
    ResolutionPath,
    SlaBreached,
    TicketClosed,
    TicketDiagnosed,
    TicketDispatched,
    TicketReceived,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
)

TRUE, FALSE, PENDING = "true", "false", "pending"

ITEMS: tuple[str, ...] = (
    "responded_within_sla",
    "resolved_within_sla",
    "visited_before_repair",
    "follow_up_done",
    "satisfied",
    "parts_returned",
    "steps_in_order",
)

FIXED_OUTCOMES = frozenset({RepairOutcome.fixed, RepairOutcome.replaced})

# Which lifecycle step may follow which (the status before → allowed next event).
ALLOWED_AFTER: dict[str, frozenset[str]] = {
    "TicketReceived": frozenset({"new"}),
    "TicketDiagnosed": frozenset({"received", "diagnosed", "reopened"}),
    "TicketDispatched": frozenset({"diagnosed", "dispatched", "visited", "reopened"}),
    "TicketVisited": frozenset({"dispatched", "visited"}),
    "TicketRepaired": frozenset({"visited", "dispatched", "diagnosed"}),
    "FollowUpRecorded": frozenset({"repaired"}),
    "TicketReopened": frozenset({"followed_up", "closed"}),
    "TicketClosed": frozenset({"followed_up"}),
}
STATUS_AFTER = {
    "TicketReceived": "received",
    "TicketDiagnosed": "diagnosed",
    "TicketDispatched": "dispatched",
    "TicketVisited": "visited",
    "TicketRepaired": "repaired",
    "FollowUpRecorded": "followed_up",
    "TicketReopened": "reopened",
    "TicketClosed": "closed",
}


@dataclass
class Item:
    status: str = PENDING
    evidence: list[str] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "evidence": self.evidence, "note": self.note}


@dataclass
class TicketCompliance:
    ticket_id: str
    ticket_number: str
    region: str
    month: str  # of the receipt, UTC
    received_at: datetime
    product_model: str
    fault_category: str | None
    agent_id: str | None
    service_point_id: str | None
    technician_id: str | None
    status: str
    version: int
    items: dict[str, Item]
    first_time_fix: Item
    # Facts the aggregates, KPIs and scorecards are computed from (all with event ids).
    follow_ups: list[dict[str, Any]]
    complaints: list[dict[str, Any]]
    visits: list[dict[str, Any]]
    repairs: list[dict[str, Any]]
    deductions: list[dict[str, Any]]
    corrections: list[str]

    @property
    def compliant(self) -> str:
        statuses = {item.status for item in self.items.values()}
        if FALSE in statuses:
            return FALSE
        return TRUE if statuses == {TRUE} else PENDING


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _month(value: datetime) -> str:
    return value.strftime("%Y-%m")


def compute(events: list[EventEnvelope]) -> TicketCompliance | None:
    """The checklist after these events (a ticket stream from version 1, in order)."""
    typed: list[tuple[EventEnvelope, EventPayload]] = [(e, typed_payload(e)) for e in events]
    if not typed or not isinstance(typed[0][1], TicketReceived):
        return None
    first, received = typed[0][0], typed[0][1]
    assert isinstance(received, TicketReceived)
    eid = {id(p): str(e.event_id) for e, p in typed}

    region = received.address.region
    status = "received"
    violations: list[str] = []
    notes: list[str] = []
    diagnosis: tuple[str, TicketDiagnosed] | None = None
    first_diagnosis: tuple[str, datetime] | None = None
    dispatch: tuple[str, TicketDispatched] | None = None
    visit_since_dispatch: list[tuple[str, TicketVisited, bool]] = []
    repairs: list[dict[str, Any]] = []
    visits: list[dict[str, Any]] = []
    follow_ups: list[dict[str, Any]] = []
    complaints: list[dict[str, Any]] = []
    corrections: list[str] = []
    deductions: list[dict[str, Any]] = []
    breaches: dict[str, str] = {}
    repeat_flags: list[tuple[str, RepeatRepairFlagged, datetime]] = []
    expected_parts: dict[str, int] = {}
    expected_by: dict[str, list[str]] = {}
    returned: dict[str, int] = {}
    returned_ids: list[str] = []
    late_parts: dict[str, list[str]] = {}
    on_site_missing_visit: list[str] = []
    on_site_visited: list[str] = []
    awaiting_follow_up: str | None = None
    follow_up_item = Item()
    # The customer's latest word: a follow-up verdict or a complaint that reopened.
    verdict = Item(note="no follow-up yet")
    pending_follow_up: dict[str, Any] | None = None
    closed_id: str | None = None
    first_late_event: tuple[str, datetime] | None = None  # first event after the response due
    late_for_resolution: str | None = None  # first event after the resolution due, unrepaired
    repair_times: list[tuple[datetime, datetime | None, str]] = []  # (at, due, diagnosis id)

    for envelope, payload in typed[1:]:
        event_id = eid[id(payload)]
        at = envelope.occurred_at
        kind = payload.event_type
        if (
            first_diagnosis is None
            and first_late_event is None
            and at > received.response_due_at
            and not isinstance(payload, TicketDiagnosed)
        ):
            first_late_event = (event_id, at)
        if (
            not repairs
            and late_for_resolution is None
            and diagnosis is not None
            and at > diagnosis[1].resolution_due_at
            and not isinstance(payload, TicketRepaired)
        ):
            late_for_resolution = event_id
        if kind in ALLOWED_AFTER:
            if status not in ALLOWED_AFTER[kind] or (
                isinstance(payload, TicketRepaired)
                and status in ("diagnosed", "dispatched")
                and (diagnosis is None or diagnosis[1].resolution_path is ResolutionPath.on_site)
            ):
                violations.append(event_id)
                notes.append(f"{kind} after {status}")
            status = STATUS_AFTER[kind]
        # A follow-up's verdict is the event that follows it in the same command.
        if pending_follow_up is not None and kind in ("TicketClosed", "TicketReopened"):
            satisfactory = kind == "TicketClosed"
            pending_follow_up["satisfactory"] = satisfactory
            verdict = Item(
                TRUE if satisfactory else FALSE,
                [pending_follow_up["event_id"], event_id],
                "satisfied and solved" if satisfactory else "dissatisfied or unsolved: reopened",
            )
            if not satisfactory:
                _late_visit_deduction(pending_follow_up, repairs, visits, deductions, region)
            pending_follow_up = None

        match payload:
            case ContactDetailsCorrected():
                corrections.append(event_id)
                if payload.address is not None:
                    region = payload.address.region
            case TicketDiagnosed():
                diagnosis = (event_id, payload)
                if first_diagnosis is None:
                    first_diagnosis = (event_id, at)
            case TicketDispatched():
                dispatch = (event_id, payload)
                visit_since_dispatch = []
            case TicketVisited():
                on_time = dispatch is None or payload.arrived_at <= dispatch[1].appointment_end
                visit_since_dispatch.append((event_id, payload, on_time))
                visits.append(
                    {
                        "event_id": event_id,
                        "dispatch_event_id": dispatch[0] if dispatch else None,
                        "technician_id": payload.technician_id,
                        "service_point_id": dispatch[1].service_point_id if dispatch else None,
                        "on_time": on_time,
                    }
                )
            case TicketRepaired():
                path = diagnosis[1].resolution_path if diagnosis else None
                if path is ResolutionPath.on_site:
                    if visit_since_dispatch:
                        on_site_visited.append(visit_since_dispatch[-1][0])
                    else:
                        on_site_missing_visit.append(event_id)
                wanted = set(diagnosis[1].expected_parts) if diagnosis else set()
                technician = payload.technician_id or (
                    dispatch[1].technician_id if dispatch else None
                )
                repairs.append(
                    {
                        "event_id": event_id,
                        "at": _iso(at),
                        "day": at.date().isoformat(),
                        "outcome": payload.outcome.value,
                        "fault_category": diagnosis[1].category.value if diagnosis else "other",
                        "technician_id": technician,
                        "visit_event_id": visit_since_dispatch[-1][0]
                        if visit_since_dispatch
                        else None,
                        "visits_before": len(visits),
                        "parts_as_expected": all(
                            p.part_number in wanted for p in payload.parts_used
                        ),
                    }
                )
                for part in payload.parts_used:
                    if part.under_warranty:
                        expected_parts[part.part_number] = (
                            expected_parts.get(part.part_number, 0) + part.quantity
                        )
                        expected_by.setdefault(part.part_number, []).append(event_id)
                repair_times.append(
                    (at, diagnosis[1].resolution_due_at, diagnosis[0])
                    if diagnosis
                    else (at, None, "")
                )
                awaiting_follow_up = event_id
            case FollowUpRecorded():
                pending_follow_up = {
                    "event_id": event_id,
                    "at": _iso(at),
                    "score": payload.satisfaction_score,
                    "would_recommend": payload.would_recommend,
                    "problem_solved": payload.problem_solved,
                    "satisfactory": None,
                    "repair_event_id": awaiting_follow_up,
                }
                follow_ups.append(pending_follow_up)
                if awaiting_follow_up is not None:
                    follow_up_item = Item(TRUE, [awaiting_follow_up, event_id], "after the repair")
                else:
                    follow_up_item = Item(FALSE, [event_id], "follow-up without a repair")
                awaiting_follow_up = None
            case TicketReopened():
                closed_id = None
                if payload.source == "complaint":
                    complaint_ids = [c["event_id"] for c in complaints[-1:]]
                    verdict = Item(FALSE, [*complaint_ids, event_id], "complaint reopened it")
            case TicketClosed():
                closed_id = event_id
                if awaiting_follow_up is not None or not follow_ups:
                    follow_up_item = Item(FALSE, [event_id], "closed without a follow-up")
            case ComplaintFiled():
                sp = dispatch[1].service_point_id if dispatch else None
                complaints.append({"event_id": event_id, "at": _iso(at), "public": payload.public})
                if payload.public:
                    deductions.append(_deduction("public_complaint", at, sp, region, [event_id]))
            case SlaBreached():
                breaches.setdefault(payload.deadline.value, event_id)
            case RepeatRepairFlagged():
                repeat_flags.append((event_id, payload, at))
            case OldPartReturned():
                returned[payload.part_number] = (
                    returned.get(payload.part_number, 0) + payload.quantity
                )
                returned_ids.append(event_id)
                if payload.late:
                    _late_part(
                        late_parts,
                        deductions,
                        payload.part_number,
                        event_id,
                        at,
                        payload.service_point_id
                        or (dispatch[1].service_point_id if dispatch else None),
                        region,
                    )
            case OldPartReturnOverdue():
                _late_part(
                    late_parts,
                    deductions,
                    payload.part_number,
                    event_id,
                    at,
                    payload.service_point_id
                    or (dispatch[1].service_point_id if dispatch else None),
                    region,
                )
            case _:
                pass

    for flag_id, flag, at in repeat_flags:
        deductions.append(
            _deduction("repeat_repair", at, None, region, [flag_id], earlier=flag.earlier_ticket_id)
        )

    items: dict[str, Item] = {}
    received_id = str(first.event_id)

    # 1. First response (the first diagnosis call) within the urgency SLA.
    if first_diagnosis is not None:
        met = first_diagnosis[1] <= received.response_due_at
        items["responded_within_sla"] = Item(
            TRUE if met else FALSE,
            [received_id, first_diagnosis[0]],
            "responded in time" if met else "responded after the deadline",
        )
    elif "response" in breaches:
        items["responded_within_sla"] = Item(
            FALSE, [received_id, breaches["response"]], "SLA breached"
        )
    elif first_late_event is not None:
        items["responded_within_sla"] = Item(
            FALSE,
            [received_id, first_late_event[0]],
            "no response before a later event past the deadline",
        )
    else:
        items["responded_within_sla"] = Item(PENDING, [received_id], "awaiting the first response")

    # 2. Resolution (the first repair) within the complexity SLA.
    if repair_times and repair_times[0][1] is not None:
        repaired_at, due, diagnosis_id = repair_times[0]
        met = repaired_at <= due
        items["resolved_within_sla"] = Item(
            TRUE if met else FALSE,
            [diagnosis_id, repairs[0]["event_id"]],
            "resolved in time" if met else "resolved after the deadline",
        )
    elif repairs:
        items["resolved_within_sla"] = Item(
            FALSE, [repairs[0]["event_id"]], "repaired without a diagnosis"
        )
    elif "resolution" in breaches:
        items["resolved_within_sla"] = Item(FALSE, [breaches["resolution"]], "SLA breached")
    elif late_for_resolution is not None:
        items["resolved_within_sla"] = Item(
            FALSE, [late_for_resolution], "not resolved before a later event past the deadline"
        )
    else:
        items["resolved_within_sla"] = Item(PENDING, [], "not resolved yet")

    # 3. On-site repairs preceded by a visit since the (latest) dispatch.
    if on_site_missing_visit:
        items["visited_before_repair"] = Item(
            FALSE, on_site_missing_visit, "on-site repair without a visit"
        )
    elif on_site_visited:
        items["visited_before_repair"] = Item(TRUE, on_site_visited, "visited before the repair")
    elif repairs:
        items["visited_before_repair"] = Item(
            TRUE, [r["event_id"] for r in repairs], "not an on-site repair"
        )
    else:
        items["visited_before_repair"] = Item(PENDING, [], "not repaired yet")

    # 4. A follow-up after the (latest) repair.
    if follow_up_item.status == FALSE:
        items["follow_up_done"] = follow_up_item
    elif awaiting_follow_up is not None:
        items["follow_up_done"] = Item(PENDING, [awaiting_follow_up], "awaiting the follow-up")
    elif follow_up_item.status == TRUE:
        items["follow_up_done"] = follow_up_item
    else:
        items["follow_up_done"] = Item(PENDING, [], "not repaired yet")

    # 5. The customer's latest word is satisfactory.
    items["satisfied"] = verdict

    # 6. Every part replaced under warranty came back on time.
    late_ids = [i for ids in late_parts.values() for i in ids]
    outstanding = [n for n, q in expected_parts.items() if returned.get(n, 0) < q]
    if late_ids:
        items["parts_returned"] = Item(FALSE, late_ids, "returned late or overdue")
    elif not expected_parts:
        items["parts_returned"] = Item(
            TRUE if repairs else PENDING,
            [r["event_id"] for r in repairs],
            "no in-warranty parts replaced" if repairs else "not repaired yet",
        )
    elif outstanding:
        ids = [i for n in outstanding for i in expected_by[n]]
        items["parts_returned"] = Item(
            PENDING, ids, f"awaiting return of {', '.join(sorted(outstanding))}"
        )
    else:
        items["parts_returned"] = Item(TRUE, returned_ids, "all returned on time")

    # 7. No step skipped or out of order.
    if violations:
        items["steps_in_order"] = Item(FALSE, violations, "; ".join(notes))
    elif closed_id is not None:
        items["steps_in_order"] = Item(
            TRUE, [received_id, closed_id], "closed, every step in order"
        )
    else:
        items["steps_in_order"] = Item(PENDING, [], "ticket still open")

    # First-time fix: the first repair fixed it at the first visit and it never reopened.
    if not repairs:
        ftf = Item(PENDING, [], "not repaired yet")
    else:
        r0 = repairs[0]
        reopen_ids = [eid[id(p)] for _, p in typed if isinstance(p, TicketReopened)]
        if reopen_ids:
            ftf = Item(FALSE, [r0["event_id"], reopen_ids[0]], "reopened")
        elif RepairOutcome(r0["outcome"]) not in FIXED_OUTCOMES:
            ftf = Item(FALSE, [r0["event_id"]], f"first repair {r0['outcome']}")
        elif r0["visits_before"] > 1:
            ftf = Item(FALSE, [v["event_id"] for v in visits], "more than one visit")
        elif closed_id is not None:
            ftf = Item(TRUE, [r0["event_id"], closed_id], "fixed the first time")
        else:
            ftf = Item(PENDING, [r0["event_id"]], "awaiting the follow-up")

    last = typed[-1][0]
    return TicketCompliance(
        ticket_id=first.stream_id,
        ticket_number=received.ticket_number,
        region=region,
        month=_month(first.occurred_at),
        received_at=first.occurred_at,
        product_model=received.product.model,
        fault_category=diagnosis[1].category.value if diagnosis else None,
        agent_id=first.actor.subject,
        service_point_id=dispatch[1].service_point_id if dispatch else None,
        technician_id=dispatch[1].technician_id if dispatch else None,
        status=status,
        version=last.stream_version,
        items=items,
        first_time_fix=ftf,
        follow_ups=follow_ups,
        complaints=complaints,
        visits=visits,
        repairs=repairs,
        deductions=deductions,
        corrections=corrections,
    )


def _deduction(
    kind: str,
    at: datetime,
    service_point_id: str | None,
    region: str,
    event_ids: list[str],
    *,
    earlier: str | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "at": _iso(at),
        "month": _month(at),
        "service_point_id": service_point_id,
        "region": region,
        "event_ids": event_ids,
        "earlier_ticket_id": earlier,
    }


def _late_part(
    late_parts: dict[str, list[str]],
    deductions: list[dict[str, Any]],
    part_number: str,
    event_id: str,
    at: datetime,
    service_point_id: str | None,
    region: str,
) -> None:
    """One deduction per late part, however many events (overdue, then a late return)."""
    if part_number in late_parts:
        late_parts[part_number].append(event_id)
        return
    late_parts[part_number] = [event_id]
    deductions.append(_deduction("late_parts_return", at, service_point_id, region, [event_id]))


def _late_visit_deduction(
    follow_up: dict[str, Any],
    repairs: list[dict[str, Any]],
    visits: list[dict[str, Any]],
    deductions: list[dict[str, Any]],
    region: str,
) -> None:
    """The repair this dissatisfied follow-up judged was preceded by a late visit."""
    repair = next((r for r in repairs if r["event_id"] == follow_up["repair_event_id"]), None)
    if repair is None or repair["visit_event_id"] is None:
        return
    visit = next(v for v in visits if v["event_id"] == repair["visit_event_id"])
    if visit["on_time"]:
        return
    at = datetime.fromisoformat(follow_up["at"])
    ids = [i for i in (visit["dispatch_event_id"], visit["event_id"], follow_up["event_id"]) if i]
    deductions.append(
        _deduction("late_visit_dissatisfied", at, visit["service_point_id"], region, ids)
    )

"""The feedback service's projections: pure functions of events, rebuilt by replay.

``feedback_compliance`` recomputes the rows of every ticket a batch touches from the
ticket's two streams as the ledger holds them — its own, and the parts service's
paperwork for it (``tparts:<ticket_id>``, whose ``OldPartReturnExpected`` events say
which old parts must come back). A ticket has a few dozen events at most; recomputing
from both streams makes incremental and rebuilt rows identical by construction, whatever
order the two streams' events arrive in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Connection, Table

from services.feedback.compliance import FALSE, ITEMS, TRUE, checklist, compliant, first_time_fix
from services.feedback.facts import Facts, deadlines_of, facts_of, month_of, needs_clock
from services.feedback.tables import (
    TECHNICIAN_WORK,
    compliance_tickets,
    follow_ups,
    quality_alerts,
    repairs,
    scorecard_deductions,
    scorecard_items,
    technician_work,
)
from shared.app.config import get_settings
from shared.eventstore.ledger import EventStore
from shared.eventstore.projection import (
    EventRowProjection,
    Row,
    delete_where_in,
    lock_tickets,
    upsert_rows,
)
from shared.kernel.events.envelope import EventEnvelope, canonical_json
from shared.kernel.events.parts import OldPartReturnExpected
from shared.kernel.events.quality import QualityAlertRaised, ScorecardItemRecorded
from shared.kernel.events.registry import payload_dict
from shared.kernel.parts import ticket_parts_stream
from shared.kernel.ticket import TICKETS
from shared.readmodels.sla import TermsReader

# --- compliance ----------------------------------------------------------------------------


def compliance_values(f: Facts) -> dict[str, Any]:
    """The ticket's row: the checklist with its evidence, and the facts the aggregates,
    KPIs and scorecards are computed from."""
    items = checklist(f)
    ftf = first_time_fix(f)
    document = {name: item.as_dict() for name, item in items.items()}
    document["first_time_fix"] = ftf.as_dict()
    facts = {
        "follow_ups": [x.as_json() for x in f.follow_ups],
        "complaints": [x.as_json() for x in f.complaints],
        "visits": [x.as_json() for x in f.visits],
        "repairs": [x.as_json() for x in f.repairs],
        "deductions": [x.as_json() for x in f.deductions],
        "corrections": list(f.corrections),
    }
    return {
        "ticket_id": f.ticket_id,
        "ticket_number": f.ticket_number,
        "region": f.region,
        "month": f.month,
        "received_at": f.received_at,
        "product_model": f.product_model,
        "fault_category": f.diagnosis.category if f.diagnosis else None,
        "agent_id": f.agent_id,
        "service_point_id": f.service_point_id,
        "technician_id": f.technician_id,
        "status": f.status.value,
        "compliant": compliant(items.values()),
        **{name: items[name].status for name in ITEMS},
        "first_time_fix": ftf.status,
        "checklist": canonical_json(document),
        "facts": canonical_json(facts),
        "version": f.version,
        "complaints": len(f.complaints),
        **staff_counts(f),
    }


def staff_counts(f: Facts) -> dict[str, int]:
    """The staff KPIs' counts (tables.STAFF_COUNTS): visits and repairs are those of the
    ticket's (last dispatched) technician, the one its KPIs are credited to."""
    tech = f.technician_id
    visits = [v for v in f.visits if tech is not None and v.technician_id == tech]
    repairs = [r for r in f.repairs if tech is not None and r.technician_id == tech]
    return {
        "technician_visits": len(visits),
        "technician_visits_on_time": sum(1 for v in visits if v.on_time),
        "technician_repairs": len(repairs),
        "technician_repairs_as_expected": sum(1 for r in repairs if r.parts_as_expected),
        "follow_up_count": len(f.follow_ups),
        "follow_up_score_total": sum(x.score for x in f.follow_ups),
        "corrections": len(f.corrections),
    }


def deduction_rows(f: Facts) -> list[Row]:
    return [
        {
            "ticket_id": f.ticket_id,
            "seq": n,
            "kind": d.kind,
            "month": month_of(d.at),
            "at": d.at,
            "service_point_id": d.service_point_id,
            "region": d.region,
            "earlier_ticket_id": d.earlier_ticket_id,
            "event_ids": canonical_json(list(d.event_ids)),
        }
        for n, d in enumerate(f.deductions, start=1)
    ]


def repair_rows(f: Facts) -> list[Row]:
    return [
        {
            "event_id": r.event_id,
            "ticket_id": f.ticket_id,
            "day": r.at.date().isoformat(),
            "product_model": f.product_model,
            "fault_category": r.fault_category,
        }
        for r in f.repairs
    ]


def technician_work_rows(f: Facts, ftf: str) -> list[Row]:
    """Per technician who visited or repaired the ticket: their visits and repairs, the
    first-time fix (``ftf``: the ticket's, as its row has it) of their first repair, the
    follow-ups of their repairs."""
    work: dict[str, dict[str, int]] = {}

    def of(technician: str) -> dict[str, int]:
        return work.setdefault(technician, dict.fromkeys(TECHNICIAN_WORK, 0))

    for v in f.visits:
        if v.technician_id:
            counts = of(v.technician_id)
            counts["visits"] += 1
            counts["visits_on_time"] += v.on_time
    for r in f.repairs:
        if r.technician_id:
            counts = of(r.technician_id)
            counts["repairs"] += 1
            counts["repairs_as_expected"] += r.parts_as_expected
    # First-time fix is the first repair's (a reopen counts against who made it, not who
    # fixed it later); a follow-up's score the repair's it followed up.
    if f.repairs and f.repairs[0].technician_id and ftf in (TRUE, FALSE):
        counts = of(f.repairs[0].technician_id)
        counts["first_repairs_decided"] += 1
        counts["first_time_fixes"] += ftf == TRUE
    repaired_by = {r.event_id: r.technician_id for r in f.repairs}
    for x in f.follow_ups:
        if technician := repaired_by.get(x.repair_event_id or ""):
            counts = of(technician)
            counts["ratings"] += 1
            counts["rating_total"] += x.score
    return [
        {
            "ticket_id": f.ticket_id,
            "technician_id": technician,
            "month": f.month,
            "region": f.region,
            "service_point_id": f.service_point_id,
            **counts,
        }
        for technician, counts in sorted(work.items())
    ]


def follow_up_rows(f: Facts) -> list[Row]:
    return [
        {
            "event_id": x.event_id,
            "ticket_id": f.ticket_id,
            "month": f.month,
            "region": f.region,
            "service_point_id": f.service_point_id,
            "score": x.score,
            "would_recommend": x.would_recommend,
        }
        for x in f.follow_ups
    ]


def ticket_of(event: EventEnvelope) -> str | None:
    """The ticket whose compliance an event changes: any event of its stream, and the
    parts service's expectation of an old part's return."""
    if event.stream_type == "ticket":
        return event.stream_id
    if event.event_type == OldPartReturnExpected.event_type:
        return str(payload_dict(event)["ticket_id"])
    return None


def ticket_facts(
    conn: Connection, store: EventStore, ticket_id: str, as_of: datetime | None = None
) -> Facts | None:
    """The facts of a ticket's two streams (``as_of``: the events recorded until then),
    its deadlines on the SLA clock it runs on (docs/sla.md)."""
    return tickets_facts(conn, store, [ticket_id], as_of).get(ticket_id)


def tickets_facts(
    conn: Connection, store: EventStore, ticket_ids: Sequence[str], as_of: datetime | None = None
) -> dict[str, Facts]:
    """``ticket_facts`` of several tickets, their streams read in one round."""
    wanted = [s for t in ticket_ids for s in (t, ticket_parts_stream(t))]
    streams = store.read_streams(conn, wanted, recorded_until=as_of)
    terms = TermsReader.configured(conn, store, get_settings().sla)
    found: dict[str, Facts] = {}
    for ticket_id in ticket_ids:
        ticket = streams.get(ticket_id, [])
        deadlines = None
        if needs_clock(ticket):  # otherwise the stored deadlines are the clock's
            state = TICKETS.fold(ticket_id, ticket)
            deadlines = deadlines_of(state, ticket, terms.for_ticket(state))
        paperwork = streams.get(ticket_parts_stream(ticket_id), [])
        if (facts := facts_of(ticket, paperwork, deadlines)) is not None:
            found[ticket_id] = facts
    return found


class ComplianceProjection:
    name: ClassVar[str] = "feedback_compliance"
    tables: ClassVar[tuple[Table, ...]] = (
        compliance_tickets,
        scorecard_deductions,
        repairs,
        follow_ups,
        technician_work,
    )
    stream_types: ClassVar[tuple[str, ...]] = ("ticket", "requisition")
    # Each ticket is recomputed from its two streams, read whole: rebuilt in stream order.
    recomputes_whole_streams: ClassVar[bool] = True

    def __init__(self) -> None:
        self.store = EventStore()

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        tickets = sorted({t for e in events if (t := ticket_of(e)) is not None})
        if not tickets:
            return
        lock_tickets(conn, self.name, tickets)
        found = list(tickets_facts(conn, self.store, tickets).values())
        for table in self.tables:
            delete_where_in(conn, table, "ticket_id", tickets)
        rows = [compliance_values(f) for f in found]
        upsert_rows(conn, compliance_tickets, rows)
        upsert_rows(conn, scorecard_deductions, [r for f in found for r in deduction_rows(f)])
        upsert_rows(conn, repairs, [r for f in found for r in repair_rows(f)])
        upsert_rows(conn, follow_ups, [r for f in found for r in follow_up_rows(f)])
        work = [
            r
            for f, row in zip(found, rows, strict=True)
            for r in technician_work_rows(f, row["first_time_fix"])
        ]
        upsert_rows(conn, technician_work, work)


# --- copies of the feedback service's own events -------------------------------------------


class ScorecardItemsProjection(EventRowProjection):
    name: ClassVar[str] = "feedback_scorecard_items"
    table: ClassVar[Table] = scorecard_items
    tables: ClassVar[tuple[Table, ...]] = (scorecard_items,)
    stream_types: ClassVar[tuple[str, ...]] = ("scorecard",)
    event_type: ClassVar[str] = ScorecardItemRecorded.event_type

    def row(self, event: EventEnvelope, p: dict[str, Any]) -> Row:
        return {
            "event_id": str(event.event_id),
            "service_point_id": p["service_point_id"],
            "region": p.get("region"),
            "item": p["item"],
            "month": p["occurred_on"][:7],
            "occurred_on": p["occurred_on"],
            "evidence": p["evidence"],
            "ticket_ids": canonical_json(p.get("ticket_ids", [])),
            "actor": event.actor.subject,
            "recorded_at": event.recorded_at,
        }


class QualityAlertsProjection(EventRowProjection):
    name: ClassVar[str] = "feedback_quality_alerts"
    table: ClassVar[Table] = quality_alerts
    tables: ClassVar[tuple[Table, ...]] = (quality_alerts,)
    stream_types: ClassVar[tuple[str, ...]] = ("quality",)
    event_type: ClassVar[str] = QualityAlertRaised.event_type

    def row(self, event: EventEnvelope, p: dict[str, Any]) -> Row:
        return {
            "event_id": str(event.event_id),
            "day": p["day"],
            "product_model": p["product_model"],
            "fault_category": p["fault_category"],
            "count": p["count"],
            "threshold": p["threshold"],
            "ticket_ids": canonical_json(p.get("ticket_ids", [])),
            "raised_at": event.occurred_at,
        }


COMPLIANCE = ComplianceProjection()
SCORECARD_ITEMS = ScorecardItemsProjection()
QUALITY_ALERTS = QualityAlertsProjection()
PROJECTIONS = (COMPLIANCE, SCORECARD_ITEMS, QUALITY_ALERTS)

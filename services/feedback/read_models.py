"""Feedback's reads: compliance rows, their aggregates, scorecards and quality reports.

Aggregates are computed at query time from the per-ticket rows (which are projections of
the events), so a summary is always consistent with the rows it summarises and every
figure can be traced to the events listed in those rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.feedback.compliance import FALSE, ITEMS, PENDING, TRUE, compute
from services.feedback.projections import compliance_values
from services.feedback.tables import (
    compliance_tickets,
    quality_alerts,
    repairs,
    scorecard_deductions,
    scorecard_items,
)
from shared.app.config import FeedbackSettings
from shared.eventstore.ledger import EventStore

GROUPS = ("region", "service_point", "technician", "month")
GROUP_COLUMN = {
    "region": "region",
    "service_point": "service_point_id",
    "technician": "technician_id",
    "month": "month",
}


@dataclass(frozen=True)
class ComplianceFilters:
    region: str | None = None
    service_point_id: str | None = None
    technician_id: str | None = None
    month: str | None = None
    compliant: str | None = None
    failing: str | None = None  # an item name: rows where that item is false


def _conditions(filters: ComplianceFilters) -> list[Any]:
    t = compliance_tickets.c
    conditions: list[Any] = []
    if filters.region:
        conditions.append(t.region == filters.region)
    if filters.service_point_id:
        conditions.append(t.service_point_id == filters.service_point_id)
    if filters.technician_id:
        conditions.append(t.technician_id == filters.technician_id)
    if filters.month:
        conditions.append(t.month == filters.month)
    if filters.compliant:
        conditions.append(t.compliant == filters.compliant)
    if filters.failing:
        conditions.append(t[filters.failing] == FALSE)
    return conditions


async def list_compliance_rows(
    conn: AsyncConnection,
    filters: ComplianceFilters,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[Any]:
    """In ticket-number order (day of receipt, then arrival); ``after`` a ticket number."""
    t = compliance_tickets.c
    conditions = _conditions(filters)
    if after:
        conditions.append(t.ticket_number > after)
    query = select(compliance_tickets).order_by(t.ticket_number)
    if conditions:
        query = query.where(and_(*conditions))
    if limit is not None:
        query = query.limit(limit)
    return list((await conn.execute(query)).all())


async def compliance_row(conn: AsyncConnection, ticket_id: str) -> Any:
    query = select(compliance_tickets).where(compliance_tickets.c.ticket_id == ticket_id)
    return (await conn.execute(query)).first()


async def compliance_row_as_of(
    conn: AsyncConnection, store: EventStore, ticket_id: str, as_of: datetime
) -> dict[str, Any] | None:
    """The ticket's compliance row as it stood at ``as_of``: the same pure computation the
    projection runs, over the events recorded until then."""
    result = compute(await store.read_stream(conn, ticket_id, recorded_until=as_of))
    return compliance_values(result) if result is not None else None


def ticket_view(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        row = SimpleNamespace(**row)
    return {
        "ticket_id": row.ticket_id,
        "ticket_number": row.ticket_number,
        "region": row.region,
        "month": row.month,
        "received_at": row.received_at,
        "product_model": row.product_model,
        "fault_category": row.fault_category,
        "service_point_id": row.service_point_id,
        "technician_id": row.technician_id,
        "agent_id": row.agent_id,
        "status": row.status,
        "compliant": row.compliant,
        "checklist": json.loads(row.checklist),
        "version": row.version,
    }


TICKET_CSV_COLUMNS = (
    "ticket_id",
    "ticket_number",
    "region",
    "month",
    "service_point_id",
    "technician_id",
    "status",
    "compliant",
    *ITEMS,
    "first_time_fix",
)


def ticket_csv_row(row: Any) -> list[Any]:
    checklist = json.loads(row.checklist)
    values = [getattr(row, c) for c in TICKET_CSV_COLUMNS]
    evidence = [" ".join(checklist[name]["evidence"]) for name in (*ITEMS, "first_time_fix")]
    return [*values, *evidence]


def ticket_csv_header() -> list[str]:
    return [*TICKET_CSV_COLUMNS, *(f"{n}_evidence" for n in (*ITEMS, "first_time_fix"))]


# --- aggregates -------------------------------------------------------------------------


def _rate(numerator: int, denominator: int) -> float | None:
    return round(100.0 * numerator / denominator, 2) if denominator else None


def band(score: int, s: FeedbackSettings) -> str:
    if score >= s.band_very_satisfied_from:
        return "very_satisfied"
    if score >= s.band_satisfied_from:
        return "satisfied"
    if score >= s.band_neutral_from:
        return "neutral"
    return "dissatisfied"


def summarise(key: str | None, rows: Iterable[Any], s: FeedbackSettings) -> dict[str, Any]:
    rows = list(rows)
    count = {status: 0 for status in (TRUE, FALSE, PENDING)}
    items = {name: {TRUE: 0, FALSE: 0, PENDING: 0} for name in (*ITEMS, "first_time_fix")}
    scores: list[int] = []
    recommend: list[int] = []
    complaints = 0
    for row in rows:
        count[row.compliant] += 1
        for name in items:
            items[name][getattr(row, name)] += 1
        facts = json.loads(row.facts)
        for f in facts["follow_ups"]:
            scores.append(f["score"])
            recommend.append(f["would_recommend"])
        complaints += 1 if facts["complaints"] else 0
    bands = {"very_satisfied": 0, "satisfied": 0, "neutral": 0, "dissatisfied": 0}
    for score in scores:
        bands[band(score, s)] += 1
    promoters = sum(1 for r in recommend if r >= s.nps_promoter_from)
    detractors = sum(1 for r in recommend if r <= s.nps_detractor_up_to)
    response, resolution = items["responded_within_sla"], items["resolved_within_sla"]
    decided = lambda c: c[TRUE] + c[FALSE]  # noqa: E731
    return {
        "key": key,
        "tickets": len(rows),
        "compliant": count[TRUE],
        "non_compliant": count[FALSE],
        "pending": count[PENDING],
        "compliance_rate": _rate(count[TRUE], count[TRUE] + count[FALSE]),
        "items": items,
        "response_sla_rate": _rate(response[TRUE], decided(response)),
        "resolution_sla_rate": _rate(resolution[TRUE], decided(resolution)),
        "sla_attainment": _rate(
            response[TRUE] + resolution[TRUE], decided(response) + decided(resolution)
        ),
        "first_time_fix_rate": _rate(
            items["first_time_fix"][TRUE], decided(items["first_time_fix"])
        ),
        "follow_ups": len(scores),
        "satisfaction_average": round(sum(scores) / len(scores), 2) if scores else None,
        "bands": bands,
        "promoters": promoters,
        "passives": len(recommend) - promoters - detractors,
        "detractors": detractors,
        "nps": round(100.0 * (promoters - detractors) / len(recommend), 2) if recommend else None,
        "complaints": complaints,
        "complaint_rate": _rate(complaints, len(rows)),
    }


def summary(rows: list[Any], group_by: str, s: FeedbackSettings) -> dict[str, Any]:
    column = GROUP_COLUMN[group_by]
    groups: dict[str | None, list[Any]] = defaultdict(list)
    for row in rows:
        groups[getattr(row, column)].append(row)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    return {
        "group_by": group_by,
        "groups": [summarise(key, members, s) for key, members in ordered],
        "total": summarise(None, rows, s),
    }


SUMMARY_CSV_COLUMNS = (
    "key",
    "tickets",
    "compliant",
    "non_compliant",
    "pending",
    "compliance_rate",
    "response_sla_rate",
    "resolution_sla_rate",
    "sla_attainment",
    "first_time_fix_rate",
    "follow_ups",
    "satisfaction_average",
    "very_satisfied",
    "satisfied",
    "neutral",
    "dissatisfied",
    "promoters",
    "passives",
    "detractors",
    "nps",
    "complaints",
    "complaint_rate",
)


def summary_csv_row(group: dict[str, Any]) -> list[Any]:
    flat = {**group, **group["bands"]}
    return ["" if flat[c] is None else flat[c] for c in SUMMARY_CSV_COLUMNS]


# --- scorecards -------------------------------------------------------------------------

ITEM_POINTS: dict[str, Callable[[FeedbackSettings], float]] = {
    "late_visit_dissatisfied": lambda s: s.points_late_visit_dissatisfied,
    "repeat_repair": lambda s: s.points_repeat_repair,
    "poor_service": lambda s: s.points_poor_service,
    "public_complaint": lambda s: s.points_public_complaint,
    "falsified_records": lambda s: s.points_falsified_records,
    "late_parts_return": lambda s: s.points_late_parts_return,
    "positive_media_coverage": lambda s: s.points_positive_media,
}


def _weighted(measures: dict[str, float | None], weights: dict[str, float]) -> float | None:
    """Weighted mean over the measures that have data (weights renormalised)."""
    present = {k: v for k, v in measures.items() if v is not None}
    total = sum(weights[k] for k in present)
    if not present or not total:
        return None
    return round(sum(weights[k] * v for k, v in present.items()) / total, 2)


async def scorecards(
    conn: AsyncConnection,
    month: str,
    s: FeedbackSettings,
    *,
    service_point_id: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    d = scorecard_deductions.c
    deduction_rows = list(
        (
            await conn.execute(
                select(scorecard_deductions)
                .where(d.month == month)
                .order_by(d.at, d.ticket_id, d.seq)
            )
        ).all()
    )
    # A repeat repair counts against the point that did the earlier (failed) repair.
    earlier_ids = {r.earlier_ticket_id for r in deduction_rows if r.earlier_ticket_id}
    earlier_points: dict[str, tuple[str | None, str]] = {}
    if earlier_ids:
        t = compliance_tickets.c
        for r in await conn.execute(
            select(t.ticket_id, t.service_point_id, t.region).where(
                t.ticket_id.in_(sorted(earlier_ids))
            )
        ):
            earlier_points[r.ticket_id] = (r.service_point_id, r.region)

    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in deduction_rows:
        point, where = r.service_point_id, r.region
        detail = r.kind.replace("_", " ")
        if r.kind == "repeat_repair":
            point, where = earlier_points.get(r.earlier_ticket_id or "", (None, r.region))
            detail = f"repeat repair of ticket {r.earlier_ticket_id}"
        if point is None or (region and where != region):
            continue
        entries[point].append(
            {
                "kind": r.kind,
                "points": ITEM_POINTS[r.kind](s),
                "at": r.at.isoformat().replace("+00:00", "Z"),
                "ticket_id": r.ticket_id,
                "event_ids": json.loads(r.event_ids),
                "detail": detail,
            }
        )
    i = scorecard_items.c
    for r in await conn.execute(
        select(scorecard_items).where(i.month == month).order_by(i.occurred_on, i.event_id)
    ):
        if region and r.region != region:
            continue
        entries[r.service_point_id].append(
            {
                "kind": r.item,
                "points": ITEM_POINTS[r.item](s),
                "at": r.occurred_on,
                "ticket_id": None,
                "event_ids": [r.event_id],
                "detail": r.evidence,
            }
        )

    rows = await list_compliance_rows(
        conn,
        ComplianceFilters(region=region, month=month, service_point_id=service_point_id),
    )
    points = set(entries) | {r.service_point_id for r in rows if r.service_point_id}
    if service_point_id:
        points &= {service_point_id}
    service_points = [
        {
            "service_point_id": p,
            "score": round(s.scorecard_base + sum(e["points"] for e in entries[p]), 2),
            "items": entries[p],
        }
        for p in sorted(points)
    ]
    return {
        "month": month,
        "base": s.scorecard_base,
        "service_points": service_points,
        "technicians": technician_kpis(rows, s),
        "agents": [] if service_point_id else agent_kpis(rows, s),
    }


def _average(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def technician_kpis(rows: list[Any], s: FeedbackSettings) -> list[dict[str, Any]]:
    """Over the month's tickets last dispatched to each technician:
    first-time fix = % of decided tickets fixed at the first repair and visit, never reopened;
    timeliness = % of the technician's visits that arrived by the appointment's end;
    parts usage = % of the technician's repairs that used only parts the diagnosis expected;
    customer rating = average follow-up satisfaction score."""
    weights = {
        "first_time_fix": s.technician_weight_first_time_fix,
        "timeliness": s.technician_weight_timeliness,
        "parts_usage": s.technician_weight_parts_usage,
        "customer_rating": s.technician_weight_customer_rating,
    }
    by_tech: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if row.technician_id:
            by_tech[row.technician_id].append(row)
    out = []
    for tech, tickets in sorted(by_tech.items()):
        ftf = [r.first_time_fix for r in tickets if r.first_time_fix != PENDING]
        visits: list[bool] = []
        repairs_ok: list[bool] = []
        scores: list[int] = []
        for r in tickets:
            facts = json.loads(r.facts)
            visits += [v["on_time"] for v in facts["visits"] if v["technician_id"] == tech]
            repairs_ok += [
                x["parts_as_expected"] for x in facts["repairs"] if x["technician_id"] == tech
            ]
            scores += [f["score"] for f in facts["follow_ups"]]
        measures = {
            "first_time_fix": _rate(ftf.count(TRUE), len(ftf)),
            "timeliness": _rate(visits.count(True), len(visits)),
            "parts_usage": _rate(repairs_ok.count(True), len(repairs_ok)),
            "customer_rating": _average(scores),
        }
        out.append(
            {
                "subject": tech,
                "role": "technician",
                "tickets": len(tickets),
                "measures": measures,
                "weights": weights,
                "score": _weighted(measures, weights),
            }
        )
    return out


def agent_kpis(rows: list[Any], s: FeedbackSettings) -> list[dict[str, Any]]:
    """Over the month's tickets each call-center agent received:
    response time = % of decided tickets first responded to within the urgency SLA;
    record accuracy = % of tickets whose contact details never needed a correction;
    satisfaction = average follow-up satisfaction score."""
    weights = {
        "response_time": s.agent_weight_response_time,
        "record_accuracy": s.agent_weight_record_accuracy,
        "satisfaction": s.agent_weight_satisfaction,
    }
    by_agent: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if row.agent_id:
            by_agent[row.agent_id].append(row)
    out = []
    for agent, tickets in sorted(by_agent.items()):
        responded = [r.responded_within_sla for r in tickets if r.responded_within_sla != PENDING]
        facts = [json.loads(r.facts) for r in tickets]
        accurate = sum(1 for f in facts if not f["corrections"])
        scores = [fu["score"] for f in facts for fu in f["follow_ups"]]
        measures = {
            "response_time": _rate(responded.count(TRUE), len(responded)),
            "record_accuracy": _rate(accurate, len(tickets)),
            "satisfaction": _average(scores),
        }
        out.append(
            {
                "subject": agent,
                "role": "call_center_agent",
                "tickets": len(tickets),
                "measures": measures,
                "weights": weights,
                "score": _weighted(measures, weights),
            }
        )
    return out


# --- quality ----------------------------------------------------------------------------


def iso_week_days(week: str) -> tuple[date, date]:
    """``2026-W47`` → (Monday, next Monday)."""
    year, number = week.split("-W")
    monday = date.fromisocalendar(int(year), int(number), 1)
    return monday, monday + timedelta(days=7)


async def quality_weekly(conn: AsyncConnection, week: str, s: FeedbackSettings) -> dict[str, Any]:
    start, end = iso_week_days(week)
    a, rp = quality_alerts.c, repairs.c
    in_week_a = and_(a.day >= start.isoformat(), a.day < end.isoformat())
    alerts = [
        {
            "event_id": r.event_id,
            "day": r.day,
            "product_model": r.product_model,
            "fault_category": r.fault_category,
            "count": r.count,
            "threshold": r.threshold,
            "ticket_ids": json.loads(r.ticket_ids),
            "raised_at": r.raised_at.isoformat().replace("+00:00", "Z"),
        }
        for r in await conn.execute(
            select(quality_alerts)
            .where(in_week_a)
            .order_by(a.day, a.product_model, a.fault_category)
        )
    ]
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for r in await conn.execute(
        select(rp.day, rp.product_model, rp.fault_category, rp.ticket_id).where(
            rp.day >= start.isoformat(), rp.day < end.isoformat()
        )
    ):
        group = counts.setdefault(
            (r.product_model, r.fault_category),
            {
                "product_model": r.product_model,
                "fault_category": r.fault_category,
                "repairs": 0,
                "by_day": {},
            },
        )
        group["repairs"] += 1
        group["by_day"][r.day] = group["by_day"].get(r.day, 0) + 1
    return {
        "week": week,
        "from_day": start.isoformat(),
        "to_day": (end - timedelta(days=1)).isoformat(),
        "threshold": s.quality_alert_threshold,
        "alerts": alerts,
        "counts": sorted(counts.values(), key=lambda g: (-g["repairs"], g["product_model"])),
    }

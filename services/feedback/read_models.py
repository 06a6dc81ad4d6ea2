"""Feedback's reads: compliance rows, their aggregates, scorecards and quality reports —
plain functions of a ``Connection``, run in a read unit of work.

Aggregates are computed at query time from the per-ticket rows (which are projections of
the events), so a summary is always consistent with the rows it summarises and every
figure can be traced to the events listed in those rows: summaries count the rows'
status columns and follow-up scores in SQL (``tallies``), staff KPIs the counts each row
keeps for them, summed per person (``staff_totals``).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import Connection, Row, Select, Table, and_, case, func, select

from services.feedback.compliance import FALSE, ITEMS, PENDING, TRUE, UNKNOWN
from services.feedback.domain import NetworkMember
from services.feedback.facts import month_of
from services.feedback.projections import compliance_values, ticket_facts
from services.feedback.tables import (
    STAFF_COUNTS,
    TALLY_COLUMNS,
    compliance_tickets,
    follow_ups,
    quality_alerts,
    repairs,
    scorecard_deductions,
    scorecard_items,
    technician_work,
)
from shared.app.config import FeedbackSettings
from shared.eventstore.ledger import EventStore
from shared.eventstore.tables import events, repairs_only
from shared.kernel.clock import iso_utc
from shared.kernel.events.registry import UnreadableEvent, upcast
from shared.kernel.events.tickets import FaultCategory, TicketDiagnosed
from shared.kernel.numbers import percent_shown, rounded
from shared.kernel.reach import EVERYWHERE, Reach
from shared.readmodels.paging import decode_cursor
from shared.readmodels.planning import checked_only_if, not_by_index
from shared.readmodels.ticket_state import ticket_state

GROUP_COLUMN = {
    "region": "region",
    "service_point": "service_point_id",
    "technician": "technician_id",
    "month": "month",
}
ComplianceRow = Row[Any]


# --- compliance rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class ComplianceFilters:
    region: str | None = None
    service_point_id: str | None = None
    technician_id: str | None = None
    month: str | None = None
    months: tuple[str, ...] = ()  # any of these months (with ``month``: both apply)
    compliant: str | None = None
    failing: str | None = None  # an item name: rows where that item is false
    # The caller's reach: rows outside it do not exist for the caller.
    reach: Reach = EVERYWHERE

    @property
    def beyond_tally_scope(self) -> bool:
        """Whether the rows are picked by more than month, region and service point (the
        columns the follow-ups table copies from its ticket's row)."""
        return bool(self.technician_id or self.reach.technician or self.compliant or self.failing)


def _conditions(filters: ComplianceFilters, table: Table = compliance_tickets) -> list[Any]:
    wanted: list[tuple[str, str | None]] = [
        ("region", filters.region),
        ("region", filters.reach.region),
        ("service_point_id", filters.service_point_id),
        ("technician_id", filters.technician_id),
        ("technician_id", filters.reach.technician),
        ("month", filters.month),
        ("compliant", filters.compliant),
    ]
    # A service point's or technician's rows are a handful of a region's: their index is
    # the way in, the region only checked (SQLite would walk the region's, planning.py).
    narrower = filters.service_point_id or filters.technician_id or filters.reach.technician
    conditions = [
        checked_only_if(bool(narrower) and column == "region", table.c[column]) == value
        for column, value in wanted
        if value
    ]
    if filters.months:
        conditions.append(table.c.month.in_(filters.months))
    if filters.failing:
        conditions.append(table.c[filters.failing] == FALSE)
    return conditions


def list_compliance_rows(
    conn: Connection,
    filters: ComplianceFilters,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[ComplianceRow]:
    """In ticket-number order (day of receipt, then arrival); ``after`` the cursor of the
    last row read (``paging.next_page`` of ``received_at`` and ``ticket_number``)."""
    t = compliance_tickets.c
    conditions = _conditions(filters)
    if after:
        conditions.append(t.ticket_number > decode_cursor(after)[1])
    query = select(compliance_tickets).order_by(t.ticket_number)
    if conditions:
        query = query.where(and_(*conditions))
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query).all())


def ticket_customer(conn: Connection, ticket_id: str) -> str | None:
    """The ticket's customer (its inline ticket-state row); None for an unknown ticket or
    one recorded without a customer id (imported in clear)."""
    t = ticket_state.c
    found = conn.execute(select(t.customer_id).where(t.ticket_id == ticket_id)).scalar()
    return str(found) if found is not None else None


def compliance_row(conn: Connection, ticket_id: str) -> ComplianceRow | None:
    query = select(compliance_tickets).where(compliance_tickets.c.ticket_id == ticket_id)
    return conn.execute(query).first()


def compliance_row_as_of(
    conn: Connection, store: EventStore, ticket_id: str, as_of: datetime
) -> dict[str, Any] | None:
    """The ticket's compliance row as it stood at ``as_of``: the same fold and rules the
    projection runs, over the events (of both its streams) recorded until then."""
    facts = ticket_facts(conn, store, ticket_id, as_of)
    return compliance_values(facts) if facts is not None else None


def compliance_view(
    conn: Connection, store: EventStore, ticket_id: str, as_of: datetime | None = None
) -> dict[str, Any] | None:
    """One ticket's checklist: its row now, or as it stood at ``as_of``."""
    row = (
        compliance_row(conn, ticket_id)
        if as_of is None
        else compliance_row_as_of(conn, store, ticket_id, as_of)
    )
    return ticket_view(row) if row is not None else None


def ticket_view(row: ComplianceRow | dict[str, Any]) -> dict[str, Any]:
    r: Any = SimpleNamespace(**row) if isinstance(row, dict) else row
    return {
        "ticket_id": r.ticket_id,
        "ticket_number": r.ticket_number,
        "region": r.region,
        "month": r.month,
        "received_at": r.received_at,
        "product_model": r.product_model,
        "fault_category": r.fault_category,
        "service_point_id": r.service_point_id,
        "technician_id": r.technician_id,
        "agent_id": r.agent_id,
        "status": r.status,
        "compliant": r.compliant,
        "checklist": json.loads(r.checklist),
        "version": r.version,
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


def ticket_csv_row(row: ComplianceRow) -> list[Any]:
    checklist = json.loads(row.checklist)
    values = [getattr(row, c) for c in TICKET_CSV_COLUMNS]
    evidence = [" ".join(checklist[name]["evidence"]) for name in (*ITEMS, "first_time_fix")]
    return [*values, *evidence]


def ticket_csv_header() -> list[str]:
    return [*TICKET_CSV_COLUMNS, *(f"{n}_evidence" for n in (*ITEMS, "first_time_fix"))]


# --- aggregates ----------------------------------------------------------------------------


def _rate(numerator: int, denominator: int, digits: int | None = 2) -> float | None:
    """A percentage, shown to ``digits`` (``percent_shown``: never 100 or 0 when it is
    not), or exact (None: for a figure made from it)."""
    if not denominator:
        return None
    rate = 100.0 * numerator / denominator
    return rate if digits is None else percent_shown(rate, digits)


def _mean(total: int, count: int, digits: int | None = 2) -> float | None:
    """``total`` ÷ ``count`` of 0–100 scores (``digits``: as ``_rate``, never shown as 100
    or 0 when it is not); None without values."""
    if not count:
        return None
    mean = total / count
    return mean if digits is None else percent_shown(mean, digits)


def band(score: int, s: FeedbackSettings) -> str:
    if score >= s.band_very_satisfied_from:
        return "very_satisfied"
    if score >= s.band_satisfied_from:
        return "satisfied"
    if score >= s.band_neutral_from:
        return "neutral"
    return "dissatisfied"


STATUSES = (TRUE, FALSE, PENDING, UNKNOWN)


@dataclass
class Tally:
    """The counts a summary is computed from."""

    tickets: int = 0
    compliance: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    items: dict[str, dict[str, int]] = field(
        default_factory=lambda: {n: dict.fromkeys(STATUSES, 0) for n in (*ITEMS, "first_time_fix")}
    )
    scores: Counter[int] = field(default_factory=Counter)  # follow-ups per score
    recommend: Counter[int] = field(default_factory=Counter)  # per would-recommend answer
    complaints: int = 0  # tickets with at least one


# The leading columns of the tally indexes (``tables``): grouped in that order, the
# counts stream out of the index without a sort.
TALLY_SCOPE = ("month", "region", "service_point_id")


def tallies(conn: Connection, filters: ComplianceFilters, group_by: str) -> dict[str | None, Tally]:
    """Per group: the counts a summary is made of, counted in SQL — the tickets'
    checklist statuses and the follow-ups' scores, each from an index that covers them —
    so no row's documents are loaded."""
    column = GROUP_COLUMN[group_by]
    scope = TALLY_SCOPE if column in TALLY_SCOPE else (*TALLY_SCOPE, column)
    at = scope.index(column)
    t = compliance_tickets.c
    grouped = [t[name] for name in (*scope, *TALLY_COLUMNS, "complaints")]
    query = select(*grouped, func.count()).where(*_conditions(filters)).group_by(*grouped)
    found: dict[str | None, Tally] = {}
    for row in conn.execute(query):
        group = found.setdefault(row[at], Tally())
        *statuses, complaints, n = row[len(scope) :]
        group.tickets += n
        group.complaints += n if complaints else 0
        for name, status in zip(TALLY_COLUMNS, statuses, strict=True):
            (group.compliance if name == "compliant" else group.items[name])[status] += n
    for row in conn.execute(_follow_up_counts(filters, scope)):
        group = found.setdefault(row[at], Tally())
        score, recommend, n = row[len(scope) :]
        group.scores[score] += n
        group.recommend[recommend] += n
    return found


def _follow_up_counts(filters: ComplianceFilters, scope: tuple[str, ...]) -> Select[Any]:
    """(*scope, score, would recommend, count) of the filtered tickets' follow-ups: from
    the follow-ups' own copy of their ticket's month, region and service point when that
    is all the filters and the grouping use, else through the tickets' rows."""
    f = follow_ups.c
    if scope == TALLY_SCOPE and not filters.beyond_tally_scope:
        source, where = follow_ups, _conditions(filters, follow_ups)
        grouped = [*(f[name] for name in scope), f.score, f.would_recommend]
    else:
        t = compliance_tickets.c
        source = follow_ups.join(compliance_tickets, t.ticket_id == f.ticket_id)
        where = _conditions(filters)
        grouped = [*(t[name] for name in scope), f.score, f.would_recommend]
    return select(*grouped, func.count()).select_from(source).where(*where).group_by(*grouped)


def merged(groups: Iterable[Tally]) -> Tally:
    """The groups' counts added up: the total row."""
    total = Tally()
    for t in groups:
        total.tickets += t.tickets
        total.complaints += t.complaints
        for status, n in t.compliance.items():
            total.compliance[status] += n
        for name, counts in t.items.items():
            for status, n in counts.items():
                total.items[name][status] += n
        total.scores.update(t.scores)
        total.recommend.update(t.recommend)
    return total


def satisfaction(t: Tally, s: FeedbackSettings, digits: int | None = 2) -> dict[str, Any]:
    """Satisfaction, bands and NPS over every follow-up (``digits``: as ``_rate``)."""
    bands = dict.fromkeys(("very_satisfied", "satisfied", "neutral", "dissatisfied"), 0)
    for score, n in t.scores.items():
        bands[band(score, s)] += n
    promoters = sum(n for r, n in t.recommend.items() if r >= s.nps_promoter_from)
    detractors = sum(n for r, n in t.recommend.items() if r <= s.nps_detractor_up_to)
    answers = t.recommend.total()
    nps = _rate(promoters - detractors, answers, digits)
    return {
        "follow_ups": t.scores.total(),
        "satisfaction_average": _mean(
            sum(score * n for score, n in t.scores.items()), t.scores.total(), digits
        ),
        "bands": bands,
        "promoters": promoters,
        "passives": answers - promoters - detractors,
        "detractors": detractors,
        "nps": nps,
    }


def _decided(counts: dict[str, int]) -> int:
    """Pending and unknown values are decided neither way: left out of every rate."""
    return counts[TRUE] + counts[FALSE]


def summarise_tally(
    key: str | None, t: Tally, s: FeedbackSettings, digits: int | None = 2
) -> dict[str, Any]:
    """A summary from counts already taken (the console counts in SQL); ``digits`` None:
    the rates exact (what a target is judged on)."""
    count, items = t.compliance, t.items
    response, resolution = items["responded_within_sla"], items["resolved_within_sla"]
    deadlines_met = response[TRUE] + resolution[TRUE]
    return {
        "key": key,
        "tickets": t.tickets,
        "compliant": count[TRUE],
        "non_compliant": count[FALSE],
        "pending": count[PENDING],
        "unknown": count[UNKNOWN],
        "compliance_rate": _rate(count[TRUE], _decided(count), digits),
        "items": items,
        "response_sla_rate": _rate(response[TRUE], _decided(response), digits),
        "resolution_sla_rate": _rate(resolution[TRUE], _decided(resolution), digits),
        "sla_attainment": _rate(deadlines_met, _decided(response) + _decided(resolution), digits),
        "first_time_fix_rate": _rate(
            items["first_time_fix"][TRUE], _decided(items["first_time_fix"]), digits
        ),
        **satisfaction(t, s, digits),
        "complaints": t.complaints,
        "complaint_rate": _rate(t.complaints, t.tickets, digits),
    }


def summary(
    conn: Connection, filters: ComplianceFilters, group_by: str, s: FeedbackSettings
) -> dict[str, Any]:
    found = tallies(conn, filters, group_by)
    ordered = sorted(found.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    summaries = [
        summarise_tally(key, t, s) | {"targets": target_checks(t, s)} for key, t in ordered
    ]
    everything = merged(found.values())
    total = summarise_tally(None, everything, s) | {"targets": target_checks(everything, s)}
    return {"group_by": group_by, "groups": summaries, "total": total}


TARGETS: tuple[tuple[str, str, Callable[[FeedbackSettings], float]], ...] = (
    ("compliance_rate", ">=", lambda s: s.target_compliance_rate),
    ("resolution_sla_rate", ">=", lambda s: s.target_resolution_sla_rate),
    ("satisfaction_average", ">=", lambda s: s.target_satisfaction_average),
    ("nps", ">=", lambda s: s.target_nps),
    ("complaint_rate", "<", lambda s: s.target_complaint_rate_below),
)


def target_checks(t: Tally, s: FeedbackSettings) -> list[dict[str, Any]]:
    """Each service-level target beside the group's figure (as shown, 2 decimals): met,
    missed, or None while the figure has no data — judged on the exact figure (99.995 %
    compliant is not 100 %)."""
    shown = summarise_tally(None, t, s)
    exact = summarise_tally(None, t, s, digits=None)
    checks = []
    for measure, comparison, target_of in TARGETS:
        value, target = exact[measure], target_of(s)
        met = None if value is None else (value >= target if comparison == ">=" else value < target)
        checks.append(
            {
                "measure": measure,
                "comparison": comparison,
                "target": target,
                "value": shown[measure],
                "met": met,
            }
        )
    return checks


SUMMARY_CSV_COLUMNS = (
    "key",
    "tickets",
    "compliant",
    "non_compliant",
    "pending",
    "unknown",
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


# --- scorecards ----------------------------------------------------------------------------

ITEM_POINTS: dict[str, Callable[[FeedbackSettings], float]] = {
    "late_visit_dissatisfied": lambda s: s.points_late_visit_dissatisfied,
    "repeat_repair": lambda s: s.points_repeat_repair,
    "poor_service": lambda s: s.points_poor_service,
    "public_complaint": lambda s: s.points_public_complaint,
    "falsified_records": lambda s: s.points_falsified_records,
    "late_parts_return": lambda s: s.points_late_parts_return,
    "positive_media_coverage": lambda s: s.points_positive_media,
}
Entries = dict[str, list[dict[str, Any]]]


def _weighted(measures: dict[str, float | None], weights: dict[str, float]) -> float | None:
    """Weighted mean over the measures that have data (weights renormalised)."""
    present = {k: v for k, v in measures.items() if v is not None}
    total = sum(weights[k] for k in present)
    if not present or not total:
        return None
    return percent_shown(sum(weights[k] * v for k, v in present.items()) / total)


def _earlier_points(conn: Connection, ticket_ids: set[str]) -> dict[str, tuple[str | None, str]]:
    """(service point, region) of the earlier tickets repeat repairs name."""
    if not ticket_ids:
        return {}
    t = compliance_tickets.c
    query = select(t.ticket_id, t.service_point_id, t.region).where(
        t.ticket_id.in_(sorted(ticket_ids))
    )
    return {r.ticket_id: (r.service_point_id, r.region) for r in conn.execute(query)}


def deduction_entries(
    conn: Connection, month: str, s: FeedbackSettings, entries: Entries, region: str | None
) -> None:
    """The month's deductions from ticket events, per service point."""
    d = scorecard_deductions.c
    query = select(scorecard_deductions).where(d.month == month).order_by(d.at, d.ticket_id, d.seq)
    rows = list(conn.execute(query).all())
    # A repeat repair counts against the point that did the earlier (failed) repair.
    earlier = _earlier_points(conn, {r.earlier_ticket_id for r in rows if r.earlier_ticket_id})
    for r in rows:
        point, where = r.service_point_id, r.region
        detail = r.kind.replace("_", " ")
        if r.kind == "repeat_repair":
            point, where = earlier.get(r.earlier_ticket_id or "", (None, r.region))
            detail = f"repeat repair of ticket {r.earlier_ticket_id}"
        if point is None or (region and where != region):
            continue
        entries[point].append(
            {
                "kind": r.kind,
                "points": ITEM_POINTS[r.kind](s),
                "at": iso_utc(r.at),
                "ticket_id": r.ticket_id,
                "event_ids": json.loads(r.event_ids),
                "detail": detail,
            }
        )


def manual_entries(
    conn: Connection, month: str, s: FeedbackSettings, entries: Entries, region: str | None
) -> None:
    """The month's items entered by hand, per service point."""
    i = scorecard_items.c
    query = select(scorecard_items).where(i.month == month).order_by(i.occurred_on, i.event_id)
    for r in conn.execute(query):
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


def scorecards(
    conn: Connection,
    month: str,
    s: FeedbackSettings,
    *,
    service_point_id: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    entries: Entries = defaultdict(list)
    deduction_entries(conn, month, s, entries, region)
    manual_entries(conn, month, s, entries, region)
    filters = ComplianceFilters(region=region, month=month, service_point_id=service_point_id)
    t = compliance_tickets.c
    served = select(t.service_point_id).where(*_conditions(filters)).distinct()
    points = (
        set(entries)
        | {p for p in conn.execute(served).scalars() if p}
        | network_service_points(conn, month, region)
    )
    if service_point_id:
        points &= {service_point_id}
    service_points = [
        {
            "service_point_id": p,
            "score": rounded(s.scorecard_base + sum(e["points"] for e in entries[p])),
            "items": entries[p],
        }
        for p in sorted(points)
    ]
    return {
        "month": month,
        "base": s.scorecard_base,
        "service_points": service_points,
        "technicians": technician_kpis(conn, filters, s),
        "agents": [] if service_point_id else agent_kpis(conn, filters, s),
    }


def _kpi(
    subject: str,
    role: str,
    tickets: int,
    measures: dict[str, float | None],
    weights: dict[str, float],
) -> dict[str, Any]:
    """The score from the exact measures; each measure shown rounded to 2 decimals."""
    return {
        "subject": subject,
        "role": role,
        "tickets": tickets,
        "measures": {k: None if v is None else percent_shown(v) for k, v in measures.items()},
        "weights": weights,
        "score": _weighted(measures, weights),
    }


@dataclass
class StaffTotals:
    """One person's tickets of the month added up: how many, their verdicts on the
    person's measure (first-time fix for a technician, response for an agent) and the
    staff counts (``tables.STAFF_COUNTS``)."""

    tickets: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAFF_COUNTS, 0))
    uncorrected: int = 0  # tickets whose contact details were never corrected


def staff_totals(
    conn: Connection, filters: ComplianceFilters, column: str, verdict: str
) -> list[tuple[str, StaffTotals]]:
    """Per person of ``column`` (technician or agent), in SQL: the columns the projection
    keeps for it, never the tickets' documents."""
    t = compliance_tickets.c
    key, judged = t[column], t[verdict]
    query = (
        select(
            key,
            judged,
            func.count(),
            func.sum(case((t.corrections == 0, 1), else_=0)),
            *(func.sum(t[name]) for name in STAFF_COUNTS),
        )
        .where(*_conditions(filters), key.is_not(None))
        .group_by(key, judged)
    )
    found: dict[str, StaffTotals] = {}
    for subject, status, n, uncorrected, *sums in conn.execute(query):
        if not subject:
            continue
        counts = found.setdefault(subject, StaffTotals())
        counts.tickets += n
        counts.verdicts[status] += n
        counts.uncorrected += uncorrected
        for name, total in zip(STAFF_COUNTS, sums, strict=True):
            counts.sums[name] += total
    return sorted(found.items())


# The ticket row's counts of its last dispatched technician, replaced by every
# technician's own work (``technician_work``): the same measures, credited to who did it
# (first-time fix to the first repair's, a follow-up's score to the repair's it followed).
WORK_SUMS = {
    "technician_visits": "visits",
    "technician_visits_on_time": "visits_on_time",
    "technician_repairs": "repairs",
    "technician_repairs_as_expected": "repairs_as_expected",
    "first_repairs_decided": "first_repairs_decided",
    "first_time_fixes": "first_time_fixes",
    "follow_up_count": "ratings",
    "follow_up_score_total": "rating_total",
}


def technician_totals(
    conn: Connection, filters: ComplianceFilters
) -> list[tuple[str, StaffTotals]]:
    """``staff_totals`` per technician, their visits and repairs those they made on the
    filtered tickets — also on tickets re-dispatched to someone else since (a technician
    with only such work is listed, with no ticket of their own)."""
    found = dict(staff_totals(conn, filters, "technician_id", "first_time_fix"))
    w = technician_work.c
    query = (
        select(w.technician_id, *(func.sum(w[name]) for name in WORK_SUMS.values()))
        .where(*_conditions(filters, technician_work))
        .group_by(w.technician_id)
    )
    worked = {tech: sums for tech, *sums in conn.execute(query)}
    for tech in worked.keys() - found.keys():
        found[tech] = StaffTotals()
    for tech, totals in found.items():
        sums = worked.get(tech) or [0] * len(WORK_SUMS)
        totals.sums.update(zip(WORK_SUMS, map(int, sums), strict=True))
    return sorted(found.items())


def technician_measures(c: StaffTotals) -> dict[str, float | None]:
    """first-time fix = % of the tickets whose first repair they made (decided ones) fixed
    then, at the first visit, never reopened; timeliness = % of the technician's visits
    that arrived by the appointment's end; parts usage = % of the technician's repairs
    that used only parts the diagnosis expected; customer rating = average satisfaction
    score of the follow-ups of their repairs."""
    sums = c.sums
    return {  # exact: the KPI score is made from them (``_kpi`` rounds what it shows)
        "first_time_fix": _rate(sums["first_time_fixes"], sums["first_repairs_decided"], None),
        "timeliness": _rate(sums["technician_visits_on_time"], sums["technician_visits"], None),
        "parts_usage": _rate(
            sums["technician_repairs_as_expected"], sums["technician_repairs"], None
        ),
        "customer_rating": _mean(sums["follow_up_score_total"], sums["follow_up_count"], None),
    }


def technician_kpis(
    conn: Connection, filters: ComplianceFilters, s: FeedbackSettings
) -> list[dict[str, Any]]:
    """Over the month's tickets each technician worked (``technician_totals``)."""
    weights = {
        "first_time_fix": s.technician_weight_first_time_fix,
        "timeliness": s.technician_weight_timeliness,
        "parts_usage": s.technician_weight_parts_usage,
        "customer_rating": s.technician_weight_customer_rating,
    }
    return [
        _kpi(tech, "technician", c.tickets, technician_measures(c), weights)
        for tech, c in technician_totals(conn, filters)
    ]


def agent_measures(c: StaffTotals) -> dict[str, float | None]:
    """response time = % of decided tickets first responded to within the urgency SLA;
    record accuracy = % of tickets whose contact details never needed a correction;
    satisfaction = average follow-up satisfaction score."""
    sums = c.sums
    return {
        "response_time": _rate(c.verdicts[TRUE], _decided(c.verdicts), None),
        "record_accuracy": _rate(c.uncorrected, c.tickets, None),
        "satisfaction": _mean(sums["follow_up_score_total"], sums["follow_up_count"], None),
    }


def agent_kpis(
    conn: Connection, filters: ComplianceFilters, s: FeedbackSettings
) -> list[dict[str, Any]]:
    """Over the month's tickets each call-center agent received."""
    weights = {
        "response_time": s.agent_weight_response_time,
        "record_accuracy": s.agent_weight_record_accuracy,
        "satisfaction": s.agent_weight_satisfaction,
    }
    return [
        _kpi(agent, "call_center_agent", c.tickets, agent_measures(c), weights)
        for agent, c in staff_totals(conn, filters, "agent_id", "responded_within_sla")
    ]


# --- quality -------------------------------------------------------------------------------


def iso_week_days(week: str) -> tuple[date, date]:
    """``2026-W47`` → (Monday, next Monday)."""
    year, number = week.split("-W")
    monday = date.fromisocalendar(int(year), int(number), 1)
    return monday, monday + timedelta(days=7)


def alerts_between(conn: Connection, start: date, end: date) -> list[dict[str, Any]]:
    a = quality_alerts.c
    query = (
        select(quality_alerts)
        .where(a.day >= start.isoformat(), a.day < end.isoformat())
        .order_by(a.day, a.product_model, a.fault_category)
    )
    return [
        {
            "event_id": r.event_id,
            "day": r.day,
            "product_model": r.product_model,
            "fault_category": r.fault_category,
            "count": r.count,
            "threshold": r.threshold,
            "ticket_ids": json.loads(r.ticket_ids),
            "raised_at": iso_utc(r.raised_at),
        }
        for r in conn.execute(query)
    ]


def repair_counts_between(conn: Connection, start: date, end: date) -> list[dict[str, Any]]:
    """Repairs per product model and fault category, with their count per day."""
    rp = repairs.c
    grouped = (rp.product_model, rp.fault_category, rp.day)
    query = (
        select(*grouped, func.count())
        .where(rp.day >= start.isoformat(), rp.day < end.isoformat())
        .group_by(*grouped)
        .order_by(*grouped)
    )
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for model, category, day, n in conn.execute(query):
        group = counts.setdefault(
            (model, category),
            {"product_model": model, "fault_category": category, "repairs": 0, "by_day": {}},
        )
        group["repairs"] += n
        group["by_day"][day] = n
    return sorted(
        counts.values(), key=lambda g: (-g["repairs"], g["product_model"], g["fault_category"])
    )


def quality_weekly(
    conn: Connection, week: str, s: FeedbackSettings, region: str | None = None
) -> dict[str, Any]:
    """The week's report. The counts are the platform's (a model's fault is everyone's);
    a region-bound caller's alerts list only its own region's tickets (ids of another
    region's do not exist for it)."""
    start, end = iso_week_days(week)
    alerts = alerts_between(conn, start, end)
    if region is not None:
        listed = {i for alert in alerts for i in alert["ticket_ids"]}
        t = ticket_state.c
        theirs = {
            i
            for (i,) in conn.execute(
                select(t.ticket_id).where(t.ticket_id.in_(listed), not_by_index(t.region) == region)
            )
        }
        for alert in alerts:
            alert["ticket_ids"] = [i for i in alert["ticket_ids"] if i in theirs]
    return {
        "week": week,
        "from_day": start.isoformat(),
        "to_day": (end - timedelta(days=1)).isoformat(),
        "threshold": s.quality_alert_threshold,
        "alerts": alerts,
        "counts": repair_counts_between(conn, start, end),
    }


def repairs_on(conn: Connection, day: date) -> dict[tuple[str, str], list[str]]:
    """The repairs of ``day`` (UTC) per (product model, fault category): the ticket of each
    repair, once per repair (``repairs_between`` for one day)."""
    return repairs_between(conn, day, day).get(day, {})


def repairs_between(
    conn: Connection, first: date, last: date
) -> dict[date, dict[tuple[str, str], list[str]]]:
    """The repairs per day (UTC, ``first`` to ``last``) and (product model, fault
    category), as the weekly report counts them (``feedback_repairs``): each
    ``TicketRepaired`` once, in the fault category of the ticket's diagnosis at the time
    of the repair (a later re-diagnosis does not move it). Read from the ledger and the
    inline ticket-state rows, so the quality job never waits on an asynchronous
    projection."""
    start = datetime.combine(first, time(), tzinfo=UTC)
    end = datetime.combine(last, time(), tzinfo=UTC) + timedelta(days=1)
    r, d, t = events.alias("r"), events.alias("d"), ticket_state.c
    diagnosed_before = (
        select(func.max(d.c.position))
        .where(
            d.c.stream_id == r.c.stream_id,
            d.c.event_type == TicketDiagnosed.event_type,
            d.c.position < r.c.position,
        )
        .scalar_subquery()
    )
    diagnosis = events.alias("diagnosis")
    query = (
        select(
            r.c.stream_id,
            r.c.occurred_at,
            t.product_model,
            diagnosis.c.position,
            diagnosis.c.schema_version,
            diagnosis.c.payload,
        )
        .select_from(
            r.join(ticket_state, t.ticket_id == r.c.stream_id).outerjoin(
                diagnosis, diagnosis.c.position == diagnosed_before
            )
        )
        .where(
            repairs_only(r),
            r.c.occurred_at >= start,
            r.c.occurred_at < end,
        )
        .order_by(r.c.position)
    )
    days: dict[date, dict[tuple[str, str], list[str]]] = {}
    for row in conn.execute(query):
        category = FaultCategory.other
        if row.payload is not None:
            body = upcast(TicketDiagnosed.event_type, row.schema_version, orjson.loads(row.payload))
            try:
                category = FaultCategory(body.get("category") or category)
            except ValueError as exc:  # a stored row edited since it was appended
                raise UnreadableEvent(row.position, exc) from exc
        key = (row.product_model, category.value)
        day = row.occurred_at.astimezone(UTC).date()
        days.setdefault(day, {}).setdefault(key, []).append(row.stream_id)
    return days


def _member_descriptions(
    conn: Connection, query: Select[Any]
) -> Iterator[tuple[Row[Any], dict[str, Any]]]:
    """The network members' descriptions (a registration or update: the events naming a
    level) among the service-point events ``query`` selects, upcast, in its order."""
    for row in conn.execute(query):
        body = upcast(row.event_type, row.schema_version, orjson.loads(row.payload))
        if "level" in body:
            yield row, body


def network_service_points(conn: Connection, month: str, region: str | None) -> set[str]:
    """The network's service points active at the month's end (in ``region``), from their
    service-point streams in the ledger: a month's scorecards list each, at the base
    score when it has no item."""
    e = events.c
    query = (
        select(e.stream_id, e.event_type, e.schema_version, e.payload, e.occurred_at)
        .where(e.stream_type == "service_point")
        .order_by(e.position)
    )
    latest = {
        row.stream_id: body
        for row, body in _member_descriptions(conn, query)
        if month_of(row.occurred_at) <= month
    }
    return {
        point
        for point, body in latest.items()
        if body["level"] == "service_point"
        and body.get("active", True)
        and (region is None or body.get("region") == region)
    }


def network_member(conn: Connection, member_id: str) -> NetworkMember | None:
    """The service network's member with this id, as its latest registration or update in
    the ledger has it (the network is dispatch's: its service-point streams); None when
    there is none."""
    e = events.c
    query = (
        select(e.event_type, e.schema_version, e.payload, e.occurred_at)
        .where(e.stream_id == member_id, e.stream_type == "service_point")
        .order_by(e.stream_version)
    )
    described = list(_member_descriptions(conn, query))
    if not described:
        return None
    (first, _), (_, body) = described[0], described[-1]
    region = body.get("region")
    joined = first.occurred_at.date()  # UTC
    return NetworkMember(str(body["level"]), None if region is None else str(region), joined)

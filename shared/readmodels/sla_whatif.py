"""What-if: every ticket received in a period, its clocks recomputed under another policy
(and calendars) beside the terms it actually runs on — compliance and breach rates per
region and service point, side by side. A read: nothing is written, the ledger does not
move (docs/sla.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from shared.kernel.calendar import Calendar, build_calendar, check_reachable
from shared.kernel.errors import InvalidCommand
from shared.kernel.events.sla import CalendarDescription, SlaPolicyDescription
from shared.kernel.numbers import percent_shown, rounded
from shared.kernel.sla import (
    RESOLUTION,
    RESPONSE,
    DeadlineClock,
    SlaPolicy,
    SlaTerms,
    check_policy,
    check_reachable_targets,
    policy_from,
    sla_clock,
)
from shared.kernel.ticket import TICKETS
from shared.readmodels.sla import TermsReader
from shared.readmodels.ticket_state import ticket_state

OUTCOMES = ("met", "late", "overdue", "open", "capped")
RATES = ("response_sla_rate", "resolution_sla_rate", "sla_attainment")
BREACH_RATES = ("response_breach_rate", "resolution_breach_rate")


@dataclass(frozen=True)
class Candidate:
    """The policy (and calendars) to try, checked as an admin's definition would be."""

    policy: SlaPolicy
    calendars: Mapping[str, Calendar]
    name: str


def candidate(
    policy: SlaPolicyDescription, calendars: Mapping[str, CalendarDescription]
) -> Candidate:
    check_policy(policy)
    built = {cid: build_calendar(cid, 0, d) for cid, d in calendars.items()}
    return Candidate(policy_from("what-if", 0, policy), built, policy.name)


def outcome(clock: DeadlineClock | None) -> str | None:
    """met, late (met after the deadline), overdue (open past it), open, capped (open,
    its deadline beyond the horizon: unreachable on those calendars); None: no such
    deadline yet (not diagnosed)."""
    if clock is None:
        return None
    if clock.open and clock.capped:
        return "capped"
    return {"met": "met", "met_late": "late", "breached": "overdue"}.get(clock.status, "open")


@dataclass
class Tally:
    tickets: int = 0
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {d: dict.fromkeys(OUTCOMES, 0) for d in (RESPONSE, RESOLUTION)}
    )

    def add(self, response: str | None, resolution: str | None) -> None:
        self.tickets += 1
        for deadline, found in ((RESPONSE, response), (RESOLUTION, resolution)):
            if found is not None:
                self.counts[deadline][found] += 1


def _rate(part: int, whole: int) -> float | None:
    return percent_shown(100.0 * part / whole) if whole else None


def summary(t: Tally) -> dict[str, Any]:
    """Compliance rate: met among the decided (met, late, overdue); breach rate: late or
    overdue among all tickets with that deadline."""
    out: dict[str, Any] = {"tickets": t.tickets}
    met = decided = 0
    for deadline in (RESPONSE, RESOLUTION):
        c = t.counts[deadline]
        missed = c["late"] + c["overdue"]
        out[deadline] = dict(c)
        out[f"{deadline}_sla_rate"] = _rate(c["met"], c["met"] + missed)
        out[f"{deadline}_breach_rate"] = _rate(missed, sum(c.values()))
        met, decided = met + c["met"], decided + c["met"] + missed
    out["sla_attainment"] = _rate(met, decided)
    return out


def side_by_side(key: str | None, current: Tally, what_if: Tally) -> dict[str, Any]:
    now, then = summary(current), summary(what_if)
    delta = {
        k: rounded(then[k] - now[k]) if now[k] is not None and then[k] is not None else None
        for k in (*RATES, *BREACH_RATES)
    }
    return {"key": key, "current": now, "what_if": then, "delta": delta}


def _period_tickets(
    conn: Connection, start: datetime, end: datetime, region: str | None
) -> list[str]:
    t = ticket_state.c
    query = select(t.ticket_id).where(t.created_at >= start, t.created_at < end)
    if region is not None:
        query = query.where(t.region == region)
    return list(conn.execute(query.order_by(t.created_at, t.ticket_id)).scalars())


def _terms(reader: TermsReader, chosen: Candidate, at: datetime) -> SlaTerms:
    """The candidate's terms, refused as an admin's definition would be: calendars it
    names and does not give are their latest versions; every target reachable."""
    named = chosen.policy.calendar_ids()
    calendars = {**reader.latest_calendars(named - set(chosen.calendars)), **chosen.calendars}
    missing = sorted(named - set(calendars))
    if missing:
        raise InvalidCommand("calendars", f"no calendar {', '.join(missing)}: define it or give it")
    for cid, given in chosen.calendars.items():
        try:
            check_reachable(given, at.date(), reader.horizon)
        except InvalidCommand as exc:
            raise InvalidCommand(f"calendars.{cid}.{exc.field}", exc.detail) from None
    check_reachable_targets(chosen.policy, calendars, at, reader.horizon)
    return SlaTerms(chosen.policy, calendars, reader.horizon)


def clocks_at(asked: datetime | None, now: datetime) -> datetime:
    """The clocks' instant: ``asked`` or now (never later: the clocks are recomputed as
    they stood, not projected ahead)."""
    if asked is not None and asked > now:
        raise InvalidCommand("at", "the clocks are recomputed as they stood, up to now")
    return asked or now


def what_if(
    reader: TermsReader,
    chosen: Candidate,
    received: tuple[datetime, datetime],
    at: datetime,
    *,
    max_tickets: int | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """Tickets received in ``[from, to)`` by ``at``, each clock at ``at`` on its own terms
    and on the candidate's; per region and per service point (the latest dispatch).
    ``max_tickets``: a period with more is refused (an HTTP caller waits for the answer).
    ``region``: that region's tickets only (a caller confined to it)."""
    start, end = received
    if end <= start:
        raise InvalidCommand("received_to", "the period must end after it starts")
    alternative = _terms(reader, chosen, at)
    tickets = _period_tickets(reader.conn, start, end, region)
    if max_tickets is not None and len(tickets) > max_tickets:
        raise InvalidCommand(
            "received_to",
            f"{len(tickets)} tickets were received in the period, more than the "
            f"{max_tickets} recomputed here (TICKETLINE_SLA_WHAT_IF_MAX_TICKETS): narrow the "
            "period, or run `ticketline sla what-if`, which has no limit",
        )
    groups: dict[tuple[str, str | None], tuple[Tally, Tally]] = {}
    total = (Tally(), Tally())
    for ticket_id in tickets:
        # As it stood at ``at``: what was recorded later (a diagnosis, a repair, a
        # re-evaluation) had not happened yet for the clocks then.
        found_by_then = reader.store.read_stream(reader.conn, ticket_id, recorded_until=at)
        state = TICKETS.fold(ticket_id, found_by_then)
        if state.received_at is None or state.received_at > at:  # not there yet at ``at``
            continue
        point = state.dispatch.service_point_id if state.dispatch else None
        found = []
        for terms in (reader.for_ticket(state), alternative):
            clock = sla_clock(state, terms, at)
            found.append((outcome(clock.deadline(RESPONSE)), outcome(clock.deadline(RESOLUTION))))
        keys = (("region", state.region), ("service_point", point))
        for tallies in (total, *(groups.setdefault(k, (Tally(), Tally())) for k in keys)):
            for tally, outcomes in zip(tallies, found, strict=True):
                tally.add(*outcomes)

    def listed(kind: str) -> list[dict[str, Any]]:
        found = sorted((k[1] or "", v) for k, v in groups.items() if k[0] == kind)
        return [side_by_side(key or None, *tallies) for key, tallies in found]

    return {
        "policy": chosen.name,
        "received_from": start,
        "received_to": end,
        "at": at,
        "total": side_by_side(None, *total),
        "regions": listed("region"),
        "service_points": listed("service_point"),
    }

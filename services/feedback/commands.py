"""Feedback's command handlers: gather the facts a decision needs (the settings, the
time), then run it through the service's executor — inside the caller's unit of work.

The read models the service keeps inline (the compliance row for ticket events, the
manual scorecard items, the quality alerts) are declared once in ``service.py``; the
executor applies them in the same transaction, so callers read their own writes.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Connection

from services.feedback import domain, read_models
from shared.app.executor import Handling, Outcome, require_region
from shared.kernel.clock import latest_today
from shared.kernel.ticket import TICKETS, TicketState


def record_follow_up(
    conn: Connection, h: Handling, ticket_id: str, follow_up: domain.FollowUp
) -> Outcome[TicketState]:
    threshold = h.settings.feedback.dissatisfied_below
    command = domain.RecordFollowUp(follow_up, dissatisfied_below=threshold)
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_follow_up)


def file_complaint(
    conn: Connection, h: Handling, ticket_id: str, command: domain.FileComplaint
) -> Outcome[TicketState]:
    customer = read_models.ticket_customer(conn, ticket_id)
    if customer is not None:
        command = replace(command, customer_erased=h.personal().hold_customer(conn, customer))
    return h.execute(conn, TICKETS, ticket_id, command, domain.decide_complaint)


def record_scorecard_item(
    conn: Connection, h: Handling, item: domain.ScorecardItem
) -> Outcome[domain.ScorecardState]:
    member = read_models.network_member(conn, item.service_point_id)
    if member is not None:  # before the stream: another region's scorecard is never read
        require_region(h.invocation.reach, domain.SCORECARDS.stream_type, member[1])
    known = frozenset(t for t in item.ticket_ids if _ticket_in_reach(conn, h, t))
    today = latest_today(h.now())
    command = domain.RecordScorecardItem(item, today, member, known_tickets=known)
    stream_id = domain.scorecard_stream_id(item.service_point_id)
    return h.execute(conn, domain.SCORECARDS, stream_id, command, domain.decide_scorecard_item)


def _ticket_in_reach(conn: Connection, h: Handling, ticket_id: str) -> bool:
    state = h.executor.load(conn, TICKETS, ticket_id).state
    return TICKETS.exists(state) and h.invocation.reach.allows(TICKETS.scope(state))


def raise_quality_alert(
    conn: Connection, h: Handling, command: domain.RaiseQualityAlert
) -> Outcome[domain.QualityAlertState]:
    decider = domain.QUALITY_ALERTS
    return h.execute(conn, decider, command.stream_id, command, domain.decide_quality_alert)

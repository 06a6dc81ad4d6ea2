"""Feedback's step of an imported ticket's history: the follow-up, which closes the ticket
(satisfied and solved) or reopens and escalates it — feedback's own decide function, as
of the follow-up's time. After an import, the quality alerts of the days the history
repaired anything are decided as the daily job would have (``jobs.raise_quality_alerts``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection

from services.feedback import commands, domain, jobs, read_models
from shared.app.config import Settings
from shared.app.executor import Handling
from shared.app.importing.fields import Column, Fields, Problem, RowFailed
from shared.app.importing.kinds import KindContext, guarded, run_at
from shared.app.importing.tickets import Decided, HistoryStep, TicketHistoryView, TicketRow
from shared.app.platform import Platform
from shared.eventstore.ledger import ConcurrencyError
from shared.kernel.events.envelope import PendingEvent
from shared.kernel.events.tickets import (
    FaultCategory,
    FollowUpChannel,
    FollowUpRecorded,
    TicketClosed,
)
from shared.kernel.personal import marker_refusal
from shared.kernel.ticket import TICKETS, TicketState

SERVICE = "feedback"
REPAIR_DAYS = "feedback.repair_days"
COLUMNS = (
    Column("followed_up_at", False, "The return visit / call to the customer."),
    Column("satisfaction_score", False, "0–100 (with followed_up_at)."),
    Column("would_recommend", False, "0–10 (NPS question)."),
    Column("problem_solved", False, "true or false."),
    Column("follow_up_channel", False, "call (default) or message."),
    Column("follow_up_comment"),
    Column("closed_at", False, "Needs a satisfactory follow-up (default: the follow-up's time)."),
)


@dataclass(frozen=True)
class FollowUpPart:
    followed_up_at: datetime | None = None
    follow_up: domain.FollowUp | None = None
    closed_at: datetime | None = None


def parse(f: Fields, _context: KindContext) -> FollowUpPart:
    at = f.timestamp("followed_up_at")
    closed_at = f.timestamp("closed_at")
    details = ("satisfaction_score", "would_recommend", "problem_solved", "follow_up_channel")
    if at is None:
        f.given_without("followed_up_at", (*details, "follow_up_comment", "closed_at"))
        return FollowUpPart(closed_at=closed_at)
    score = f.integer("satisfaction_score", required=True, minimum=0, maximum=100)
    recommend = f.integer("would_recommend", required=True, minimum=0, maximum=10)
    solved = f.boolean("problem_solved", required=True)
    channel = f.choice("follow_up_channel", FollowUpChannel) or FollowUpChannel.call
    comment = f.text("follow_up_comment")
    if (refused := marker_refusal(comment)) is not None:
        f.problem("follow_up_comment", refused)
        comment = None  # the row is refused for it; nothing else to say of its follow-up
    if score is None or recommend is None or solved is None:
        return FollowUpPart(at, None, closed_at)
    return FollowUpPart(at, domain.FollowUp(score, recommend, solved, channel, comment), closed_at)


def times(part: FollowUpPart) -> list[tuple[str, datetime | None]]:
    return [("followed_up_at", part.followed_up_at), ("closed_at", part.closed_at)]


def gather(_conn: Connection, _rows: Sequence[TicketRow], context: KindContext) -> Settings:
    return context.settings


def decide(
    row: TicketRow, state: TicketState, settings: Settings, _context: KindContext
) -> Decided:
    part: FollowUpPart = row.parts[SERVICE]
    if part.follow_up is None or part.followed_up_at is None:
        return [], state
    command = domain.RecordFollowUp(part.follow_up, settings.feedback.dissatisfied_below)
    at = part.followed_up_at
    events, after = guarded(
        row.line,
        "followed_up_at",
        lambda: run_at(TICKETS, state, command, domain.decide_follow_up, at),
    )
    if part.closed_at is None:
        return events, after
    if not any(isinstance(e.payload, TicketClosed) for e in events):
        why = domain.why_unsatisfactory(part.follow_up, settings.feedback.dissatisfied_below)
        problem = f"the follow-up reopens the ticket ({why}): a ticket closes only when satisfied"
        raise RowFailed([Problem(row.line, "closed_at", problem)])
    closed = [
        PendingEvent(e.payload, part.closed_at) if isinstance(e.payload, TicketClosed) else e
        for e in events
    ]
    return closed, after


def accept(row: TicketRow, _state: TicketState, _settings: Settings, context: KindContext) -> None:
    """Remember the day of an imported repair, for the quality check after the import
    (the validating pass's decisions are the ones written)."""
    if not row.values.get("repaired_at"):
        return
    at = Fields(row.line, row.values, context.zone).timestamp("repaired_at")
    if at is not None:
        days: set[date] = context.memory.setdefault(REPAIR_DAYS, set())
        days.add(at.astimezone(UTC).date())


async def quality_alerts(platform: Platform, context: KindContext) -> None:
    """The daily quality check (``jobs.raise_quality_alerts``) for every day the imported
    history repaired something; each alert is recorded once, whoever decides it first.
    Decided a hundred at a time in one unit of work (one at a time after a conflict)."""
    days = sorted(context.memory.get(REPAIR_DAYS, ()))
    if not days:
        return
    by_day = await platform.db.read(lambda c: read_models.repairs_between(c, days[0], days[-1]))
    threshold = platform.settings.feedback.quality_alert_threshold
    due = [
        command
        for day in days
        for (model, category), repairs in sorted(by_day.get(day, {}).items())
        if domain.alert_due(
            command := domain.RaiseQualityAlert(
                model, FaultCategory(category), day, tuple(repairs), threshold
            )
        )
    ]
    h = Handling.for_system(platform, jobs.SERVICE)
    for start in range(0, len(due), 100):
        chunk = due[start : start + 100]
        try:
            await platform.db.write(lambda c, chunk=chunk: _raise_all(c, h, chunk))
        except ConcurrencyError:
            for command in chunk:
                with contextlib.suppress(ConcurrencyError):  # recorded meanwhile
                    await platform.db.write(
                        partial(commands.raise_quality_alert, h=h, command=command)
                    )


def _raise_all(conn: Connection, h: Handling, due: Sequence[domain.RaiseQualityAlert]) -> None:
    for command in due:
        commands.raise_quality_alert(conn, h, command)


def export(view: TicketHistoryView) -> dict[str, Any]:
    found = view.latest.get(FollowUpRecorded.event_type)
    if found is None:
        return {}
    follow_up, at = found
    assert isinstance(follow_up, FollowUpRecorded)
    closed = view.latest.get(TicketClosed.event_type)
    return {
        "followed_up_at": at,
        "satisfaction_score": follow_up.satisfaction_score,
        "would_recommend": follow_up.would_recommend,
        "problem_solved": follow_up.problem_solved,
        "follow_up_channel": follow_up.channel.value,
        "follow_up_comment": follow_up.comment,
        "closed_at": closed[1] if closed else None,
    }


HISTORY = HistoryStep(
    SERVICE, COLUMNS, parse, times, gather, decide, export, quality_alerts, accepted=accept
)

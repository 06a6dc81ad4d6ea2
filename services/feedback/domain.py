"""Feedback decisions: pure functions of (ticket state, command) → events."""

from __future__ import annotations

from dataclasses import dataclass

from shared.kernel.errors import RuleViolation
from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.tickets import (
    Channel,
    ComplaintFiled,
    EscalationCause,
    FollowUpChannel,
    FollowUpRecorded,
    TicketClosed,
    TicketEscalated,
    TicketReopened,
)
from shared.kernel.ticket import TicketState, TicketStatus, require_open, require_ticket

ESCALATION_LEVEL = "regional_center"


@dataclass(frozen=True)
class RecordFollowUp:
    satisfaction_score: int
    would_recommend: int
    problem_solved: bool
    channel: FollowUpChannel
    comment: str | None = None


@dataclass(frozen=True)
class FileComplaint:
    complaint: str
    channel: Channel
    public: bool = False


def clip(text: str, limit: int = 4000) -> str:
    """Event texts have a length limit; a quoted complaint must not break it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_satisfactory(score: int, problem_solved: bool, *, dissatisfied_below: int) -> bool:
    return problem_solved and score >= dissatisfied_below


def decide_follow_up(
    state: TicketState, command: RecordFollowUp, *, dissatisfied_below: int
) -> list[EventPayload]:
    """Only after a repair. Satisfied and solved closes the ticket; otherwise it is
    reopened and escalated, and goes back to dispatch."""
    require_open(state)
    if state.status is not TicketStatus.repaired:
        raise RuleViolation(
            "follow_up_requires_repair",
            f"a follow-up is recorded after the repair; the ticket is {state.status.value}",
        )
    follow_up = FollowUpRecorded(
        satisfaction_score=command.satisfaction_score,
        would_recommend=command.would_recommend,
        problem_solved=command.problem_solved,
        comment=command.comment,
        channel=command.channel,
    )
    if is_satisfactory(
        command.satisfaction_score, command.problem_solved, dissatisfied_below=dissatisfied_below
    ):
        return [follow_up, TicketClosed(reason="satisfied")]
    why = (
        "problem not solved"
        if not command.problem_solved
        else f"dissatisfied (score {command.satisfaction_score} < {dissatisfied_below})"
    )
    assert state.region is not None
    return [
        follow_up,
        TicketReopened(reason=f"follow-up: {why}", source="follow_up", escalated=True),
        TicketEscalated(
            level=ESCALATION_LEVEL,
            cause=EscalationCause.reopened,
            region=state.region,
            reason=f"reopened after follow-up: {why}",
        ),
    ]


def decide_complaint(state: TicketState, command: FileComplaint) -> list[EventPayload]:
    """A complaint is always recorded; against a closed ticket it reopens and escalates."""
    require_ticket(state)
    complaint = ComplaintFiled(
        complaint=command.complaint, channel=command.channel, public=command.public
    )
    if state.status is not TicketStatus.closed:
        return [complaint]
    assert state.region is not None
    return [
        complaint,
        TicketReopened(reason=clip(f"complaint: {command.complaint}"), source="complaint"),
        TicketEscalated(
            level=ESCALATION_LEVEL,
            cause=EscalationCause.complaint,
            region=state.region,
            reason=clip(f"complaint against a closed ticket: {command.complaint}"),
        ),
    ]

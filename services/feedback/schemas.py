"""Feedback's HTTP bodies (pydantic at the boundary; unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool

from services.feedback import domain
from shared.kernel.events.quality import ScorecardItemKind
from shared.kernel.events.tickets import (
    WHOLE,
    CalendarDay,
    Channel,
    FollowUpChannel,
    LongText,
    RegionCode,
    ShortText,
)
from shared.kernel.lifecycle import TicketStatus
from shared.kernel.personal import Personal


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FollowUpRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "satisfaction_score": 92,
                    "would_recommend": 9,
                    "problem_solved": True,
                    "comment": "Technician was on time and explained the fix.",
                    "channel": "call",
                },
                {
                    "satisfaction_score": 40,
                    "would_recommend": 3,
                    "problem_solved": False,
                    "comment": "Drum still does not spin.",
                    "channel": "call",
                },
            ]
        },
    )

    satisfaction_score: Annotated[int, Strict(), Field(ge=0, le=100, description="0–100."), WHOLE]
    would_recommend: Annotated[
        int, Strict(), Field(ge=0, le=10, description="0–10 (NPS question)."), WHOLE
    ]
    problem_solved: StrictBool
    # Personal, as in the event: the words erased data shows are refused here, named.
    comment: Annotated[LongText, Personal()] | None = None
    channel: FollowUpChannel

    def command(self) -> domain.FollowUp:
        return domain.FollowUp(
            satisfaction_score=self.satisfaction_score,
            would_recommend=self.would_recommend,
            problem_solved=self.problem_solved,
            channel=self.channel,
            comment=self.comment,
        )


class ComplaintRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "complaint": "The machine broke again two days after the repair.",
                    "channel": "phone",
                    "public": False,
                }
            ]
        },
    )

    complaint: Annotated[LongText, Personal()]
    channel: Channel
    public: StrictBool = Field(default=False, description="Public complaint or media exposure.")

    def command(self) -> domain.FileComplaint:
        return domain.FileComplaint(self.complaint, self.channel, self.public)


class ScorecardItemRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "service_point_id": "sp-hz-01",
                    "region": "east",
                    "item": "poor_service",
                    "occurred_on": "2026-11-12",
                    "evidence": "Mystery-shopper report MS-2026-118: technician was rude.",
                    "ticket_ids": [],
                }
            ]
        },
    )

    service_point_id: ShortText
    region: RegionCode | None = Field(
        default=None, description="The point's region, as the network has it (422 otherwise)."
    )
    item: ScorecardItemKind
    occurred_on: CalendarDay = Field(
        description="The day it happened: not in the future, not before 1950-01-01."
    )
    evidence: LongText = Field(description="What shows it: a report, an article, a record.")
    ticket_ids: list[UUID] = Field(
        default_factory=list,
        max_length=100,
        description="Tickets the item concerns, each once (422 `ticket_ids.N` for an id "
        "that names no ticket within the caller's reach).",
    )

    def command(self) -> domain.ScorecardItem:
        return domain.ScorecardItem(
            service_point_id=self.service_point_id,
            item=self.item,
            occurred_on=self.occurred_on,
            evidence=self.evidence,
            region=self.region,
            ticket_ids=tuple(str(t) for t in self.ticket_ids),
        )


class FeedbackAccepted(BaseModel):
    """What a ticket command returns."""

    ticket_id: str
    status: TicketStatus
    version: int
    outcome: str = Field(description="closed, reopened or recorded.")
    events: list[str] = Field(description="Ids of the events this command recorded.")


class ScorecardItemAccepted(BaseModel):
    event_id: str
    service_point_id: str
    item: str
    month: str


class ChecklistItem(BaseModel):
    status: str = Field(
        description="true, false or pending; unknown for an imported ticket's item the "
        "replaced system kept no evidence of."
    )
    evidence: list[str] = Field(description="Ids of the events that decide the item.")
    note: str


class ComplianceTicket(BaseModel):
    ticket_id: str
    ticket_number: str
    region: str
    month: str
    received_at: datetime
    product_model: str
    fault_category: str | None
    service_point_id: str | None
    technician_id: str | None
    agent_id: str | None
    status: TicketStatus
    compliant: str
    checklist: dict[str, ChecklistItem]
    version: int


class ComplianceTicketPage(BaseModel):
    items: list[ComplianceTicket]
    next_cursor: str | None


class TargetCheck(BaseModel):
    measure: str = Field(description="The figure judged, a field of this group.")
    comparison: Literal[">=", "<"]
    target: float = Field(description="The setting's value (TICKETLINE_FEEDBACK_TARGET_…).")
    value: float | None
    met: bool | None = Field(description="None while the figure has no data.")


class SummaryGroup(BaseModel):
    key: str | None
    tickets: int
    compliant: int
    non_compliant: int
    pending: int
    unknown: int = Field(
        default=0, description="Imported tickets with items the replaced system left unknown."
    )
    compliance_rate: float | None
    items: dict[str, dict[str, int]]
    response_sla_rate: float | None
    resolution_sla_rate: float | None
    sla_attainment: float | None
    first_time_fix_rate: float | None
    follow_ups: int
    satisfaction_average: float | None
    bands: dict[str, int]
    promoters: int
    passives: int
    detractors: int
    nps: float | None
    complaints: int
    complaint_rate: float | None
    targets: list[TargetCheck] = Field(
        default_factory=list,
        description="The service-level targets (compliance 100 %, resolution within the "
        "SLA ≥ 98 %, satisfaction ≥ 95, NPS ≥ 60, complaints < 2 %: settings) beside this "
        "group's figures.",
    )


class ComplianceSummary(BaseModel):
    group_by: str
    month: str | None
    groups: list[SummaryGroup]
    total: SummaryGroup


class ScorecardEntry(BaseModel):
    kind: str
    points: float
    at: str
    ticket_id: str | None
    event_ids: list[str]
    detail: str


class ServicePointScorecard(BaseModel):
    service_point_id: str
    score: float
    items: list[ScorecardEntry]


class StaffKpi(BaseModel):
    subject: str
    role: str
    tickets: int
    measures: dict[str, float | None]
    weights: dict[str, float]
    score: float | None


class Scorecards(BaseModel):
    month: str
    base: float
    service_points: list[ServicePointScorecard]
    technicians: list[StaffKpi]
    agents: list[StaffKpi]


class QualityWeekly(BaseModel):
    week: str
    from_day: str
    to_day: str
    threshold: int
    alerts: list[dict[str, Any]]
    counts: list[dict[str, Any]]

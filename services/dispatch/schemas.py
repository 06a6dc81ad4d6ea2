"""Dispatch's HTTP bodies (pydantic at the boundary; unknown fields are rejected)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictFloat,
    ValidationInfo,
    field_validator,
)

from services.dispatch import domain
from shared.http.params import UtcTime
from shared.kernel.errors import InvalidCommand
from shared.kernel.events.network import (
    NetworkId,
    ServicePointDescription,
    Shift,
    TechnicianDescription,
    TimezoneName,
)
from shared.kernel.events.parts import PartNumber
from shared.kernel.events.tickets import (
    WHOLE,
    CostBearer,
    LongText,
    RepairOutcome,
    ShortText,
    UsedPart,
)
from shared.kernel.lifecycle import TicketStatus


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


SERVICE_POINT_EXAMPLE: dict[str, Any] = {
    "id": "sp-hz-01",
    "name": "Hangzhou West outlet",
    "level": "service_point",
    "kind": "own_outlet",
    "parent_id": "rc-east",
    "region": "east",
    "postcodes": ["3100", "3110"],
    "address": "88 Wensan Road, Hangzhou",
}

TECHNICIAN_EXAMPLE: dict[str, Any] = {
    "id": "tech-zhang",
    "name": "Zhang Min",
    "service_point_id": "sp-hz-01",
    "skills": ["washing_machines", "dryers"],
    "working_hours": [
        {"weekday": day, "start": "08:30", "end": "17:30"}
        for day in ("mon", "tue", "wed", "thu", "fri")
    ],
    "timezone": "Asia/Shanghai",
}


class ServicePointCreate(ServicePointDescription):
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"examples": [SERVICE_POINT_EXAMPLE]}
    )

    id: NetworkId = Field(description="Chosen by the admin; unique across the network.")

    def description(self) -> ServicePointDescription:
        return ServicePointDescription(**self.model_dump(exclude={"id"}))


class ServicePointReplace(ServicePointDescription):
    """The member's full new description (PUT); ``level`` cannot change."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    **{k: v for k, v in SERVICE_POINT_EXAMPLE.items() if k != "id"},
                    "postcodes": ["3100", "3110", "3120"],
                    "reason": "now also covers Xihu district",
                }
            ]
        },
    )

    reason: ShortText | None = None

    def description(self) -> ServicePointDescription:
        return ServicePointDescription(**self.model_dump(exclude={"reason"}))


class TechnicianFields(TechnicianDescription):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: TimezoneName | None = Field(  # type: ignore[assignment]
        default=None,
        description="IANA name of the working hours' timezone; default: the "
        "`TICKETLINE_DISPATCH_DEFAULT_TIMEZONE` setting.",
    )

    def description(self, default_timezone: str) -> TechnicianDescription:
        data = self.model_dump(exclude={"id", "reason"})
        data["timezone"] = self.timezone or default_timezone
        return TechnicianDescription(**data)


class TechnicianCreate(TechnicianFields):
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"examples": [TECHNICIAN_EXAMPLE]}
    )

    id: NetworkId = Field(description="The technician's login subject.")


class TechnicianReplace(TechnicianFields):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    **{k: v for k, v in TECHNICIAN_EXAMPLE.items() if k != "id"},
                    "skills": ["washing_machines", "dryers", "dishwashers"],
                    "reason": "certified for dishwashers",
                }
            ]
        },
    )

    reason: ShortText | None = None


class ActivationRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "on leave until 2026-12-01"}]},
    )

    reason: LongText

    def command(self, active: bool) -> domain.SetTechnicianActive:
        return domain.SetTechnicianActive(active, self.reason)


class NetworkAccepted(BaseModel):
    id: str
    version: int
    events: list[str]


class ServicePointView(BaseModel):
    id: str
    name: str
    level: str
    kind: str | None
    parent_id: str | None
    region: str | None
    postcodes: list[str]
    address: str | None
    active: bool
    version: int
    registered_at: datetime
    updated_at: datetime


class ServicePointPage(BaseModel):
    items: list[ServicePointView]


class TechnicianView(BaseModel):
    id: str
    name: str
    service_point_id: str
    region: str | None
    skills: list[str]
    working_hours: list[Shift]
    timezone: str
    active: bool
    version: int
    registered_at: datetime
    updated_at: datetime


class TechnicianPage(BaseModel):
    items: list[TechnicianView]


def _dispatch_examples(schema: dict[str, Any]) -> None:
    """The next weekday, 09:00–11:00 in China: a window never in the past when sent as
    shown, in usual working hours (the OpenAPI document is made again each day:
    shared/http/openapi.py)."""
    day = datetime.now(UTC).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    start = datetime.combine(day, time(1), UTC)
    schema["examples"] = [
        {},
        {
            "technician_id": "tech-zhang",
            "appointment_start": start.isoformat().replace("+00:00", "Z"),
            "appointment_end": (start + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
            "reason": "customer asked for the technician who installed the unit",
        },
    ]


TOGETHER = "give appointment_start and appointment_end together"


class DispatchRequest(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_dispatch_examples)

    technician_id: NetworkId | None = Field(
        default=None, description="Name the technician; omit to let the service choose."
    )
    service_point_id: NetworkId | None = Field(
        default=None, description="Restrict the choice to this service point."
    )
    appointment_start: UtcTime | None = None
    appointment_end: UtcTime | None = Field(
        default=None,
        validate_default=True,  # checked against the start even when absent
        description="Give both ends or neither: without a window the appointment is the "
        "technician's next working hours.",
    )
    reason: LongText | None = Field(
        default=None, description="Required when the ticket was dispatched before."
    )

    @field_validator("appointment_end")
    @classmethod
    def _both_ends(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        if info.data.get("appointment_start") is not None and end is None:
            raise ValueError(TOGETHER)  # a start was given (or refused: its error names it)
        return end

    def command(self) -> domain.DispatchRequest:
        if self.appointment_start is None and self.appointment_end is not None:
            raise InvalidCommand("appointment_start", TOGETHER)  # the one missing
        window = None
        if self.appointment_start is not None and self.appointment_end is not None:
            window = (self.appointment_start, self.appointment_end)
        return domain.DispatchRequest(
            self.technician_id, self.service_point_id, window, self.reason
        )


class CandidateView(BaseModel):
    technician_id: str
    service_point_id: str
    open_assignments: int
    appointment_start: datetime
    appointment_end: datetime


class DispatchAccepted(BaseModel):
    ticket_id: str
    status: TicketStatus
    version: int
    region: str
    service_point_id: str
    technician_id: str
    appointment_start: datetime
    appointment_end: datetime
    reason: str
    redispatch: bool
    candidates: list[CandidateView] = Field(
        description="The ranked candidates when the service chose (empty when named)."
    )
    events: list[str]


class CandidatesView(BaseModel):
    ticket_id: str
    reason: str
    candidates: list[CandidateView]


class VisitRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"findings": "drum bearing worn, motor brushes burnt"},
                {"findings": "water inlet valve blocked; cleaned the filter"},
            ]
        },
    )

    arrived_at: UtcTime | None = Field(
        default=None,
        description="Default: now. A technician checking in late gives the time they arrived "
        "(not before the ticket was received, not in the future), e.g. "
        "`2026-11-03T01:20:00Z`.",
    )
    findings: LongText

    def command(self) -> domain.Visit:
        return domain.Visit(findings=self.findings, arrived_at=self.arrived_at)


class UsedPartRequest(UsedPart):
    # A part number as parts knows it (an old part expected back is returned under it).
    part_number: PartNumber  # type: ignore[assignment]
    quantity: Annotated[int, Strict(), Field(ge=1, le=100), WHOLE] = 1  # as the event's


class RepairRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "outcome": "replaced",
                    "parts_used": [
                        {
                            "part_number": "MOTOR-WM700",
                            "new_serial": "M-88812",
                            "old_serial": "M-10233",
                            "under_warranty": True,
                        }
                    ],
                    "labour_minutes": 75,
                    "notes": "Motor replaced; test wash OK.",
                }
            ]
        },
    )

    outcome: RepairOutcome
    parts_used: list[UsedPartRequest] = Field(default_factory=list, max_length=50)
    labour_minutes: Annotated[int, Strict(), Field(ge=0, le=10_000), WHOLE] = 0
    cost_borne_by: CostBearer | None = Field(
        default=None, description="Default: warranty unless the ticket is out of warranty."
    )
    cost_amount: StrictFloat = Field(
        default=0,
        ge=0,
        le=domain.MAX_REPAIR_COST,
        description="What the repair cost, in yuan (to the fen).",
    )
    notes: LongText | None = None

    @field_validator("cost_amount")
    @classmethod
    def _to_the_fen(cls, value: float) -> float:
        if (problem := domain.cost_problem(value)) is not None:
            raise ValueError(problem)
        return value

    def command(self) -> domain.RecordRepair:
        return domain.RecordRepair(
            outcome=self.outcome,
            parts_used=tuple(self.parts_used),
            labour_minutes=self.labour_minutes,
            cost_borne_by=self.cost_borne_by,
            cost_amount=self.cost_amount,
            notes=self.notes,
        )


class TicketAccepted(BaseModel):
    ticket_id: str
    status: TicketStatus
    version: int
    events: list[str]


class AssignmentItem(BaseModel):
    ticket_id: str
    ticket_number: str
    status: TicketStatus
    region: str
    urgency: str
    product_model: str
    product_line: str | None
    address_line: str
    service_point_id: str | None
    technician_id: str | None
    appointment_start: datetime | None
    appointment_end: datetime | None
    resolution_path: str | None
    deadline: datetime = Field(
        description="The nearest open deadline on the ticket's SLA clock (moved by pauses), "
        "else the resolution deadline recorded at diagnosis, else the response deadline."
    )
    response_due_at: datetime = Field(description="As recorded at receipt (no pause counted).")
    resolution_due_at: datetime | None = Field(description="As recorded at diagnosis.")
    reopened: bool
    escalated: bool
    escalation_cause: str | None
    escalation_level: str | None = None
    sla_breached: list[str]
    sla_paused: bool = False
    sla_pause_reason: str | None = None
    sla_warning_level: str | None = Field(
        default=None, description="The highest ladder step short of the breach recorded."
    )
    sla_warning_percent: float | None = None
    repeat_of_ticket_id: str | None


class AssignmentList(BaseModel):
    items: list[AssignmentItem]


class AssignmentPage(AssignmentList):
    """A page of a work list (the dispatch queue)."""

    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class DispatchHistoryEntry(BaseModel):
    stream_version: int
    occurred_at: datetime
    actor: dict[str, str]
    service_point_id: str
    technician_id: str
    appointment_start: datetime
    appointment_end: datetime
    reason: str
    redispatch: bool


class DispatchHistory(BaseModel):
    ticket_id: str
    items: list[DispatchHistoryEntry]

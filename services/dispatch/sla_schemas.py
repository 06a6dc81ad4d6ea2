"""HTTP bodies and views of the SLA terms, pauses, timeline and what-if (docs/sla.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from shared.http.params import UtcTime
from shared.kernel.events.network import Weekday
from shared.kernel.events.sla import (
    CalendarDescription,
    DefinableCalendarId,
    PauseReason,
    SlaPolicyDescription,
)
from shared.kernel.events.tickets import LongText, ShortText

WORKDAYS = ("mon", "tue", "wed", "thu", "fri")

CALENDAR_EXAMPLE: dict[str, Any] = {
    "name": "Hangzhou outlets",
    "timezone": "Asia/Shanghai",
    "hours": [
        *({"weekday": d, "start": "09:00", "end": "12:00"} for d in WORKDAYS),
        *({"weekday": d, "start": "13:00", "end": "18:00"} for d in WORKDAYS),
    ],
    "holidays": [{"day": "2027-10-01", "name": "National Day"}],
    "working_days": [{"day": "2027-09-26", "hours_of": "mon", "name": "make-up working day"}],
    "reason": "opening hours with a lunch break",
}

POLICY_EXAMPLE: dict[str, Any] = {
    "name": "Business hours at service points",
    "response": {"normal": {"hours": 8}, "urgent": {"hours": 2}, "critical": {"hours": 0.5}},
    "resolution": {"simple": {"hours": 4}, "general": {"hours": 24}, "complex": {"hours": 72}},
    "calendar_by_urgency": {"normal": "local", "urgent": "local", "critical": "24x7"},
    "region_calendars": {"east": "hz-outlets"},
    "service_point_calendars": {"sp-hz-01": "hz-outlets"},
    "ladder": [
        {"percent": 75, "level": "service_point"},
        {"percent": 100, "level": "regional_center"},
        {"percent": 150, "level": "headquarters"},
    ],
    "pause_reasons": ["waiting_for_parts", "customer_unavailable", "waiting_for_approval"],
    "pause_for_parts": True,
    "reason": "business hours for normal and urgent tickets",
}

ICS_EXAMPLE = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20271001\r\n"
    "DTEND;VALUE=DATE:20271008\r\nSUMMARY:National Day\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\n"
    "DTSTART;VALUE=DATE:20270926\r\nSUMMARY:补班 (working day)\r\nEND:VEVENT\r\n"
    "END:VCALENDAR\r\n"
)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CalendarRequest(CalendarDescription):
    """The calendar's full new description (a new version)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"examples": [CALENDAR_EXAMPLE]}
    )

    reason: ShortText | None = None

    def description(self) -> CalendarDescription:
        return CalendarDescription(**self.model_dump(exclude={"reason"}))


class PolicyRequest(SlaPolicyDescription):
    """The policy's full new description (a new version); omitted fields take the
    defaults shown in the schema."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"examples": [POLICY_EXAMPLE]}
    )

    reason: ShortText | None = None

    def description(self) -> SlaPolicyDescription:
        return SlaPolicyDescription(**self.model_dump(exclude={"reason"}))


class IcsImportRequest(Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"ics": ICS_EXAMPLE, "replace": False}]}
    )

    ics: str = Field(min_length=1, max_length=900_000, description="The .ics file's text.")
    replace: StrictBool = Field(
        default=False,
        description="Replace the calendar's holidays and adjusted working days instead of "
        "adding to them (a day the file names takes the file's word either way).",
    )
    hours_of: Weekday = Field(
        default=Weekday.mon, description="Whose hours an imported working day has."
    )


class TermsAccepted(BaseModel):
    id: str
    version: int
    events: list[str]


class HolidaysImported(TermsAccepted):
    holidays_imported: int
    working_days_imported: int
    skipped: list[str] = Field(description="Events that are not all-day dates.")


class TermsItem(BaseModel):
    id: str
    name: str
    version: int
    description: dict[str, Any]
    updated_at: datetime


class TermsPage(BaseModel):
    items: list[TermsItem]


class TermsVersion(BaseModel):
    id: str
    version: int
    description: dict[str, Any]
    defined_at: datetime
    actor: dict[str, str]


class PauseRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"reason": "customer_unavailable", "note": "away until Monday, asked to call"}
            ]
        },
    )

    reason: PauseReason = Field(description="One of the ticket's policy's pause reasons.")
    note: LongText | None = None


class ResumeRequest(Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "customer back home"}, {}]}
    )

    note: LongText | None = None


class ReevaluateRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "moved to the 2027 policy on request"}]},
    )

    reason: ShortText


class SlaPolicyRef(BaseModel):
    policy_id: str
    policy_version: int
    calendar_versions: dict[str, int]


class SlaStepView(BaseModel):
    percent: float
    level: str | None
    at: datetime | None = Field(description="When reached, or will be running on; null: paused.")
    reached: bool
    recorded: bool


class SlaDeadlineView(BaseModel):
    deadline: str
    status: str = Field(description="running, paused, met, met_late or breached.")
    calendar_id: str
    calendar_version: int
    target_minutes: float
    elapsed_minutes: float = Field(description="Business time on the clock, pauses excluded.")
    paused_minutes: float = Field(description="Business time the pauses kept off the clock.")
    remaining_minutes: float = Field(description="Negative when overdue.")
    started_at: datetime
    due_at: datetime | None = Field(description="Moved by every pause; null while paused.")
    capped: bool = Field(description="Beyond the horizon: due_at is the cap, not a deadline.")
    met_at: datetime | None
    steps: list[SlaStepView]


class SlaSegmentView(BaseModel):
    state: str = Field(description="running or paused")
    start: datetime
    end: datetime | None = Field(description="null: still so at `at`")
    minutes: float = Field(description="Wall-clock length up to its end (or `at`).")
    reason: str | None = None
    note: str | None = None
    requisition_id: str | None = None
    ended_by: str | None = Field(default=None, description="resumed, or repaired")
    paused_by: str | None = Field(default=None, description="role:subject")
    resumed_by: str | None = None


class SlaTimeline(BaseModel):
    ticket_id: str
    at: datetime
    as_of: datetime | None
    policy: SlaPolicyRef | None = Field(description="null: the built-in policy")
    paused: bool
    pause_reason: str | None
    paused_minutes: float = Field(description="Wall-clock time paused, in total.")
    segments: list[SlaSegmentView]
    deadlines: list[SlaDeadlineView]


class WhatIfRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "policy": {k: v for k, v in POLICY_EXAMPLE.items() if k != "reason"},
                    "calendars": {
                        "hz-outlets": {k: v for k, v in CALENDAR_EXAMPLE.items() if k != "reason"}
                    },
                    "received_from": "2026-01-01T00:00:00+08:00",
                    "received_to": "2027-01-01T00:00:00+08:00",
                }
            ]
        },
    )

    policy: PolicyRequest = Field(description="As `PUT /sla-policies/{id}` takes it.")
    calendars: dict[DefinableCalendarId, CalendarDescription] = Field(
        default_factory=dict,
        description="Calendars to try (by id); others the policy names are the latest versions.",
    )
    received_from: UtcTime
    received_to: UtcTime
    at: UtcTime | None = Field(default=None, description="The clocks' instant (now).")

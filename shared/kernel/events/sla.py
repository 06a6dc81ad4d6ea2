"""SLA terms and the SLA clock's ticket events (docs/sla.md).

Stream types ``calendar`` (``calendar:<id>``: the working hours of a region or service
point) and ``sla_policy`` (``sla_policy:<id>``: targets, which calendar applies, the
warning and escalation ladder, pause reasons). Each definition carries the full new
description, so one event says what the calendar or the policy looked like from then on;
its stream version is its version.

Ticket events (stream id = the ticket id): ``SlaPolicyApplied`` pins the policy and the
calendar versions a ticket's clock runs on; ``SlaPaused`` / ``SlaResumed`` stop and
restart it; ``SlaWarning`` records a step of the ladder other than the breach
(``SlaBreached`` in ``tickets.py``) once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StringConstraints,
)

from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.network import LocalTime, TimezoneName, Weekday
from shared.kernel.events.registry import upcaster
from shared.kernel.events.tickets import (
    CalendarDay,
    Channel,
    Complexity,
    LongText,
    RegionCode,
    ShortText,
    SlaDeadline,
    Urgency,
)
from shared.kernel.patterns import worded

# Ids fit ``sla_policy:<id>`` / ``calendar:<id>`` in 64 characters.
TermsId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(
            r"^[a-z0-9][a-z0-9_.-]{0,47}$",
            "an id: up to 48 lower-case letters, digits, _ . or -, starting with a letter or digit",
        ),
    ),
]
# A calendar choice: "24x7", "local" (the ticket's service point or region calendar, as
# the policy maps them) or a calendar id.
CalendarChoice = TermsId
ALWAYS_ID, LOCAL = "24x7", "local"


def _definable(calendar_id: str) -> str:
    if calendar_id in (ALWAYS_ID, LOCAL):
        raise ValueError(f"{calendar_id!r} is a built-in calendar choice, not a calendar to define")
    return calendar_id


# An id a calendar can be defined (or tried in a what-if) under: a policy naming `24x7` or
# `local` means the built-in choice, so a calendar under either id would never be used.
DefinableCalendarId = Annotated[TermsId, AfterValidator(_definable)]
PauseReason = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(
            r"^[a-z][a-z0-9_]{0,49}$",
            "a reason code: up to 50 lower-case letters, digits or _, starting with a letter",
        ),
    ),
]

_CALENDAR = "calendar"
_POLICY = "sla_policy"
_TICKET = "ticket"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkingHours(Frozen):
    """Working time on a weekday, local time of the calendar's timezone. An end at or
    before the start crosses midnight (``22:00``–``06:00``; ``00:00``–``00:00`` is the
    whole day): the part after midnight belongs to the next day."""

    weekday: Weekday
    start: LocalTime
    end: LocalTime


class Holiday(Frozen):
    day: CalendarDay
    name: ShortText | None = None


class AdjustedWorkingDay(Frozen):
    """A day worked although the week says otherwise (a weekend day declared a working
    day), with the hours of ``hours_of``."""

    day: CalendarDay
    hours_of: Weekday = Weekday.mon
    name: ShortText | None = None


class CalendarDescription(Frozen):
    name: ShortText
    timezone: TimezoneName
    hours: list[WorkingHours] = Field(min_length=1, max_length=100)
    holidays: list[Holiday] = Field(default_factory=list, max_length=2000)
    working_days: list[AdjustedWorkingDay] = Field(default_factory=list, max_length=500)


class CalendarDefined(
    CalendarDescription, EventPayload, event_type="CalendarDefined", stream_type=_CALENDAR
):
    """A calendar's full description from now on (its stream version is its version)."""

    reason: ShortText | None = None


class EscalationLevel(StrEnum):
    service_point = "service_point"
    regional_center = "regional_center"
    headquarters = "headquarters"


# A target's hours: a leap year at most.
MAX_TARGET_HOURS = 8784


class SlaTarget(Frozen):
    hours: StrictFloat = Field(gt=0, le=MAX_TARGET_HOURS)
    calendar: CalendarChoice | None = Field(
        default=None, description="Overrides the urgency's calendar for this target."
    )


class LadderStep(Frozen):
    percent: StrictFloat = Field(gt=0, le=1000, description="Of the target, business time elapsed.")
    level: EscalationLevel


def _default_response() -> dict[Urgency, SlaTarget]:
    return {
        Urgency.normal: SlaTarget(hours=24),
        Urgency.urgent: SlaTarget(hours=2),
        Urgency.critical: SlaTarget(hours=0.5),
    }


def _default_resolution() -> dict[Complexity, SlaTarget]:
    return {
        Complexity.simple: SlaTarget(hours=4),
        Complexity.general: SlaTarget(hours=24),
        Complexity.complex: SlaTarget(hours=72),
    }


def _default_calendars() -> dict[Urgency, CalendarChoice]:
    return {Urgency.normal: "local", Urgency.urgent: "local", Urgency.critical: "24x7"}


def _default_ladder() -> list[LadderStep]:
    return [
        LadderStep(percent=75, level=EscalationLevel.service_point),
        LadderStep(percent=100, level=EscalationLevel.regional_center),
        LadderStep(percent=150, level=EscalationLevel.headquarters),
    ]


DEFAULT_PAUSE_REASONS = ("waiting_for_parts", "customer_unavailable", "waiting_for_approval")


class SlaPolicyDescription(Frozen):
    name: ShortText
    response: dict[Urgency, SlaTarget] = Field(default_factory=_default_response)
    resolution: dict[Complexity, SlaTarget] = Field(default_factory=_default_resolution)
    calendar_by_urgency: dict[Urgency, CalendarChoice] = Field(
        default_factory=_default_calendars,
        description='"24x7", "local" (the mapped calendar of the ticket\'s service point or '
        "region) or a calendar id, per urgency (missing: local).",
    )
    calendar_by_channel: dict[Channel, CalendarChoice] = Field(
        default_factory=dict, description="Overrides the urgency's calendar for a channel."
    )
    region_calendars: dict[RegionCode, TermsId] = Field(default_factory=dict, max_length=500)
    service_point_calendars: dict[ShortText, TermsId] = Field(default_factory=dict, max_length=5000)
    default_calendar: TermsId | None = Field(
        default=None, description='"local" where nothing is mapped (none: 24x7).'
    )
    ladder: list[LadderStep] = Field(default_factory=_default_ladder, max_length=10)
    pause_reasons: list[PauseReason] = Field(
        default_factory=lambda: list(DEFAULT_PAUSE_REASONS), min_length=1, max_length=20
    )
    pause_for_parts: StrictBool = Field(
        default=True,
        description="Pause (waiting_for_parts) while a requisition's part comes from another "
        "location than the one that asked; resume when it is issued.",
    )


class SlaPolicyDefined(
    SlaPolicyDescription, EventPayload, event_type="SlaPolicyDefined", stream_type=_POLICY
):
    """A policy's full description from now on (its stream version is its version)."""

    reason: ShortText | None = None


class SlaPolicyApplied(
    EventPayload, event_type="SlaPolicyApplied", schema_version=2, stream_type=_TICKET
):
    """The policy version, and the versions of the calendars it names, the ticket's clock
    runs on: recorded at receipt, and again only when re-evaluated on purpose."""

    policy_id: TermsId
    policy_version: int = Field(ge=1)
    calendar_versions: dict[TermsId, int] = Field(default_factory=dict)
    reason: ShortText | None = None
    standing: list[SlaDeadline] = Field(
        default_factory=list,
        description=(
            "The deadlines already met or passed when the ticket was re-evaluated: they "
            "stand on the terms they ran on (a re-evaluation undoes no breach)."
        ),
    )


@upcaster("SlaPolicyApplied", 1)
def _every_deadline_moved(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 moved every deadline to the new terms."""
    return {**payload, "standing": []}


class SlaPaused(EventPayload, event_type="SlaPaused", stream_type=_TICKET):
    """Every running SLA clock of the ticket stops until ``SlaResumed``."""

    reason: PauseReason
    note: LongText | None = None
    requisition_id: ShortText | None = Field(
        default=None, description="Set when a requisition paused it automatically."
    )


class SlaResumed(EventPayload, event_type="SlaResumed", stream_type=_TICKET):
    """The clocks run again; the deadlines still open, moved by the paused business time."""

    note: LongText | None = None
    requisition_id: ShortText | None = None
    response_due_at: AwareDatetime | None = None
    resolution_due_at: AwareDatetime | None = None


class SlaWarning(EventPayload, event_type="SlaWarning", stream_type=_TICKET):
    """A step of the ladder other than the breach was reached: recorded once per deadline
    and step, for the level it notifies."""

    deadline: SlaDeadline
    percent: float = Field(gt=0)
    level: EscalationLevel
    region: RegionCode
    service_point_id: ShortText | None = None
    due_at: AwareDatetime
    reached_at: AwareDatetime
    detected_at: AwareDatetime

"""Ticket lifecycle events (DOMAIN.md, "The ticket lifecycle").

The stream id of every event here is the ticket id. Deadlines are computed when the
event is decided and stored in it, so a replay never depends on today's configuration.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)

from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.registry import upcaster
from shared.kernel.patterns import worded
from shared.kernel.personal import Personal

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A strict int's last annotation (after its limits, which the schema then states as
# minimum/maximum): a JSON integer is `4` or `4.0` (JSON Schema's "integer" takes both),
# never "4" or true.
WHOLE = BeforeValidator(_integral)
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
_PHONE_DIGITS = re.compile(r"\+?[0-9]{7,21}")


def _phone_digits(value: str) -> str:
    """Stored without separators so that lookups and duplicate checks compare digits; the
    stored form must itself be a valid phone (events are validated again when read)."""
    digits = value.replace(" ", "").replace("-", "")
    if not _PHONE_DIGITS.fullmatch(digits):
        raise ValueError("a phone number has 7 to 21 digits")
    return digits


Phone = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(
            r"^\+?[0-9][0-9 \-]{5,19}[0-9]$",
            "a phone number: 7 to 21 digits, spaces or dashes, starting and ending with a digit "
            "(a + before it allowed)",
        ),
    ),
    AfterValidator(_phone_digits),
]
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_day(value: object) -> object:
    # Pydantic also reads a number as Unix seconds and a midnight date-time as its day;
    # the API documents a calendar date as YYYY-MM-DD text, nothing else.
    if isinstance(value, str) and ISO_DAY.fullmatch(value):
        return value
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError("a calendar date as ISO 8601 text, YYYY-MM-DD")


CalendarDay = Annotated[date, BeforeValidator(_iso_day)]
# Lower case, refused otherwise (pydantic tests a pattern before a to_lower would fold it).
RegionCode = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(
            r"^[a-z0-9][a-z0-9_-]{0,31}$",
            "a region code: up to 32 lower-case letters, digits, _ or -, starting with a "
            "letter or digit",
        ),
    ),
]


class Urgency(StrEnum):
    normal = "normal"
    urgent = "urgent"
    critical = "critical"


class Channel(StrEnum):
    phone = "phone"
    web = "web"
    app = "app"
    messaging = "messaging"
    store = "store"


class WarrantyStatus(StrEnum):
    in_warranty = "in_warranty"
    out_of_warranty = "out_of_warranty"
    extended = "extended"


class FaultCategory(StrEnum):
    quality_defect = "quality_defect"
    installation = "installation"
    misuse = "misuse"
    wear = "wear"
    other = "other"


class Complexity(StrEnum):
    simple = "simple"
    general = "general"
    complex = "complex"


class ResolutionPath(StrEnum):
    remote_guidance = "remote_guidance"
    on_site = "on_site"
    replacement = "replacement"


class RepairOutcome(StrEnum):
    fixed = "fixed"
    replaced = "replaced"
    not_fixable = "not_fixable"
    customer_declined = "customer_declined"


# The outcomes that fixed the product (first-time fix, repeat repairs).
FIXED_OUTCOMES = frozenset({RepairOutcome.fixed, RepairOutcome.replaced})


class CostBearer(StrEnum):
    warranty = "warranty"
    customer = "customer"


class FollowUpChannel(StrEnum):
    call = "call"
    message = "message"


class Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Personal fields (docs/personal-data.md): stored sealed with the customer's data key.
class Customer(Part):
    name: Annotated[ShortText, Personal("name")]
    phone: Annotated[Phone, Personal("phone")]


Postcode = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)]


class Address(Part):
    line: Annotated[ShortText, Personal("hidden")]
    city: ShortText | None = None
    postcode: Annotated[Postcode, Personal("hidden")] | None = None
    region: RegionCode


class Product(Part):
    model: ShortText
    product_line: ShortText | None = None
    serial_number: ShortText | None = None
    purchase_date: CalendarDay


class Problem(Part):
    """In the customer's words: may say who they are or where they live."""

    symptom: Annotated[LongText, Personal()]
    frequency: Annotated[ShortText, Personal()]
    environment: Annotated[ShortText, Personal()]


class UsedPart(Part):
    part_number: ShortText
    quantity: int = Field(default=1, ge=1, le=100)
    new_serial: ShortText | None = None
    old_serial: ShortText | None = None
    under_warranty: StrictBool = False


_TICKET = "ticket"


class TicketReceived(
    EventPayload, event_type="TicketReceived", stream_type=_TICKET, schema_version=2
):
    """A customer's request, received. Version 2 names the customer (the data subject)
    whose data key seals the personal fields of the ticket's events."""

    data_subject: ClassVar[str | None] = "customer_id"

    ticket_number: str
    customer_id: str | None = Field(
        default=None,
        description="The customer (a UUID) whose data key seals this ticket's personal "
        "fields; assigned when the event is recorded. Null only in version 1 events.",
    )
    customer: Customer
    address: Address
    product: Product
    warranty_status: WarrantyStatus
    problem: Problem
    urgency: Urgency
    channel: Channel
    response_due_at: AwareDatetime
    possible_duplicate_of: str | None = None


class ContactDetailsCorrected(
    EventPayload, event_type="ContactDetailsCorrected", stream_type=_TICKET, schema_version=2
):
    customer: Customer | None = None
    address: Address | None = None
    reason: ShortText


class TicketDiagnosed(EventPayload, event_type="TicketDiagnosed", stream_type=_TICKET):
    category: FaultCategory
    complexity: Complexity
    resolution_path: ResolutionPath
    expected_parts: list[ShortText] = Field(default_factory=list)
    notes: LongText | None = None
    resolution_due_at: AwareDatetime


class TicketDispatched(EventPayload, event_type="TicketDispatched", stream_type=_TICKET):
    region: RegionCode
    service_point_id: ShortText
    technician_id: ShortText
    appointment_start: AwareDatetime
    appointment_end: AwareDatetime
    reason: LongText
    redispatch: StrictBool = False


class TicketVisited(EventPayload, event_type="TicketVisited", stream_type=_TICKET):
    """The technician's on-site check-in."""

    technician_id: ShortText
    arrived_at: AwareDatetime
    findings: LongText


class TicketRepaired(EventPayload, event_type="TicketRepaired", stream_type=_TICKET):
    outcome: RepairOutcome
    parts_used: list[UsedPart] = Field(default_factory=list)
    labour_minutes: int = Field(default=0, ge=0, le=10_000)
    cost_borne_by: CostBearer
    cost_amount: float = Field(default=0, ge=0)
    notes: LongText | None = None
    technician_id: ShortText | None = None


class FollowUpRecorded(
    EventPayload, event_type="FollowUpRecorded", stream_type=_TICKET, schema_version=2
):
    """The return visit: customer relations calls the customer back."""

    satisfaction_score: int = Field(ge=0, le=100)
    would_recommend: int = Field(ge=0, le=10)
    problem_solved: StrictBool
    comment: Annotated[LongText, Personal()] | None = None
    channel: FollowUpChannel


class TicketReopened(EventPayload, event_type="TicketReopened", stream_type=_TICKET):
    reason: LongText
    source: Annotated[str, StringConstraints(pattern=r"^(follow_up|complaint)$")]
    escalated: StrictBool = True


class TicketClosed(EventPayload, event_type="TicketClosed", stream_type=_TICKET):
    reason: ShortText = "satisfied"


# Events other services add to a ticket's stream. They are defined here, with the
# lifecycle, because the compliance view and the scorecards read them across services.


class SlaDeadline(StrEnum):
    response = "response"
    resolution = "resolution"


class SlaBreached(EventPayload, event_type="SlaBreached", stream_type=_TICKET):
    """Recorded once per deadline by the dispatch service's SLA clock."""

    deadline: SlaDeadline
    due_at: AwareDatetime
    detected_at: AwareDatetime
    overdue_minutes: int = Field(ge=0)


class EscalationCause(StrEnum):
    sla_breach = "sla_breach"
    reopened = "reopened"
    complaint = "complaint"


class TicketEscalated(EventPayload, event_type="TicketEscalated", stream_type=_TICKET):
    level: Annotated[str, StringConstraints(pattern=r"^(regional_center|headquarters)$")]
    cause: EscalationCause
    region: RegionCode
    reason: LongText


class RepeatRepairFlagged(EventPayload, event_type="RepeatRepairFlagged", stream_type=_TICKET):
    """The same serial came back within the repeat window of an earlier repair."""

    earlier_ticket_id: ShortText
    earlier_repaired_at: AwareDatetime
    serial_number: ShortText
    window_days: int = Field(ge=1)


class ComplaintFiled(
    EventPayload, event_type="ComplaintFiled", stream_type=_TICKET, schema_version=2
):
    complaint: Annotated[LongText, Personal()]
    channel: Channel
    public: StrictBool = Field(default=False, description="Public complaint or media exposure.")


class PartGrade(StrEnum):
    resellable = "resellable"
    demo = "demo"
    scrap = "scrap"


class OldPartReturned(EventPayload, event_type="OldPartReturned", stream_type=_TICKET):
    """A part replaced under warranty came back (recorded by the parts service)."""

    part_number: ShortText
    old_serial: ShortText | None = None
    quantity: int = Field(default=1, ge=1, le=100)
    location_id: ShortText
    service_point_id: ShortText | None = None
    due_at: AwareDatetime
    late: StrictBool = False
    grade: PartGrade | None = None


class OldPartReturnOverdue(EventPayload, event_type="OldPartReturnOverdue", stream_type=_TICKET):
    """Recorded once per expected return when its due date passes (parts service)."""

    part_number: ShortText
    old_serial: ShortText | None = None
    quantity: int = Field(default=1, ge=1, le=100)
    service_point_id: ShortText | None = None
    due_at: AwareDatetime
    detected_at: AwareDatetime


# Version 2 of the events with personal fields: the same fields, stored sealed (the
# published schema says so); TicketReceived also names its customer.


@upcaster("TicketReceived", 1)
def _received_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "customer_id": None}


for _event_type in ("ContactDetailsCorrected", "FollowUpRecorded", "ComplaintFiled"):
    upcaster(_event_type, 1)(lambda payload: payload)

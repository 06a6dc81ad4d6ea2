"""Ticket lifecycle events (DOMAIN.md, "The ticket lifecycle").

The stream id of every event here is the ticket id. Deadlines are computed when the
event is decided and stored in it, so a replay never depends on today's configuration.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.events.envelope import EventPayload

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 \-]{5,19}[0-9]$"),
    # Stored without separators so that lookups and duplicate checks compare digits.
    AfterValidator(lambda v: v.replace(" ", "").replace("-", "")),
]
RegionCode = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$"),
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


class CostBearer(StrEnum):
    warranty = "warranty"
    customer = "customer"


class FollowUpChannel(StrEnum):
    call = "call"
    message = "message"


class Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Customer(Part):
    name: ShortText
    phone: Phone


class Address(Part):
    line: ShortText
    city: ShortText | None = None
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = None
    region: RegionCode


class Product(Part):
    model: ShortText
    product_line: ShortText | None = None
    serial_number: ShortText | None = None
    purchase_date: date


class Problem(Part):
    symptom: LongText
    frequency: ShortText
    environment: ShortText


class UsedPart(Part):
    part_number: ShortText
    quantity: int = Field(default=1, ge=1, le=100)
    new_serial: ShortText | None = None
    old_serial: ShortText | None = None
    under_warranty: bool = False


_TICKET = "ticket"


class TicketReceived(EventPayload, event_type="TicketReceived", stream_type=_TICKET):
    ticket_number: str
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
    EventPayload, event_type="ContactDetailsCorrected", stream_type=_TICKET
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
    redispatch: bool = False


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


class FollowUpRecorded(EventPayload, event_type="FollowUpRecorded", stream_type=_TICKET):
    """The return visit: customer relations calls the customer back."""

    satisfaction_score: int = Field(ge=0, le=100)
    would_recommend: int = Field(ge=0, le=10)
    problem_solved: bool
    comment: LongText | None = None
    channel: FollowUpChannel


class TicketReopened(EventPayload, event_type="TicketReopened", stream_type=_TICKET):
    reason: LongText
    source: Annotated[str, StringConstraints(pattern=r"^(follow_up|complaint)$")]
    escalated: bool = True


class TicketClosed(EventPayload, event_type="TicketClosed", stream_type=_TICKET):
    reason: ShortText = "satisfied"

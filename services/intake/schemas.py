"""Intake's HTTP bodies (pydantic at the boundary; unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from services.intake import domain
from shared.kernel.events.tickets import (
    Address,
    Channel,
    Complexity,
    Customer,
    FaultCategory,
    LongText,
    Problem,
    Product,
    RepairOutcome,
    ResolutionPath,
    ShortText,
    Urgency,
    WarrantyStatus,
)
from shared.kernel.lifecycle import TicketStatus


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


RECEIVE_EXAMPLE: dict[str, Any] = {
    "customer": {"name": "Li Wei", "phone": "13812345678"},
    "address": {
        "line": "1 Garden Road",
        "city": "Hangzhou",
        "postcode": "310000",
        "region": "east",
    },
    "product": {
        "model": "WM-700",
        "product_line": "washing_machines",
        "serial_number": "SN-0001",
        "purchase_date": "2026-03-01",
    },
    "problem": {
        "symptom": "Drum does not spin; error E21 on the display",
        "frequency": "every wash since Monday",
        "environment": "kitchen, ground floor",
    },
    "urgency": "normal",
    "channel": "phone",
}


class ReceiveTicketRequest(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [RECEIVE_EXAMPLE]})

    customer: Customer
    address: Address
    product: Product
    problem: Problem
    urgency: Urgency
    channel: Channel
    warranty_status: WarrantyStatus | None = Field(
        default=None,
        description="Derived from the purchase date and the model's warranty months when "
        "omitted; when given it must agree on the receipt's day as it is somewhere (UTC-12 "
        "to UTC+14: the purchase date is a local day); an extended warranty is taken as "
        "stated.",
    )

    def command(self) -> domain.NewTicket:
        return domain.NewTicket(**{name: getattr(self, name) for name in type(self).model_fields})


class DiagnoseTicketRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "category": "quality_defect",
                    "complexity": "general",
                    "resolution_path": "on_site",
                    "expected_parts": ["MOTOR-WM700"],
                    "notes": "Motor hums but does not turn; likely motor or drive board.",
                },
                {
                    "category": "misuse",
                    "complexity": "simple",
                    "resolution_path": "remote_guidance",
                    "notes": "Child lock was on; customer guided to release it.",
                    "remote_outcome": "fixed",
                },
            ]
        },
    )

    category: FaultCategory
    complexity: Complexity
    resolution_path: ResolutionPath
    expected_parts: list[ShortText] = Field(default_factory=list, max_length=50)
    notes: LongText | None = Field(
        default=None,
        description="About the appliance and the work (stored in clear: do not quote the "
        "customer's name, phone or address).",
    )
    remote_outcome: RepairOutcome | None = Field(
        default=None,
        description="Only with remote guidance: the problem was solved on the call, so the "
        "ticket goes straight to repaired without a visit. Not `replaced` (a replacement "
        "names its parts: dispatch's POST /tickets/{id}/repair records it).",
    )

    def command(self) -> domain.Diagnosis:
        return domain.Diagnosis(
            category=self.category,
            complexity=self.complexity,
            resolution_path=self.resolution_path,
            expected_parts=tuple(self.expected_parts),
            notes=self.notes,
            remote_outcome=self.remote_outcome,
        )


# The customer-or-address rule is said in words, not as a schema ``anyOf``: generated
# clients make no model of a top-level one.
class CorrectContactRequest(Body):
    """The customer, the address, or both (neither: 422 naming `customer`), with a reason."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer": {"name": "Li Wei", "phone": "13987654321"},
                    "reason": "customer gave a new mobile number",
                }
            ],
        },
    )

    customer: Customer | None = None
    address: Address | None = None
    reason: ShortText = Field(
        description="Why (a staff note, stored in clear: do not quote the customer's name, "
        "phone or address; the new values go in `customer` and `address`, which are sealed)."
    )

    def command(self) -> domain.CorrectContactDetails:
        return domain.CorrectContactDetails(self.reason, self.customer, self.address)


class Deadlines(BaseModel):
    response_due_at: datetime
    resolution_due_at: datetime | None


class TicketDeadlines(Deadlines):
    """The deadlines: in lists, as recorded on the events (no pause counted); for one
    ticket, on its SLA clock (moved by pauses; the recorded one while paused). The full
    clock: the dispatch service's `GET /tickets/{id}/sla` (docs/sla.md)."""

    paused: bool | None = Field(default=None, description="One ticket: its clock is paused.")
    response_status: str | None = Field(
        default=None, description="One ticket: running, paused, met, met_late or breached."
    )
    resolution_status: str | None = None


DUPLICATE_HINT = (
    "At receipt, an open ticket of the same region with the same phone number (compared "
    "through its blind index) and the same serial number — the same model when no serial "
    "is given: a hint for the agent; the new ticket is received all the same. Null "
    "otherwise (another region's tickets are never named: whoever reads the ticket may "
    "see its region's tickets only)."
)


class TicketView(BaseModel):
    ticket_id: str
    ticket_number: str
    status: TicketStatus
    version: int
    region: str
    urgency: Urgency
    channel: Channel
    warranty_status: WarrantyStatus
    customer_id: str | None = Field(
        default=None,
        description="The customer (data subject): the id the privacy officer's subject-access "
        "and erasure requests name. Null for tickets received before customer ids.",
    )
    customer_name: str = Field(description="`[erased]` once the customer's data is erased.")
    customer_phone: str = Field(description="Masked (138****5678) unless the role may see it.")
    address_line: str
    product_model: str
    product_line: str | None
    serial_number: str | None
    category: FaultCategory | None
    complexity: Complexity | None
    resolution_path: ResolutionPath | None
    service_point_id: str | None
    technician_id: str | None
    appointment_start: datetime | None
    appointment_end: datetime | None
    repair_outcome: RepairOutcome | None
    satisfaction_score: int | None
    possible_duplicate_of: str | None = Field(description=DUPLICATE_HINT)
    reopen_count: int
    created_at: datetime
    responded_at: datetime | None
    diagnosed_at: datetime | None
    dispatched_at: datetime | None
    visited_at: datetime | None
    repaired_at: datetime | None
    followed_up_at: datetime | None
    closed_at: datetime | None
    sla: TicketDeadlines
    updated_at: datetime


class TicketPage(BaseModel):
    items: list[TicketView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class TicketAccepted(BaseModel):
    """What a command returns: the ticket's identity, version and deadlines now."""

    ticket_id: str
    ticket_number: str
    status: TicketStatus
    version: int
    sla: Deadlines
    possible_duplicate_of: str | None = Field(default=None, description=DUPLICATE_HINT)
    events: list[str] = Field(description="Ids of the events this command recorded.")


class HistoryEvent(BaseModel):
    position: int
    stream_version: int
    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: dict[str, str]
    service: str
    correlation_id: str
    causation_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    hash_ok: bool


class TicketHistory(BaseModel):
    ticket_id: str
    chain_valid: bool = Field(
        description="Every hash matches its event and links to the one before, and the "
        "last event is the ticket's current version (none cut from the end)."
    )
    problems: list[str] = Field(
        default_factory=list,
        description="What is wrong with the chain, in words (empty when `chain_valid`).",
    )
    events: list[HistoryEvent]


# --- customers (data subjects): docs/personal-data.md -------------------------------------


class ErasureRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"request_id": "DSR-2026-0042", "legal_basis": "PIPL art. 47"}]
        },
    )

    request_id: ShortText = Field(description="Your reference of the customer's request.")
    legal_basis: ShortText = Field(description="Why the data is erased (the law's article).")
    after_restore: StrictBool = Field(
        default=False,
        description="The customer was erased after the database backup that was restored "
        "(their `CustomerDataErased` is on the topic and in the audit exports): erase "
        "again although tickets of theirs are open in the restored database "
        "(docs/personal-data.md).",
    )


class ErasureView(BaseModel):
    customer_id: str
    request_id: str
    legal_basis: str
    source: str = Field(description="`request` (this API) or `retention` (the retention job).")
    erased_at: datetime
    tickets: list[str]


class LegalHoldRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"active": True, "reason": "court order 2026-117"}]},
    )

    active: StrictBool = Field(description="true places the hold, false releases it.")
    reason: ShortText


class LegalHoldView(BaseModel):
    customer_id: str
    legal_hold: bool
    version: int


class CustomerLookup(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"customer": {"name": "Li Wei", "phone": "13812345678"}}]},
    )

    customer: Customer


class CustomerFound(BaseModel):
    customer_id: str


class ReadEntry(BaseModel):
    id: int
    read_at: datetime
    customer_id: str
    actor_subject: str
    actor_role: str
    service: str
    endpoint: str
    ticket_id: str | None
    correlation_id: str | None


class ReadLogPage(BaseModel):
    items: list[ReadEntry]
    next_after: int | None = Field(description="Pass as `after` for the next page.")


class CustomerTicket(BaseModel):
    ticket_id: str
    ticket_number: str
    status: TicketStatus
    region: str
    product_model: str
    serial_number: str | None
    created_at: datetime
    closed_at: datetime | None
    customer_name: str
    customer_phone: str
    address_line: str


class CustomerEvent(BaseModel):
    stream_id: str
    position: int
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    actor: dict[str, str]
    personal: dict[str, Any] = Field(description="The event's personal fields, by path.")
    payload: dict[str, Any]


class SubjectAccess(BaseModel):
    """Everything held about the customer, and who has read it."""

    customer_id: str
    status: str = Field(description="`active` or `erased`.")
    created_at: datetime
    erased_at: datetime | None
    legal_hold: bool
    tickets: list[CustomerTicket]
    events: list[CustomerEvent] = Field(description="The events of the customer's tickets.")
    comments: list[CustomerEvent] = Field(description="Follow-up comments and complaints.")
    privacy_events: list[CustomerEvent] = Field(description="Erasure and legal holds.")
    reads: list[ReadEntry] = Field(description="Who saw this customer's data unmasked.")
    customers_sharing_a_phone: list[str] = Field(
        description="Other customer ids recorded with one of this customer's phones: the same "
        "person under another spelling of the name (`Sun Mei`, `SunMei`) is another customer, "
        "whom this answer and an erasure do not cover — look at each."
    )

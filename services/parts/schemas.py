"""Parts HTTP bodies (pydantic at the boundary; unknown fields are rejected)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictFloat

from services.parts import domain
from shared.kernel.events.parts import (
    LocationId,
    LocationLevel,
    PartNumber,
    Quantity,
    RequisitionKind,
)
from shared.kernel.events.tickets import WHOLE, LongText, PartGrade, RegionCode, ShortText


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class PartRequest(Body):
    model_config = _examples(
        {
            "name": "Drum motor WM-700",
            "fits_models": ["WM-700", "WM-710"],
            "unit_cost": 86.5,
            "return_required": True,
        }
    )

    name: ShortText
    fits_models: list[ShortText] = Field(
        default_factory=list, max_length=200, description="Empty: fits any model."
    )
    unit_cost: StrictFloat = Field(ge=0, le=10_000_000)
    return_required: StrictBool = Field(
        default=True, description="The old part must come back when replaced under warranty."
    )

    def spec(self) -> domain.PartSpec:
        return domain.PartSpec(
            self.name, tuple(self.fits_models), self.unit_cost, self.return_required
        )


class PartView(BaseModel):
    part_number: str
    name: str
    fits_models: list[str]
    unit_cost: float
    return_required: bool
    version: int
    updated_at: datetime


class LocationRequest(Body):
    model_config = _examples(
        {"name": "Hangzhou West service point", "level": "service_point", "parent_id": "RC-EAST"}
    )

    name: ShortText
    level: LocationLevel
    parent_id: LocationId | None = Field(
        default=None,
        description="Regional center → headquarters (optional); service point → its "
        "regional center; headquarters: none. Another level is 409 `parent_level`; an "
        "unregistered one 422.",
    )
    region: RegionCode | None = Field(
        default=None,
        description="A regional center names its own (422 without); a service point's is "
        "its regional center's (left out: that one; another is 409 `parent_region`); "
        "headquarters has none (it serves every region: 422).",
    )

    def command(self) -> domain.NewLocation:
        return domain.NewLocation(self.name, self.level, self.parent_id, self.region)


class LocationView(BaseModel):
    location_id: str
    name: str
    level: str
    parent_id: str | None
    region: str | None
    registered_at: datetime
    version: int = Field(
        default=1,
        description="Its `ETag`: a location is registered once and never changes, so 1.",
    )


class StockReceiptRequest(Body):
    model_config = _examples(
        {
            "location_id": "SP-HZ-01",
            "part_number": "MOTOR-WM700",
            "quantity": 4,
            "reference": "DN-7781",
        }
    )

    location_id: LocationId | None = Field(
        default=None,
        description="Defaults to the parts clerk's location; required (422) when the "
        "caller has none (an admin, a clerk without a location).",
    )
    part_number: PartNumber
    quantity: Quantity
    reference: ShortText | None = None

    def command(self) -> domain.StockReceipt:
        return domain.StockReceipt(
            self.part_number, self.quantity, self.location_id, self.reference
        )


class StockAdjustmentRequest(Body):
    model_config = _examples(
        {"location_id": "SP-HZ-01", "part_number": "MOTOR-WM700", "delta": -1, "reason": "count"}
    )

    location_id: LocationId
    part_number: PartNumber
    delta: Annotated[int, Strict(), Field(ge=-100_000, le=100_000), WHOLE]
    reason: ShortText

    def command(self) -> domain.StockCount:
        return domain.StockCount(self.location_id, self.part_number, self.delta, self.reason)


class StockView(BaseModel):
    location_id: str
    part_number: str
    on_hand: int = Field(description="Physically at the location, reserved units included.")
    reserved: int
    available: int = Field(description="on_hand − reserved")
    issued: int = Field(description="Handed to technicians, not yet used or returned.")
    version: int = Field(description="The stock stream's version.")


class RequisitionRequest(Body):
    model_config = _examples(
        {
            "ticket_id": "7d0f0c39-8a43-4f53-9d5e-3f1c2b1f9a10",
            "part_number": "MOTOR-WM700",
            "quantity": 1,
            "kind": "emergency",
        }
    )

    ticket_id: ShortText
    part_number: PartNumber
    quantity: Quantity = 1
    kind: RequisitionKind = RequisitionKind.planned
    location_id: LocationId | None = Field(
        default=None,
        description="The requesting location; defaults to the clerk's location or, for a "
        "technician, the ticket's service point; required (422) when there is none (an "
        "admin, a clerk without a location).",
    )
    technician_id: ShortText | None = Field(
        default=None,
        description="Defaults to the ticket's current technician (its latest dispatch). "
        "Given, it must be that technician: the parts service knows no other (422 "
        "`technician_id` otherwise, also while the ticket is not dispatched); a technician "
        "may name only itself (403 naming `technician_id`).",
    )
    notes: LongText | None = None

    def command(self) -> domain.PartsRequest:
        return domain.PartsRequest(
            ticket_id=self.ticket_id,
            part_number=self.part_number,
            quantity=self.quantity,
            kind=self.kind,
            location_id=self.location_id,
            technician_id=self.technician_id,
            notes=self.notes,
        )


class IssueRequest(Body):
    """All fields optional: an empty object ``{}`` issues to the ticket's technician."""

    model_config = _examples({}, {"technician_id": "tech-zhang"})

    technician_id: ShortText | None = Field(
        default=None,
        description="Defaults to the ticket's current technician (after a re-dispatch, the "
        "new one, not the one the requisition was raised for). Given, it must be that "
        "technician (422 `technician_id` otherwise).",
    )


class CancelRequest(Body):
    model_config = _examples({"reason": "customer declined the repair"})

    reason: ShortText


class ReturnUnusedRequest(Body):
    """All fields optional: an empty object ``{}`` returns everything outstanding."""

    model_config = _examples({}, {"quantity": 1, "reason": "second motor not needed"})

    quantity: Quantity | None = Field(default=None, description="Default: all outstanding.")
    reason: ShortText | None = None


class RequisitionView(BaseModel):
    requisition_id: str
    ticket_id: str
    kind: str
    part_number: str
    quantity: int
    requesting_location_id: str
    source_location_id: str | None
    technician_id: str | None
    status: str = Field(description="reserved | issued | consumed | returned | cancelled")
    issued_quantity: int
    consumed_quantity: int
    returned_quantity: int
    created_at: datetime
    updated_at: datetime
    version: int


class OldPartReturnRequest(Body):
    model_config = _examples(
        {
            "ticket_id": "7d0f0c39-8a43-4f53-9d5e-3f1c2b1f9a10",
            "part_number": "MOTOR-WM700",
            "old_serial": "M-10233",  # the repair example's old part
            "grade": "scrap",
        }
    )

    ticket_id: ShortText
    part_number: PartNumber
    old_serial: ShortText | None = None
    quantity: Quantity = 1
    grade: PartGrade | None = None
    location_id: LocationId | None = Field(
        default=None,
        description="Where it was handed in; defaults to the clerk's location; required "
        "(422) when the caller has none (an admin, a clerk without a location).",
    )

    def command(self) -> domain.HandedIn:
        return domain.HandedIn(
            ticket_id=self.ticket_id,
            part_number=self.part_number,
            old_serial=self.old_serial,
            quantity=self.quantity,
            grade=self.grade,
            location_id=self.location_id,
        )


class ReturnView(BaseModel):
    return_id: str
    ticket_id: str
    part_number: str
    old_serial: str | None
    quantity: int
    returned_quantity: int
    service_point_id: str | None
    region: str | None
    due_at: datetime
    status: str = Field(description="expected | overdue | returned")
    returned_at: datetime | None
    returned_location_id: str | None
    late: bool = Field(description="Some of it came back after its due date.")
    late_quantity: int = Field(
        description="How much of it came back late (the summary's `returned_late` adds these up)."
    )
    grade: str | None
    overdue_detected_at: datetime | None
    expected_at: datetime


class ReturnSummary(BaseModel):
    service_point_id: str | None
    expected: int = Field(description="Parts expected back.")
    returned: int
    returned_late: int
    outstanding: int
    overdue: int = Field(description="Outstanding and past their due date.")
    return_rate: float | None = Field(
        description="returned / expected, a fraction (0.6667), not a percentage as the "
        "compliance rates are; late returns count as returned (`returned_late` says how "
        "many: the compliance checklist's `parts_returned` fails on one); none while "
        "nothing is expected"
    )


class ReturnSummaryPage(BaseModel):
    items: list[ReturnSummary]


class ReplenishmentLine(BaseModel):
    part_number: str
    months_of_cover: float
    usage_months: list[str] = Field(description="The full months averaged, oldest first.")
    usage_by_month: dict[str, int]
    average_monthly_usage: float
    seasonal_month: int = Field(description="The calendar month planned for (now's month).")
    seasonal_coefficient: float
    on_hand: int
    reserved: int
    current_stock: int = Field(description="Available: on hand − reserved.")
    raw_quantity: float = Field(
        description="months_of_cover × average × coefficient − current_stock"
    )
    suggested_quantity: int = Field(description="Rounded up, never below 0.")


class ReplenishmentPlan(BaseModel):
    location_id: str
    computed_at: datetime
    formula: str
    items: list[ReplenishmentLine]

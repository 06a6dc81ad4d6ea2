"""Spare-parts events (DOMAIN.md, "Spare parts"), all on the ``ticketline.parts`` topic.

Streams (ids fit 64 characters):
- ``part:<part_number>`` (stream type ``part``): the catalogue entry.
- ``location:<location_id>`` (``location``): a stock location in the network tree.
- ``stock:<location_id>:<part_number>`` (``stock``): every movement of one part at one
  location; the stock level is the fold of this stream.
- ``req:<uuid>`` (``requisition``): one requisition for a ticket.
- ``tparts:<ticket_id>`` (``requisition``): the parts paperwork of one repaired ticket
  (expected old-part returns, usage that no stock covered).

Old-part returns themselves are ticket events (``OldPartReturned``,
``OldPartReturnOverdue`` in ``tickets.py``): the compliance view reads them there.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, Strict, StrictBool, StringConstraints

from shared.kernel.events.envelope import EventPayload
from shared.kernel.events.registry import upcaster
from shared.kernel.events.tickets import WHOLE, LongText, RegionCode, ShortText
from shared.kernel.patterns import worded

# Upper-case part numbers and short location ids keep ``stock:<loc>:<part>`` ≤ 64 chars.
PartNumber = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_upper=True,
        pattern=worded(
            r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$",
            "a part number: up to 32 letters, digits, . _ or -, starting with a letter or digit",
        ),
    ),
]
LocationId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=worded(
            r"^[A-Za-z0-9][A-Za-z0-9._-]{0,23}$",
            "a location id: up to 24 letters, digits, . _ or -, starting with a letter or digit",
        ),
    ),
]
# A JSON number, also in requests (pydantic would read `true` or "4" as one).
Quantity = Annotated[int, Strict(), Field(ge=1, le=100_000), WHOLE]

_PART = "part"
_LOCATION = "location"
_STOCK = "stock"
_REQUISITION = "requisition"


class LocationLevel(StrEnum):
    headquarters = "headquarters"
    regional_center = "regional_center"
    service_point = "service_point"


class RequisitionKind(StrEnum):
    planned = "planned"
    emergency = "emergency"


# --- catalogue -------------------------------------------------------------------------


class PartCatalogued(EventPayload, event_type="PartCatalogued", stream_type=_PART):
    part_number: PartNumber
    name: ShortText
    fits_models: list[ShortText] = Field(
        default_factory=list, description="Product models it fits; empty = any model."
    )
    unit_cost: float = Field(ge=0)
    return_required: StrictBool = Field(
        description="The old part must come back when replaced under warranty."
    )


class PartUpdated(EventPayload, event_type="PartUpdated", stream_type=_PART):
    """The catalogue entry's new attributes (all of them)."""

    part_number: PartNumber
    name: ShortText
    fits_models: list[ShortText] = Field(default_factory=list)
    unit_cost: float = Field(ge=0)
    return_required: StrictBool


# --- locations -------------------------------------------------------------------------


class LocationRegistered(EventPayload, event_type="LocationRegistered", stream_type=_LOCATION):
    location_id: LocationId
    name: ShortText
    level: LocationLevel
    parent_id: LocationId | None = Field(
        default=None, description="The next location up the tree (none for headquarters)."
    )
    region: RegionCode | None = None


# --- stock movements (stream per location and part) ------------------------------------


class StockMovement(EventPayload):
    location_id: LocationId
    part_number: PartNumber
    quantity: Quantity
    requisition_id: ShortText | None = None
    ticket_id: ShortText | None = None


class StockReceived(
    StockMovement, event_type="StockReceived", schema_version=2, stream_type=_STOCK
):
    """Parts arrived at the location (on hand +q), or — ``opening_balance`` — the stock
    counted there when Ticketline took over from the system it replaced (on hand +q, once
    per location and part, before any other movement)."""

    reference: ShortText | None = Field(default=None, description="Delivery note, order…")
    opening_balance: StrictBool = Field(
        default=False,
        description="The stock on hand carried over from the replaced system (not a delivery).",
    )


@upcaster("StockReceived", 1)
def _receipts_were_deliveries(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 knew only deliveries."""
    return {**payload, "opening_balance": False}


class StockReserved(StockMovement, event_type="StockReserved", stream_type=_STOCK):
    """Set aside for a requisition (reserved +q; on hand unchanged)."""


class StockReleased(StockMovement, event_type="StockReleased", stream_type=_STOCK):
    """A reservation given up (reserved −q)."""

    reason: ShortText


class StockIssued(StockMovement, event_type="StockIssued", stream_type=_STOCK):
    """Handed to the technician (on hand −q, reserved −q, issued +q)."""

    technician_id: ShortText


class StockConsumed(StockMovement, event_type="StockConsumed", stream_type=_STOCK):
    """Fitted in a repair: from the issued parts (issued −q) or, without a requisition,
    straight from the shelf (on hand −q). Replenishment averages these."""

    from_issued: StrictBool
    trigger_event_id: ShortText = Field(description="The TicketRepaired event it follows.")


class StockReturned(StockMovement, event_type="StockReturned", stream_type=_STOCK):
    """An issued part came back unused (issued −q, on hand +q)."""


Month = Annotated[
    str,
    StringConstraints(
        pattern=worded(r"^[0-9]{4}-(0[1-9]|1[0-2])$", "a month as YYYY-MM (2026-11)")
    ),
]


class UsageHistoryRecorded(EventPayload, event_type="UsageHistoryRecorded", stream_type=_STOCK):
    """How many units of the part the location used in one past calendar month, as the
    system Ticketline replaced recorded it (imported; no stock moves). Replenishment
    averages it with the consumption Ticketline records itself (``StockConsumed``)."""

    location_id: LocationId
    part_number: PartNumber
    month: Month = Field(description="Calendar month (UTC), YYYY-MM.")
    quantity: int = Field(ge=0, le=10_000_000)


class StockAdjusted(EventPayload, event_type="StockAdjusted", stream_type=_STOCK):
    """Stock count correction by an administrator (on hand ± delta)."""

    location_id: LocationId
    part_number: PartNumber
    delta: int = Field(ge=-100_000, le=100_000)
    reason: ShortText


# --- requisitions ----------------------------------------------------------------------


class RequisitionRaised(EventPayload, event_type="RequisitionRaised", stream_type=_REQUISITION):
    requisition_id: ShortText
    ticket_id: ShortText
    kind: RequisitionKind
    part_number: PartNumber
    quantity: Quantity
    requesting_location_id: LocationId
    technician_id: ShortText | None = None
    notes: LongText | None = None


class RequisitionReserved(EventPayload, event_type="RequisitionReserved", stream_type=_REQUISITION):
    source_location_id: LocationId
    quantity: Quantity


class RequisitionIssued(EventPayload, event_type="RequisitionIssued", stream_type=_REQUISITION):
    technician_id: ShortText
    quantity: Quantity


class RequisitionConsumed(EventPayload, event_type="RequisitionConsumed", stream_type=_REQUISITION):
    quantity: Quantity
    trigger_event_id: ShortText


class RequisitionReturned(EventPayload, event_type="RequisitionReturned", stream_type=_REQUISITION):
    """Issued parts brought back unused."""

    quantity: Quantity
    reason: ShortText | None = None


class RequisitionCancelled(
    EventPayload, event_type="RequisitionCancelled", stream_type=_REQUISITION
):
    reason: ShortText


# --- a repaired ticket's parts paperwork (stream tparts:<ticket_id>) --------------------


class OldPartReturnExpected(
    EventPayload, event_type="OldPartReturnExpected", stream_type=_REQUISITION
):
    """A part replaced under warranty must come back by ``due_at``."""

    ticket_id: ShortText
    part_number: ShortText
    old_serial: ShortText | None = None
    quantity: Quantity
    service_point_id: ShortText | None = None
    region: RegionCode | None = None
    due_at: AwareDatetime
    trigger_event_id: ShortText


class PartUsageUnmatched(EventPayload, event_type="PartUsageUnmatched", stream_type=_REQUISITION):
    """A repair used parts that neither an issued requisition nor the service point's
    stock covered: recorded for follow-up instead of driving stock negative."""

    ticket_id: ShortText
    part_number: ShortText
    quantity: Quantity
    service_point_id: ShortText | None = None
    trigger_event_id: ShortText

"""Customer (data subject) events: erasure and legal holds (docs/personal-data.md).

The stream id is ``customer-<customer id>``. These events hold no personal data: the
customer id names nobody once the customer's data key is destroyed.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from shared.kernel.events.envelope import EventPayload

_CUSTOMER = "customer"
Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def customer_stream_id(customer_id: str) -> str:
    return f"customer-{customer_id}"


class CustomerDataErased(EventPayload, event_type="CustomerDataErased", stream_type=_CUSTOMER):
    """The customer's data key was destroyed: their personal fields read ``[erased]`` in
    every event, view, export and replay. Recorded once."""

    customer_id: str
    request_id: Reference = Field(description="The erasure request's reference.")
    legal_basis: Reference
    source: Annotated[str, StringConstraints(pattern=r"^(request|retention)$")] = "request"
    tickets: list[str] = Field(default_factory=list, description="The customer's tickets.")


class LegalHoldPlaced(EventPayload, event_type="LegalHoldPlaced", stream_type=_CUSTOMER):
    """The customer's data must be kept (litigation, an authority's order): retention
    skips them and erasure is refused until the hold is released."""

    customer_id: str
    reason: Reference


class LegalHoldReleased(EventPayload, event_type="LegalHoldReleased", stream_type=_CUSTOMER):
    customer_id: str
    reason: Reference

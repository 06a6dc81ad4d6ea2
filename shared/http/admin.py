"""Operations over HTTP for administrators: the events projections parked.

``GET /admin/parked`` (admin) lists the events a projection or reactor could not apply
after its retries (poison events), with their errors. Resolving one is an operator's
decision taken with the CLI, next to the logs and the deployed fix:
``ticketline parked retry|skip ID`` (docs/operations.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from shared.app.platform import Platform
from shared.eventstore.applied import parked_list
from shared.http.app import get_platform
from shared.http.context import Principal, allow
from shared.http.params import ASCII_COUNT

router = APIRouter(tags=["operations"])

may_operate = allow("admin", scope="admin:operations")


class ParkedEventView(BaseModel):
    id: int = Field(description="What `ticketline parked retry|skip` takes.")
    projection: str = Field(description="The projection or reactor that parked it.")
    event_id: str
    position: int = Field(description="The event's global position.")
    stream_id: str
    stream_version: int
    event_type: str
    error: str = Field(description="The last error, with its type.")
    attempts: int
    status: Literal["parked", "retried", "skipped"]
    parked_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None


class ParkedEvents(BaseModel):
    parked: int = Field(description="How many are listed with status `parked`.")
    events: list[ParkedEventView]


@router.get(
    "/admin/parked",
    summary="Events projections parked (poison events), with their errors",
    description="While an event is parked, the later events of its stream wait behind it "
    "in that projection (never applied out of order); the projection's other streams go "
    "on. Resolve with `ticketline parked retry ID` (apply it again, e.g. after a fix) or "
    "`ticketline parked skip ID` (count it as applied without applying it).",
    response_model=ParkedEvents,
)
async def list_parked(
    status: Literal["parked", "retried", "skipped", "all"] = "parked",
    projection: str | None = Query(
        default=None, max_length=100, pattern="^[a-z][a-z0-9_]*$", description="One projection."
    ),
    limit: Annotated[int, Query(ge=1, le=1000), ASCII_COUNT] = 100,
    _principal: Principal = Depends(may_operate),
    platform: Platform = Depends(get_platform),
) -> ParkedEvents:
    rows = await platform.db.read(
        lambda c: parked_list(
            c, status=None if status == "all" else status, projection=projection, limit=limit
        )
    )
    views = [ParkedEventView(**row.__dict__) for row in rows]
    return ParkedEvents(parked=sum(v.status == "parked" for v in views), events=views)

"""Parts HTTP routes: thin — parse, call a command handler or a read model, shape.

Who may call what is the routes' dependencies (docs/access-control.md); the reach rule
(region, a technician's assigned tickets, a parts clerk's location) applies on top: outside it a
resource does not exist (404, filtered out of lists).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Row

from services.parts import commands, domain, read_models
from services.parts.read_models import RequisitionFilters, ReturnFilters, StockFilters
from services.parts.schemas import (
    CancelRequest,
    IssueRequest,
    LocationRequest,
    LocationView,
    OldPartReturnRequest,
    PartRequest,
    PartView,
    ReplenishmentLine,
    ReplenishmentPlan,
    RequisitionRequest,
    RequisitionView,
    ReturnSummary,
    ReturnSummaryPage,
    ReturnUnusedRequest,
    ReturnView,
    StockAdjustmentRequest,
    StockReceiptRequest,
    StockView,
)
from shared.app.executor import Outcome
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.commands import CommandCall, command_call
from shared.http.context import Principal, allow
from shared.http.headers import NEXT_PAGE_RESPONSE, etag, link_next
from shared.http.idempotency import CommandResponse
from shared.http.params import (
    ASCII_COUNT,
    LocationFilter,
    NetworkIdFilter,
    PartNumberFilter,
    TextFilter,
    keyset_cursor,
    ticket_id_text,
)
from shared.http.problems import PROBLEM_RESPONSES, problem_doc
from shared.kernel.errors import NotFound
from shared.kernel.events.parts import LocationLevel
from shared.kernel.numbers import rounded
from shared.kernel.parts import normalise_part_number
from shared.kernel.reach import Scope

SERVICE = "parts"
router = APIRouter(responses=PROBLEM_RESPONSES)

READERS = ("admin", "parts_clerk", "technician", "auditor", "dispatcher", "regional_center")
may_read = allow(*READERS, scope="parts:read")
Admin = Annotated[CommandCall, Depends(command_call(SERVICE, "admin", scope="parts:write"))]
Stockist = Annotated[
    CommandCall, Depends(command_call(SERVICE, "admin", "parts_clerk", scope="parts:write"))
]
Requester = Annotated[
    CommandCall,
    Depends(command_call(SERVICE, "admin", "parts_clerk", "technician", scope="parts:write")),
]
PART_NUMBER = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", description="e.g. MOTOR-WM700")
LOCATION_ID = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,23}$", description="e.g. SP-HZ-01")
# The 404 of a location outside the caller's reach (docs/parts.md, "Who may do what").
ELSEWHERE = (
    "`location_not_found`: the location is outside the caller's reach (a parts clerk acting "
    "for another location, a regional caller outside its region)"
)


def with_etag(view: PartView | LocationView | RequisitionView) -> JSONResponse:
    """A read of what commands take ``If-Match`` for: the view, its version as ETag."""
    return JSONResponse(view.model_dump(mode="json"), headers={"ETag": etag(view.version)})


# --- catalogue ----------------------------------------------------------------------------


def part_response(conn: Connection, outcome: Outcome[domain.PartEntry]) -> CommandResponse:
    number = outcome.after.part_number
    row = read_models.get_part(conn, number)
    assert row is not None
    view = PartView(**read_models.part_dict(row))
    status = 200 if outcome.before.spec is not None else 201
    return CommandResponse(status, view.model_dump(mode="json"), f"/parts/{number}")


@router.put(
    "/parts/{part_number}",
    response_model=PartView,
    tags=["catalogue"],
    summary="Catalogue a part or update its entry (events PartCatalogued / PartUpdated)",
    description="Part numbers are stored upper-case and compare case-insensitively. "
    "`If-Match` with the entry's version guards against overwriting a concurrent change. "
    "Unchanged attributes record nothing. 201 when the part is new, 200 otherwise.",
    responses={201: {"model": PartView, "description": "Catalogued: the part is new"}},
)
async def put_part(body: PartRequest, call: Admin, part_number: str = PART_NUMBER) -> JSONResponse:
    number, spec = normalise_part_number(part_number), body.spec()
    return await call.run(
        f"part:{number}",
        body,
        lambda c: part_response(c, commands.put_part(c, call.handling, number, spec)),
    )


@router.get("/parts", response_model=list[PartView], tags=["catalogue"], summary="The catalogue")
async def list_parts(
    model: TextFilter | None = Query(default=None, description="Parts fitting it."),
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> list[PartView]:
    parts = await platform.db.read(lambda c: read_models.list_parts(c, model))
    return [PartView(**p) for p in parts]


@router.get("/parts/{part_number}", response_model=PartView, tags=["catalogue"])
async def get_part(
    part_number: str = PART_NUMBER,
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    number = normalise_part_number(part_number)
    row = await platform.db.read(lambda c: read_models.get_part(c, number))
    if row is None:
        raise NotFound("part_not_found", f"no part {part_number}")
    view = PartView(**read_models.part_dict(row))
    return with_etag(view)


# --- locations ----------------------------------------------------------------------------


def location_response(conn: Connection, location_id: str, *, created: bool) -> CommandResponse:
    row = read_models.get_location(conn, location_id)
    assert row is not None
    view = LocationView(**row._mapping)
    location = f"/locations/{view.location_id}"
    return CommandResponse(201 if created else 200, view.model_dump(mode="json"), location)


@router.put(
    "/locations/{location_id}",
    status_code=201,
    response_model=LocationView,
    tags=["locations"],
    summary="Register a stock location in the network tree (event LocationRegistered)",
    description="Location ids compare case-insensitively (`SP-HZ-01` is `sp-hz-01`) and "
    "keep the spelling they were registered with; use the dispatch service point's id. "
    "The tree has three levels, as dispatch's network: a regional center's parent is "
    "headquarters (optional), a service point's is a regional center (409 `parent_level` "
    "otherwise; 422 `parent_id` for a parent that is not registered, or a service point's "
    "missing one); a regional center names its region, a service point is in its regional "
    "center's (409 `parent_region` for another `region`); headquarters has none. The same "
    "registration again (same spelling, same name and place) records nothing and answers "
    "200; any other for a registered id is 409 `location_already_registered`.",
    responses={200: {"model": LocationView, "description": "Registered so already"}},
)
async def register_location(
    body: LocationRequest, call: Admin, location_id: str = LOCATION_ID
) -> JSONResponse:
    request = body.command()

    def work(conn: Connection) -> CommandResponse:
        outcome = commands.register_location(conn, call.handling, location_id, request)
        return location_response(conn, location_id, created=bool(outcome.events))

    return await call.run(f"location:{location_id}", body, work)


@router.get("/locations", response_model=list[LocationView], tags=["locations"])
async def list_locations(
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> list[LocationView]:
    rows = await platform.db.read(lambda c: read_models.list_locations(c, principal.reach.region))
    return [LocationView(**r._mapping) for r in rows]


@router.get(
    "/locations/{location_id}",
    response_model=LocationView,
    tags=["locations"],
    summary="One stock location (where registering it answers `Location`)",
    responses={404: problem_doc("`location_not_found`, or a location of another region")},
)
async def get_location(
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
    location_id: str = LOCATION_ID,
) -> JSONResponse:
    row = await platform.db.read(lambda c: read_models.get_location(c, location_id))
    # The tree is every reader's within its region; headquarters serves every region.
    headquarters = row is not None and row.level == LocationLevel.headquarters
    if row is None or not (headquarters or principal.reach.allows_region(row.region)):
        raise NotFound("location_not_found", f"no location {location_id}")
    view = LocationView(**row._mapping)
    return with_etag(view)


# --- stock --------------------------------------------------------------------------------


def stock_response(outcome: Outcome[domain.StockLevel], status_code: int) -> CommandResponse:
    level = outcome.after
    view = StockView(
        location_id=level.location_id,
        part_number=level.part_number,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
        issued=level.issued,
        version=level.version,
    )
    return CommandResponse(status_code, view.model_dump(mode="json"))


@router.post(
    "/stock/receipts",
    status_code=201,
    response_model=StockView,
    tags=["stock"],
    responses={404: problem_doc(ELSEWHERE)},
    summary="Parts arrived at a location (event StockReceived)",
    description="`location_id` defaults to the parts clerk's location; a location that is "
    "not registered is 422 `location_id`; acting for a location outside the caller's reach "
    "(a parts clerk for another location, a regional caller outside its region) is 404 "
    "`location_not_found`.",
)
async def receive_stock(body: StockReceiptRequest, call: Stockist) -> JSONResponse:
    receipt = body.command()
    location = domain.acting_location(receipt.location_id, call.principal.reach.location)
    return await call.run(
        f"receipt:{location}",
        body,
        lambda c: stock_response(commands.receive_stock(c, call.handling, receipt), 201),
    )


@router.post(
    "/stock/adjustments",
    response_model=StockView,
    tags=["stock"],
    responses={404: problem_doc(ELSEWHERE)},
    summary="Correct a stock count (event StockAdjusted; never below what is reserved)",
)
async def adjust_stock(body: StockAdjustmentRequest, call: Admin) -> JSONResponse:
    count = body.command()
    return await call.run(
        f"adjust:{count.location_id}",
        body,
        lambda c: stock_response(commands.adjust_stock(c, call.handling, count), 200),
    )


def stock_view(row: Row[Any]) -> StockView:
    return StockView(
        location_id=row.location_id,
        part_number=row.part_number,
        on_hand=row.on_hand,
        reserved=row.reserved,
        available=row.on_hand - row.reserved,
        issued=row.issued,
        version=row.version,
    )


@router.get("/stock", response_model=list[StockView], tags=["stock"], summary="Stock levels")
async def list_stock(
    location: LocationFilter | None = None,
    part_number: PartNumberFilter | None = None,
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> list[StockView]:
    filters = StockFilters(
        location_id=location,
        part_number=normalise_part_number(part_number) if part_number else None,
        region=principal.reach.region,
        reach_location=principal.reach.location,
    )
    rows = await platform.db.read(lambda c: read_models.list_stock(c, filters))
    return [stock_view(r) for r in rows]


# --- requisitions -------------------------------------------------------------------------


def requisition_scope(row: Row[Any]) -> Scope:
    """Where a requisition row sits (``domain.requisition_place``; ``assignee``: its
    ticket's technician now, read_models.get_requisition)."""
    return domain.requisition_place(
        row.region, row.assignee, row.requesting_location_id, row.source_location_id
    )


def requisition_response(
    conn: Connection, requisition_id: str, status_code: int = 200
) -> CommandResponse:
    row = read_models.get_requisition(conn, requisition_id)
    assert row is not None
    view = RequisitionView(**row._mapping)
    return CommandResponse(
        status_code, view.model_dump(mode="json"), f"/requisitions/{view.requisition_id}"
    )


@router.post(
    "/requisitions",
    status_code=201,
    response_model=RequisitionView,
    tags=["requisitions"],
    responses={
        404: problem_doc(
            "Unknown ticket, or one outside the caller's reach (`ticket_not_found`); a "
            "requesting location outside it (`location_not_found`)"
        )
    },
    summary="Request parts for a ticket: reserve them at the nearest location holding them",
    description="Events RequisitionRaised, RequisitionReserved and StockReserved. The "
    "nearest location is the requesting service point, then its regional center, then "
    "headquarters. 409 `out_of_stock` when none holds the quantity; stock never goes "
    "negative, even under concurrent requisitions. The requisition is for the ticket's "
    "current technician: a `technician_id` naming another is 422 (403 when a technician "
    "names another technician than itself). Only between the ticket's diagnosis and its "
    "repair (or after a reopening): else 409 `no_repair_pending` (`ticket_closed` once "
    "closed).",
)
async def raise_requisition(body: RequisitionRequest, call: Requester) -> JSONResponse:
    request = body.command()
    return await call.run(
        "requisition",
        body,
        lambda c: requisition_response(
            c, commands.raise_requisition(c, call.handling, request), 201
        ),
    )


@router.post(
    "/requisitions/{requisition_id}/issue",
    response_model=RequisitionView,
    tags=["requisitions"],
    summary="Hand the reserved parts to the technician (RequisitionIssued, StockIssued)",
    description="To the ticket's current technician (after a re-dispatch, the new one); a "
    "`technician_id` naming another is 422. 409 `requisition_not_reserved` unless reserved, `ticket_closed` once its "
    "ticket is closed.",
)
async def issue_requisition(
    requisition_id: UUID, body: IssueRequest, call: Stockist
) -> JSONResponse:
    rid = str(requisition_id)
    return await call.run(
        f"issue:{rid}",
        body,
        lambda c: requisition_response(
            c, commands.issue(c, call.handling, rid, body.technician_id)
        ),
    )


@router.post(
    "/requisitions/{requisition_id}/cancel",
    response_model=RequisitionView,
    tags=["requisitions"],
    summary="Give up a reservation (RequisitionCancelled, StockReleased)",
)
async def cancel_requisition(
    requisition_id: UUID, body: CancelRequest, call: Requester
) -> JSONResponse:
    rid = str(requisition_id)
    return await call.run(
        f"cancel:{rid}",
        body,
        lambda c: requisition_response(c, commands.cancel(c, call.handling, rid, body.reason)),
    )


@router.post(
    "/requisitions/{requisition_id}/return",
    response_model=RequisitionView,
    tags=["requisitions"],
    summary="Bring issued parts back unused (RequisitionReturned, StockReturned)",
)
async def return_unused(
    requisition_id: UUID, body: ReturnUnusedRequest, call: Requester
) -> JSONResponse:
    rid = str(requisition_id)
    return await call.run(
        f"return:{rid}",
        body,
        lambda c: requisition_response(
            c, commands.return_unused(c, call.handling, rid, body.quantity, body.reason)
        ),
    )


@router.get("/requisitions/{requisition_id}", response_model=RequisitionView, tags=["requisitions"])
async def get_requisition(
    requisition_id: UUID,
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    row = await platform.db.read(lambda c: read_models.get_requisition(c, str(requisition_id)))
    if row is None or not principal.reach.allows(requisition_scope(row)):
        raise NotFound("requisition_not_found", f"no requisition {requisition_id}")
    view = RequisitionView(**row._mapping)
    return with_etag(view)


@router.get(
    "/requisitions",
    response_model=list[RequisitionView],
    tags=["requisitions"],
    summary="Requisitions (newest first), a page at a time",
    description='`limit` at a time; a `Link: <…>; rel="next"` header gives the next page.',
    responses=NEXT_PAGE_RESPONSE,
)
async def list_requisitions(
    request: Request,
    response: Response,
    ticket_id: UUID | None = None,
    location: LocationFilter | None = None,
    status: str | None = Query(
        default=None, pattern=r"^(reserved|issued|consumed|returned|cancelled)$"
    ),
    limit: Annotated[int, Query(ge=1, le=200), ASCII_COUNT] = 50,
    cursor: str | None = Depends(keyset_cursor(UUID)),
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> list[RequisitionView]:
    reach = principal.reach
    filters = RequisitionFilters(
        ticket_id=ticket_id_text(ticket_id),
        location_id=location,
        status=status,
        technician_id=reach.technician,
        region=reach.region,
        reach_location=reach.location,
    )
    rows, after = await platform.db.read(
        lambda c: read_models.list_requisitions(c, filters, limit, cursor)
    )
    link_next(request, response, after)
    return [RequisitionView(**r._mapping) for r in rows]


# --- old-part returns ---------------------------------------------------------------------


def return_response(conn: Connection, return_id: str) -> CommandResponse:
    row = read_models.get_return(conn, return_id)
    assert row is not None
    return CommandResponse(201, ReturnView(**row._mapping).model_dump(mode="json"))


@router.post(
    "/returns",
    status_code=201,
    response_model=ReturnView,
    tags=["returns"],
    responses={
        404: problem_doc(
            "Unknown ticket (`ticket_not_found`), or a location outside the caller's reach "
            "(`location_not_found`)"
        )
    },
    summary="An old part came back (event OldPartReturned on the ticket)",
    description="Settles the ticket's expected return of that part (the same old serial "
    "first); `late` when after its due date. Allowed after the ticket was closed. 409 "
    "`no_return_expected` when none is outstanding (for a clerk with a location: none of "
    "its service point); 409 `old_serial_not_expected` when `old_serial` is given and no "
    "outstanding return expects it.",
)
async def record_return(body: OldPartReturnRequest, call: Stockist) -> JSONResponse:
    handed_in = body.command()
    return await call.run(
        "old-part-return",
        body,
        lambda c: return_response(c, commands.record_old_part_return(c, call.handling, handed_in)),
    )


def return_filters(
    principal: Principal,
    service_point: str | None = None,
    status: str | None = None,
    ticket_id: str | None = None,
) -> ReturnFilters:
    """The filters asked for, within the caller's reach: its region, a technician's
    assigned tickets, a parts clerk's location."""
    reach = principal.reach
    return ReturnFilters(
        service_point_id=service_point,
        status=status,
        ticket_id=ticket_id,
        region=reach.region,
        technician_id=reach.technician,
        reach_location=reach.location,
    )


@router.get(
    "/returns",
    response_model=list[ReturnView],
    tags=["returns"],
    summary="Expected old-part returns and their state (earliest due first)",
    description='`limit` at a time; a `Link: <…>; rel="next"` header gives the next page.',
    responses=NEXT_PAGE_RESPONSE,
)
async def list_returns(
    request: Request,
    response: Response,
    service_point: NetworkIdFilter | None = None,
    status: str | None = Query(default=None, pattern=r"^(expected|overdue|returned)$"),
    ticket_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000), ASCII_COUNT] = 200,
    cursor: str | None = Depends(keyset_cursor(domain.check_return_id)),
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> list[ReturnView]:
    filters = return_filters(principal, service_point, status, ticket_id_text(ticket_id))
    rows, after = await platform.db.read(
        lambda c: read_models.list_returns(c, filters, limit, cursor)
    )
    link_next(request, response, after)
    return [ReturnView(**r._mapping) for r in rows]


def return_summary(row: Row[Any]) -> ReturnSummary:
    expected, returned = int(row.expected), int(row.returned)
    return ReturnSummary(
        service_point_id=row.service_point_id,
        expected=expected,
        returned=returned,
        returned_late=int(row.returned_late),
        outstanding=expected - returned,
        overdue=int(row.overdue),
        return_rate=rounded(returned / expected, 4) if expected else None,
    )


@router.get(
    "/returns/summary",
    response_model=ReturnSummaryPage,
    tags=["returns"],
    summary="Return compliance per service point: expected vs returned, late, overdue",
)
async def returns_summary(
    service_point: NetworkIdFilter | None = None,
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> ReturnSummaryPage:
    filters = return_filters(principal, service_point)
    rows = await platform.db.read(lambda c: read_models.returns_summary(c, filters))
    return ReturnSummaryPage(items=[return_summary(r) for r in rows])


# --- replenishment ------------------------------------------------------------------------

FORMULA = "months_of_cover × average_monthly_usage × seasonal_coefficient − current_stock"


def replenishment_line(
    order: domain.PlannedOrder, plan: domain.PlanReplenishment, month: int
) -> ReplenishmentLine:
    s = order.suggestion
    return ReplenishmentLine(
        part_number=order.part_number,
        months_of_cover=plan.months_of_cover,
        usage_months=list(plan.months),
        usage_by_month=order.usage_by_month,
        average_monthly_usage=float(s.average_monthly_usage),
        seasonal_month=month,
        seasonal_coefficient=plan.seasonal_coefficient,
        on_hand=order.on_hand,
        reserved=order.reserved,
        current_stock=order.current_stock,
        raw_quantity=float(s.raw) + 0.0,  # no "-0.0" when usage covers stock exactly
        suggested_quantity=s.suggested_quantity,
    )


@router.get(
    "/replenishment",
    response_model=ReplenishmentPlan,
    tags=["replenishment"],
    responses={
        404: problem_doc(
            "`location_not_found`: an unknown location, or one outside the caller's reach"
        )
    },
    summary="Suggested orders for a location, with the inputs that produced them",
    description=f"Per part: `{FORMULA}` (rounded up, never below 0). The average covers "
    "the last `usage_months` full calendar months of consumption (StockConsumed) at the "
    "location; the seasonal coefficient is the current calendar month's.",
)
async def replenishment(
    location: LocationFilter,
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> ReplenishmentPlan:
    settings, now = platform.settings.parts, platform.clock.now()
    months = tuple(domain.previous_months(now, settings.usage_months))

    def facts(
        conn: Connection,
    ) -> tuple[domain.Place | None, list[Row[Any]], dict[str, dict[str, int]]]:
        place = read_models.find_place(conn, location)
        if place is None:
            return None, [], {}
        stock = read_models.list_stock(conn, StockFilters(place.location_id))
        return place, stock, read_models.usage_by_part(conn, place.location_id, months)

    place, stock, usage = await platform.db.read(facts)
    if place is None or not domain.location_in_reach(principal.reach, place):
        raise NotFound("location_not_found", f"no location {location}")
    plan = domain.PlanReplenishment(
        months=months,
        months_of_cover=settings.months_of_cover,
        seasonal_coefficient=settings.seasonal_coefficient(now.month),
        stock={r.part_number: (r.on_hand, r.reserved) for r in stock},
        usage=usage,
    )
    items = [replenishment_line(o, plan, now.month) for o in domain.plan_replenishment(plan)]
    return ReplenishmentPlan(
        location_id=place.location_id, computed_at=now, formula=FORMULA, items=items
    )

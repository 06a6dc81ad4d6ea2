"""Parts HTTP routes: thin — check who may act where, call a handler or a read model."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from services.parts import domain, read_models
from services.parts.commands import PartsCommands, PartSpec
from services.parts.read_models import (
    RequisitionFilters,
    ReturnFilters,
    StockFilters,
)
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
from shared.app.platform import Platform
from shared.eventstore.ledger import ConcurrencyError
from shared.http.app import get_platform
from shared.http.context import Principal, allow, command_context, require_region
from shared.http.headers import etag, expected_version, idempotency_key
from shared.http.idempotency import Command, CommandResponse, idempotent_command
from shared.http.params import (
    LocationFilter,
    NetworkIdFilter,
    PartNumberFilter,
    TextFilter,
    ticket_id_text,
)
from shared.http.problems import PROBLEM_RESPONSES, ProblemError, problem_doc
from shared.kernel.errors import InvalidCommand, NotFound, RuleViolation
from shared.kernel.ticket import TicketStatus

SERVICE = "parts"
router = APIRouter(responses=PROBLEM_RESPONSES)

READERS = ("admin", "parts_clerk", "technician", "auditor", "dispatcher", "regional_center")
PART_NUMBER = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", description="e.g. MOTOR-WM700")
LOCATION_ID = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,23}$", description="e.g. SP-HZ-01")
# Optimistic-concurrency losers are retried this many times against the new state.
ATTEMPTS = 3


async def run_command(
    platform: Platform,
    principal: Principal,
    *,
    scope: str,
    key: str | None,
    body: BaseModel,
    command: Command,
    retry: bool = True,
) -> JSONResponse:
    """One transaction (idempotent with a key). A conflict on a stream the command did not
    pin with If-Match is retried: the decision is taken again on the new state."""
    for attempt in range(ATTEMPTS):
        try:
            return await idempotent_command(
                platform, principal, scope=scope, key=key, body=body, command=command
            )
        except ConcurrencyError:
            if not retry or attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, "forbidden", "Outside your location", detail)


def clerk_location(principal: Principal, given: str | None) -> str | None:
    """A parts clerk acts for their own location only."""
    if principal.role != "parts_clerk":
        return given
    if principal.location is None:
        raise forbidden("a parts clerk needs a location (X-Actor-Location)")
    if given is not None and given != principal.location:
        raise forbidden(f"a parts clerk of {principal.location} may not act for {given}")
    return principal.location


def technician_of(principal: Principal) -> str | None:
    """A technician reaches only the tickets assigned to them (docs/access-control.md)."""
    return principal.subject if principal.role == "technician" else None


def require_given(value: str | None, field: str) -> str:
    if value is None:
        raise InvalidCommand(field, f"{field} is required for this role")
    return value


# --- catalogue ----------------------------------------------------------------------------


@router.put(
    "/parts/{part_number}",
    response_model=PartView,
    tags=["catalogue"],
    summary="Catalogue a part or update its entry (events PartCatalogued / PartUpdated)",
    description="Part numbers are stored upper-case. `If-Match` with the entry's version "
    "guards against overwriting a concurrent change. Unchanged attributes record nothing.",
)
async def put_part(
    body: PartRequest,
    request: Request,
    part_number: str = PART_NUMBER,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    number = part_number.upper()
    context = command_context(request, principal.actor, SERVICE)
    spec = PartSpec(body.name, tuple(body.fits_models), body.unit_cost, body.return_required)

    async def run(conn: AsyncConnection) -> CommandResponse:
        existed = await read_models.get_part(conn, number) is not None
        await PartsCommands(platform).put_part(conn, number, spec, context, version)
        view = PartView(**read_models.part_dict(await read_models.get_part(conn, number)))
        return CommandResponse(
            200 if existed else 201, view.model_dump(mode="json"), f"/parts/{number}"
        )

    return await run_command(
        platform,
        principal,
        scope=f"{SERVICE}:part:{number}",
        key=key,
        body=body,
        command=run,
        retry=version is None,
    )


@router.get("/parts", response_model=list[PartView], tags=["catalogue"], summary="The catalogue")
async def list_parts(
    model: TextFilter | None = Query(default=None, description="Parts fitting it."),
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> list[PartView]:
    async with platform.db.reading() as conn:
        return [PartView(**p) for p in await read_models.list_parts(conn, model)]


@router.get("/parts/{part_number}", response_model=PartView, tags=["catalogue"])
async def get_part(
    part_number: str = PART_NUMBER,
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    async with platform.db.reading() as conn:
        row = await read_models.get_part(conn, part_number.upper())
    if row is None:
        raise NotFound("part_not_found", f"no part {part_number}")
    view = PartView(**read_models.part_dict(row))
    return JSONResponse(view.model_dump(mode="json"), headers={"ETag": etag(view.version)})


# --- locations ----------------------------------------------------------------------------


@router.put(
    "/locations/{location_id}",
    status_code=201,
    response_model=LocationView,
    tags=["locations"],
    summary="Register a stock location in the network tree (event LocationRegistered)",
)
async def register_location(
    body: LocationRequest,
    request: Request,
    location_id: str = LOCATION_ID,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)

    async def run(conn: AsyncConnection) -> CommandResponse:
        await PartsCommands(platform).register_location(
            conn, location_id, body.name, body.level, body.parent_id, body.region, context
        )
        row = await read_models.get_location(conn, location_id)
        view = LocationView(**row._mapping)
        return CommandResponse(201, view.model_dump(mode="json"), f"/locations/{location_id}")

    return await run_command(
        platform,
        principal,
        scope=f"{SERVICE}:location:{location_id}",
        key=key,
        body=body,
        command=run,
    )


@router.get("/locations", response_model=list[LocationView], tags=["locations"])
async def list_locations(
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> list[LocationView]:
    async with platform.db.reading() as conn:
        rows = await read_models.list_locations(conn, principal.region)
    return [LocationView(**r._mapping) for r in rows]


# --- stock --------------------------------------------------------------------------------


def stock_view(level: domain.StockLevel) -> StockView:
    return StockView(
        location_id=level.location_id,
        part_number=level.part_number,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
        issued=level.issued,
        version=level.version,
    )


@router.post(
    "/stock/receipts",
    status_code=201,
    response_model=StockView,
    tags=["stock"],
    summary="Parts arrived at a location (event StockReceived)",
)
async def receive_stock(
    body: StockReceiptRequest,
    request: Request,
    principal: Principal = Depends(allow("admin", "parts_clerk")),
    key: str | None = Depends(idempotency_key),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    location = require_given(clerk_location(principal, body.location_id), "location_id")
    context = command_context(request, principal.actor, SERVICE)

    async def run(conn: AsyncConnection) -> CommandResponse:
        level = await PartsCommands(platform).receive_stock(
            conn, location, body.part_number, body.quantity, body.reference, context
        )
        return CommandResponse(201, stock_view(level).model_dump(mode="json"))

    return await run_command(
        platform,
        principal,
        scope=f"{SERVICE}:receipt:{location}",
        key=key,
        body=body,
        command=run,
    )


@router.post(
    "/stock/adjustments",
    response_model=StockView,
    tags=["stock"],
    summary="Correct a stock count (event StockAdjusted; never below what is reserved)",
)
async def adjust_stock(
    body: StockAdjustmentRequest,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)

    async def run(conn: AsyncConnection) -> CommandResponse:
        level = await PartsCommands(platform).adjust_stock(
            conn, body.location_id, body.part_number, body.delta, body.reason, context, version
        )
        return CommandResponse(200, stock_view(level).model_dump(mode="json"))

    return await run_command(
        platform,
        principal,
        scope=f"{SERVICE}:adjust:{body.location_id}",
        key=key,
        body=body,
        command=run,
        retry=version is None,
    )


@router.get("/stock", response_model=list[StockView], tags=["stock"], summary="Stock levels")
async def list_stock(
    location: LocationFilter | None = None,
    part_number: PartNumberFilter | None = None,
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> list[StockView]:
    filters = StockFilters(
        location_id=location,
        part_number=part_number,
        region=principal.region,
    )
    async with platform.db.reading() as conn:
        rows = await read_models.list_stock(conn, filters)
    return [
        StockView(
            location_id=r.location_id,
            part_number=r.part_number,
            on_hand=r.on_hand,
            reserved=r.reserved,
            available=r.on_hand - r.reserved,
            issued=r.issued,
            version=r.version,
        )
        for r in rows
    ]


# --- requisitions -------------------------------------------------------------------------


def requisition_response(row: Any, status_code: int = 200) -> CommandResponse:
    view = RequisitionView(**row._mapping)
    return CommandResponse(
        status_code, view.model_dump(mode="json"), f"/requisitions/{view.requisition_id}"
    )


@router.post(
    "/requisitions",
    status_code=201,
    response_model=RequisitionView,
    tags=["requisitions"],
    responses={404: problem_doc("Unknown ticket, or outside the caller's reach")},
    summary="Request parts for a ticket: reserve them at the nearest location holding them",
    description="Events RequisitionRaised, RequisitionReserved and StockReserved. The "
    "nearest location is the requesting service point, then its regional center, then "
    "headquarters. 409 `out_of_stock` when none holds the quantity; stock never goes "
    "negative, even under concurrent requisitions.",
)
async def raise_requisition(
    body: RequisitionRequest,
    request: Request,
    principal: Principal = Depends(allow("admin", "parts_clerk", "technician")),
    key: str | None = Depends(idempotency_key),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)
    requisition_id = str(uuid.uuid4())

    async def run(conn: AsyncConnection) -> CommandResponse:
        ticket = await read_models.get_ticket(conn, body.ticket_id)
        if ticket is None or (
            principal.role == "technician" and ticket.technician_id != principal.subject
        ):
            raise NotFound("ticket_not_found", f"no ticket {body.ticket_id}")
        require_region(principal, ticket.region, "ticket", body.ticket_id)
        if ticket.status == TicketStatus.closed.value:
            raise RuleViolation("ticket_closed", "parts cannot be requested for a closed ticket")
        location = clerk_location(principal, body.location_id)
        location = require_given(location or ticket.service_point_id, "location_id")
        command = domain.RaiseRequisition(
            ticket_id=body.ticket_id,
            kind=body.kind,
            part_number=body.part_number,
            quantity=body.quantity,
            requesting_location_id=location,
            technician_id=body.technician_id or ticket.technician_id,
            notes=body.notes,
        )
        await PartsCommands(platform).raise_requisition(
            conn, requisition_id, command, ticket, context
        )
        return requisition_response(await read_models.get_requisition(conn, requisition_id), 201)

    return await run_command(
        platform,
        principal,
        scope=f"{SERVICE}:requisition",
        key=key,
        body=body,
        command=run,
    )


async def _requisition_command(
    platform: Platform,
    principal: Principal,
    requisition_id: UUID,
    version: int | None,
    act: Callable[[PartsCommands, AsyncConnection, domain.RequisitionState], Awaitable[Any]],
    *,
    scope: str,
    key: str | None,
    body: BaseModel,
    technician_may: bool,
) -> JSONResponse:
    rid = str(requisition_id)

    async def run(conn: AsyncConnection) -> CommandResponse:
        commands = PartsCommands(platform)
        req = await commands.load_requisition(conn, rid, version)
        assert req.raised is not None
        if principal.role == "technician" and (
            not technician_may or req.technician_id != principal.subject
        ):
            raise NotFound("requisition_not_found", f"no requisition {rid}")
        if principal.role == "parts_clerk" and principal.location not in {
            req.raised.requesting_location_id,
            req.source_location_id,
        }:
            raise forbidden(f"requisition {rid} is not for {principal.location}")
        await act(commands, conn, req)
        return requisition_response(await read_models.get_requisition(conn, rid))

    return await run_command(
        platform,
        principal,
        scope=f"{SERVICE}:{scope}:{rid}",
        key=key,
        body=body,
        command=run,
        retry=version is None,
    )


@router.post(
    "/requisitions/{requisition_id}/issue",
    response_model=RequisitionView,
    tags=["requisitions"],
    summary="Hand the reserved parts to the technician (RequisitionIssued, StockIssued)",
)
async def issue_requisition(
    requisition_id: UUID,
    body: IssueRequest,
    request: Request,
    principal: Principal = Depends(allow("admin", "parts_clerk")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)

    async def act(c: PartsCommands, conn: AsyncConnection, req: domain.RequisitionState) -> Any:
        technician = require_given(body.technician_id or req.technician_id, "technician_id")
        return await c.issue(conn, req, technician, context)

    return await _requisition_command(
        platform, principal, requisition_id, version, act,
        scope="issue", key=key, body=body, technician_may=False,
    )  # fmt: skip


@router.post(
    "/requisitions/{requisition_id}/cancel",
    response_model=RequisitionView,
    tags=["requisitions"],
    summary="Give up a reservation (RequisitionCancelled, StockReleased)",
)
async def cancel_requisition(
    requisition_id: UUID,
    body: CancelRequest,
    request: Request,
    principal: Principal = Depends(allow("admin", "parts_clerk", "technician")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)

    async def act(c: PartsCommands, conn: AsyncConnection, req: domain.RequisitionState) -> Any:
        return await c.cancel(conn, req, body.reason, context)

    return await _requisition_command(
        platform, principal, requisition_id, version, act,
        scope="cancel", key=key, body=body, technician_may=True,
    )  # fmt: skip


@router.post(
    "/requisitions/{requisition_id}/return",
    response_model=RequisitionView,
    tags=["requisitions"],
    summary="Bring issued parts back unused (RequisitionReturned, StockReturned)",
)
async def return_unused(
    requisition_id: UUID,
    body: ReturnUnusedRequest,
    request: Request,
    principal: Principal = Depends(allow("admin", "parts_clerk", "technician")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)

    async def act(c: PartsCommands, conn: AsyncConnection, req: domain.RequisitionState) -> Any:
        return await c.return_unused(conn, req, body.quantity, body.reason, context)

    return await _requisition_command(
        platform, principal, requisition_id, version, act,
        scope="return", key=key, body=body, technician_may=True,
    )  # fmt: skip


@router.get("/requisitions/{requisition_id}", response_model=RequisitionView, tags=["requisitions"])
async def get_requisition(
    requisition_id: UUID,
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    async with platform.db.reading() as conn:
        row = await read_models.get_requisition(conn, str(requisition_id))
        location = await read_models.get_location(conn, row.requesting_location_id) if row else None
    if row is None or (principal.role == "technician" and row.technician_id != principal.subject):
        raise NotFound("requisition_not_found", f"no requisition {requisition_id}")
    require_region(
        principal, location.region if location else None, "requisition", row.requisition_id
    )
    view = RequisitionView(**row._mapping)
    return JSONResponse(view.model_dump(mode="json"), headers={"ETag": etag(view.version)})


@router.get("/requisitions", response_model=list[RequisitionView], tags=["requisitions"])
async def list_requisitions(
    ticket_id: UUID | None = None,
    location: LocationFilter | None = None,
    status: str | None = Query(
        default=None, pattern=r"^(reserved|issued|consumed|returned|cancelled)$"
    ),
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> list[RequisitionView]:
    filters = RequisitionFilters(
        ticket_id=ticket_id_text(ticket_id),
        location_id=location,
        status=status,
        technician_id=technician_of(principal),
        region=principal.region,
    )
    async with platform.db.reading() as conn:
        rows = await read_models.list_requisitions(conn, filters, limit)
    return [RequisitionView(**r._mapping) for r in rows]


# --- old-part returns ---------------------------------------------------------------------


@router.post(
    "/returns",
    status_code=201,
    response_model=ReturnView,
    tags=["returns"],
    responses={404: problem_doc("Unknown ticket")},
    summary="An old part came back (event OldPartReturned on the ticket)",
    description="Settles the ticket's expected return of that part (the same old serial "
    "first); `late` when after its due date. Allowed after the ticket was closed. 409 "
    "`no_return_expected` when none is outstanding.",
)
async def record_return(
    body: OldPartReturnRequest,
    request: Request,
    principal: Principal = Depends(allow("admin", "parts_clerk")),
    key: str | None = Depends(idempotency_key),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    location = require_given(clerk_location(principal, body.location_id), "location_id")
    context = command_context(request, principal.actor, SERVICE)

    async def run(conn: AsyncConnection) -> CommandResponse:
        _, return_id = await PartsCommands(platform).record_old_part_return(
            conn,
            body.ticket_id,
            body.part_number,
            body.old_serial,
            body.quantity,
            body.grade,
            location,
            context,
        )
        rows = await read_models.list_returns(conn, ReturnFilters(ticket_id=body.ticket_id), 500)
        row = next(r for r in rows if r.return_id == return_id)
        return CommandResponse(201, ReturnView(**row._mapping).model_dump(mode="json"))

    return await run_command(
        platform,
        principal,
        scope=f"{SERVICE}:old-part-return",
        key=key,
        body=body,
        command=run,
    )


@router.get(
    "/returns",
    response_model=list[ReturnView],
    tags=["returns"],
    summary="Expected old-part returns and their state (earliest due first)",
)
async def list_returns(
    service_point: NetworkIdFilter | None = None,
    status: str | None = Query(default=None, pattern=r"^(expected|overdue|returned)$"),
    ticket_id: UUID | None = None,
    limit: int = Query(default=200, ge=1, le=1000),
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> list[ReturnView]:
    filters = ReturnFilters(
        service_point, status, ticket_id_text(ticket_id), principal.region, technician_of(principal)
    )
    async with platform.db.reading() as conn:
        rows = await read_models.list_returns(conn, filters, limit)
    return [ReturnView(**r._mapping) for r in rows]


@router.get(
    "/returns/summary",
    response_model=ReturnSummaryPage,
    tags=["returns"],
    summary="Return compliance per service point: expected vs returned, late, overdue",
)
async def returns_summary(
    service_point: NetworkIdFilter | None = None,
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> ReturnSummaryPage:
    filters = ReturnFilters(
        service_point_id=service_point,
        region=principal.region,
        technician_id=technician_of(principal),
    )
    async with platform.db.reading() as conn:
        rows = await read_models.returns_summary(conn, filters)
    items = [
        ReturnSummary(
            service_point_id=r.service_point_id,
            expected=int(r.expected),
            returned=int(r.returned),
            returned_late=int(r.returned_late),
            outstanding=int(r.expected) - int(r.returned),
            overdue=int(r.overdue),
            return_rate=round(int(r.returned) / int(r.expected), 4) if r.expected else None,
        )
        for r in rows
    ]
    return ReturnSummaryPage(items=items)


# --- replenishment ------------------------------------------------------------------------

FORMULA = "months_of_cover × average_monthly_usage × seasonal_coefficient − current_stock"


@router.get(
    "/replenishment",
    response_model=ReplenishmentPlan,
    tags=["replenishment"],
    responses={404: problem_doc("Unknown location, or outside the caller's region")},
    summary="Suggested orders for a location, with the inputs that produced them",
    description=f"Per part: `{FORMULA}` (rounded up, never below 0). The average covers "
    "the last `usage_months` full calendar months of consumption (StockConsumed) at the "
    "location; the seasonal coefficient is the current calendar month's.",
)
async def replenishment(
    location: LocationFilter,
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> ReplenishmentPlan:
    settings = platform.settings.parts
    now = platform.clock.now()
    months = domain.previous_months(now, settings.usage_months)
    coefficient = settings.seasonal_coefficient(now.month)
    async with platform.db.reading() as conn:
        row = await read_models.get_location(conn, location)
        if row is None:
            raise NotFound("location_not_found", f"no location {location}")
        require_region(principal, row.region, "location", location)
        stock = {
            r.part_number: r for r in await read_models.list_stock(conn, StockFilters(location))
        }
        usage = await read_models.usage_by_part(conn, location, months)
    items = []
    for part in sorted(set(stock) | set(usage)):
        by_month = {m: usage.get(part, {}).get(m, 0) for m in months}
        s = stock.get(part)
        on_hand, reserved = (s.on_hand, s.reserved) if s else (0, 0)
        suggestion = domain.suggest_order(
            list(by_month.values()),
            months_of_cover=settings.months_of_cover,
            seasonal_coefficient=coefficient,
            current_stock=on_hand - reserved,
        )
        items.append(
            ReplenishmentLine(
                part_number=part,
                months_of_cover=settings.months_of_cover,
                usage_months=months,
                usage_by_month=by_month,
                average_monthly_usage=float(suggestion.average_monthly_usage),
                seasonal_month=now.month,
                seasonal_coefficient=coefficient,
                on_hand=on_hand,
                reserved=reserved,
                current_stock=on_hand - reserved,
                raw_quantity=float(suggestion.raw),
                suggested_quantity=suggestion.suggested_quantity,
            )
        )
    return ReplenishmentPlan(location_id=location, computed_at=now, formula=FORMULA, items=items)

"""Dispatch's HTTP routes: thin — parse, call a command handler or a read model, shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch import domain, read_models
from services.dispatch.commands import DispatchCommands, DispatchTicket, NetworkResult, Reach
from services.dispatch.schemas import (
    ActivationRequest,
    AssignmentItem,
    AssignmentList,
    CandidatesView,
    CandidateView,
    DispatchAccepted,
    DispatchHistory,
    DispatchHistoryEntry,
    DispatchRequest,
    NetworkAccepted,
    RepairRequest,
    ServicePointCreate,
    ServicePointPage,
    ServicePointReplace,
    ServicePointView,
    TechnicianCreate,
    TechnicianPage,
    TechnicianReplace,
    TechnicianView,
    TicketAccepted,
    VisitRequest,
)
from shared.app.commands import TicketCommandResult, load_ticket
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.auth.personal_data import mask_address_line
from shared.http.context import Principal, allow, command_context, require_region
from shared.http.headers import etag, expected_version, idempotency_key
from shared.http.idempotency import CommandResponse, idempotent_command
from shared.http.params import NetworkIdFilter, ProductLineFilter, RegionFilter
from shared.http.problems import PROBLEM_RESPONSES
from shared.kernel.errors import NotFound
from shared.kernel.events.envelope import CommandContext
from shared.kernel.events.network import NetworkId, NetworkLevel
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import TicketDispatched

SERVICE = "dispatch"
network_router = APIRouter(tags=["network"], responses=PROBLEM_RESPONSES)
tickets_router = APIRouter(tags=["dispatch"], responses=PROBLEM_RESPONSES)

NETWORK_READERS = ("admin", "dispatcher", "regional_center", "auditor")
TICKET_READERS = ("admin", "dispatcher", "regional_center", "auditor")


def network_accepted(result: NetworkResult) -> dict[str, Any]:
    return NetworkAccepted(
        id=result.member_id, version=result.version, events=[str(e.event_id) for e in result.events]
    ).model_dump(mode="json")


def ticket_accepted(result: TicketCommandResult) -> dict[str, Any]:
    return TicketAccepted(
        ticket_id=result.after.ticket_id,
        status=result.after.status.value,
        version=result.after.version,
        events=[str(e.event_id) for e in result.events],
    ).model_dump(mode="json")


def reach_of(principal: Principal) -> Reach:
    if principal.role == "technician":
        return Reach(technician=principal.subject)
    return Reach(region=principal.region)


# --- the service network ---------------------------------------------------------------

NetworkAct = Callable[[DispatchCommands, AsyncConnection, CommandContext], Awaitable[NetworkResult]]


async def network_command(
    platform: Platform,
    principal: Principal,
    request: Request,
    *,
    scope: str,
    key: str | None,
    body: BaseModel,
    act: NetworkAct,
    status_code: int = 200,
    location: str | None = None,
) -> JSONResponse:
    """A change to a network member, answered with its new version and events."""
    context = command_context(request, principal.actor, SERVICE)

    async def run(conn: AsyncConnection) -> CommandResponse:
        result = await act(DispatchCommands(platform), conn, context)
        return CommandResponse(status_code, network_accepted(result), location)

    return await idempotent_command(
        platform, principal, scope=f"{SERVICE}:{scope}", key=key, body=body, command=run
    )


@network_router.post(
    "/service-points",
    status_code=201,
    response_model=NetworkAccepted,
    summary="Register a headquarters, regional center or service point",
    description="Service points (own outlets or dealers) belong to a regional center of "
    "their region and cover the region, or only the postcode prefixes they list. "
    "Event ServicePointRegistered on the member's own stream.",
)
async def register_service_point(
    body: ServicePointCreate,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    return await network_command(
        platform, principal, request, scope="register_service_point", key=key, body=body,
        act=lambda c, conn, context: c.register_service_point(
            conn, body.id, body.description(), context
        ),
        status_code=201, location=f"/service-points/{body.id}",
    )  # fmt: skip


@network_router.put(
    "/service-points/{point_id}",
    response_model=NetworkAccepted,
    summary="Replace a network member's description (event ServicePointUpdated)",
)
async def update_service_point(
    point_id: NetworkId,
    body: ServicePointReplace,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    return await network_command(
        platform, principal, request, scope=f"update_service_point:{point_id}", key=key, body=body,
        act=lambda c, conn, context: c.update_service_point(
            conn, point_id, body.description(), body.reason, context, version
        ),
    )  # fmt: skip


@network_router.get(
    "/service-points", response_model=ServicePointPage, summary="The network's members"
)
async def list_service_points(
    region: RegionFilter | None = None,
    level: NetworkLevel | None = None,
    principal: Principal = Depends(allow(*NETWORK_READERS)),
    platform: Platform = Depends(get_platform),
) -> ServicePointPage:
    if principal.region is not None:
        if region is not None and region != principal.region:
            return ServicePointPage(items=[])
        region = principal.region
    async with platform.db.reading() as conn:
        rows = await read_models.list_service_point_rows(
            conn, region=region, level=level.value if level else None
        )
    return ServicePointPage(items=[ServicePointView(**dict(r._mapping)) for r in rows])


@network_router.get(
    "/service-points/{point_id}", response_model=ServicePointView, summary="One network member"
)
async def get_service_point(
    point_id: NetworkId,
    response: Response,
    principal: Principal = Depends(allow(*NETWORK_READERS)),
    platform: Platform = Depends(get_platform),
) -> ServicePointView:
    async with platform.db.reading() as conn:
        row = await read_models.get_service_point_row(conn, point_id)
    if row is None:
        raise NotFound("service_point_not_found", f"no service point {point_id}")
    require_region(principal, row.region, "service_point", point_id)
    response.headers["ETag"] = etag(row.version)
    return ServicePointView(**dict(row._mapping))


@network_router.post(
    "/technicians",
    status_code=201,
    response_model=NetworkAccepted,
    summary="Register a technician (event TechnicianRegistered)",
    description="Skills are product lines; working hours are shifts per weekday in the "
    "technician's timezone. The id is the technician's login subject.",
)
async def register_technician(
    body: TechnicianCreate,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    description = body.description(platform.settings.dispatch.default_timezone)
    return await network_command(
        platform, principal, request, scope="register_technician", key=key, body=body,
        act=lambda c, conn, context: c.register_technician(conn, body.id, description, context),
        status_code=201, location=f"/technicians/{body.id}",
    )  # fmt: skip


@network_router.put(
    "/technicians/{technician_id}",
    response_model=NetworkAccepted,
    summary="Replace a technician's description (event TechnicianUpdated)",
)
async def update_technician(
    technician_id: NetworkId,
    body: TechnicianReplace,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    description = body.description(platform.settings.dispatch.default_timezone)
    return await network_command(
        platform, principal, request, scope=f"update_technician:{technician_id}", key=key,
        body=body,
        act=lambda c, conn, context: c.update_technician(
            conn, technician_id, description, body.reason, context, version
        ),
    )  # fmt: skip


async def _set_active(
    technician_id: str,
    active: bool,
    body: ActivationRequest,
    request: Request,
    principal: Principal,
    key: str | None,
    version: int | None,
    platform: Platform,
) -> JSONResponse:
    return await network_command(
        platform, principal, request,
        scope=f"{'activate' if active else 'deactivate'}_technician:{technician_id}",
        key=key, body=body,
        act=lambda c, conn, context: c.set_technician_active(
            conn, technician_id, active, body.reason, context, version
        ),
    )  # fmt: skip


@network_router.post(
    "/technicians/{technician_id}/deactivation",
    response_model=NetworkAccepted,
    summary="Take a technician off duty (event TechnicianDeactivated)",
    description="An inactive technician is never suggested nor may be named; open "
    "assignments stay until they are re-dispatched.",
)
async def deactivate_technician(
    technician_id: NetworkId,
    body: ActivationRequest,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    return await _set_active(technician_id, False, body, request, principal, key, version, platform)


@network_router.post(
    "/technicians/{technician_id}/activation",
    response_model=NetworkAccepted,
    summary="Put a technician back on duty (event TechnicianReactivated)",
)
async def activate_technician(
    technician_id: NetworkId,
    body: ActivationRequest,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    return await _set_active(technician_id, True, body, request, principal, key, version, platform)


@network_router.get("/technicians", response_model=TechnicianPage, summary="Technicians")
async def list_technicians(
    region: RegionFilter | None = None,
    service_point_id: NetworkIdFilter | None = None,
    skill: ProductLineFilter | None = Query(default=None, description="A product line."),
    active: bool | None = None,
    principal: Principal = Depends(allow(*NETWORK_READERS)),
    platform: Platform = Depends(get_platform),
) -> TechnicianPage:
    if principal.region is not None:
        if region is not None and region != principal.region:
            return TechnicianPage(items=[])
        region = principal.region
    async with platform.db.reading() as conn:
        rows = await read_models.list_technician_rows(
            conn,
            region=region,
            service_point_id=service_point_id,
            skill=skill,
            active=active,
        )
    return TechnicianPage(items=[TechnicianView(**dict(r._mapping)) for r in rows])


@network_router.get(
    "/technicians/{technician_id}", response_model=TechnicianView, summary="One technician"
)
async def get_technician(
    technician_id: NetworkId,
    response: Response,
    principal: Principal = Depends(allow(*NETWORK_READERS, "technician")),
    platform: Platform = Depends(get_platform),
) -> TechnicianView:
    row = await _visible_technician(platform, principal, technician_id)
    response.headers["ETag"] = etag(row.version)
    return TechnicianView(**dict(row._mapping))


async def _visible_technician(platform: Platform, principal: Principal, technician_id: str) -> Any:
    async with platform.db.reading() as conn:
        row = await read_models.get_technician_row(conn, technician_id)
    if row is None or (principal.role == "technician" and principal.subject != technician_id):
        raise NotFound("technician_not_found", f"no technician {technician_id}")
    require_region(principal, row.region, "technician", technician_id)
    return row


def assignment_item(row: Any, principal: Principal) -> AssignmentItem:
    data = dict(row._mapping)
    if not principal.sees_personal_data:
        data["address_line"] = mask_address_line(data["address_line"])
    breached = [
        name for name in ("response", "resolution") if data.pop(f"{name}_breached_at") is not None
    ]
    return AssignmentItem(
        **data,
        reopened=data["reopen_count"] > 0,
        sla_breached=breached,
    )


@network_router.get(
    "/technicians/{technician_id}/assignments",
    response_model=AssignmentList,
    summary="A technician's work list: open assignments, the nearest deadline first",
    description="Dispatched and visited tickets, and reopened tickets still assigned to the "
    "technician (flagged `reopened`, with `escalated` when the reopening escalated). The "
    "deadline is the resolution deadline, else the response deadline.",
)
async def technician_assignments(
    technician_id: NetworkId,
    principal: Principal = Depends(allow(*NETWORK_READERS, "technician")),
    platform: Platform = Depends(get_platform),
) -> AssignmentList:
    await _visible_technician(platform, principal, technician_id)
    async with platform.db.reading() as conn:
        rows = await read_models.technician_assignments(conn, technician_id)
    return AssignmentList(items=[assignment_item(r, principal) for r in rows])


# --- tickets -----------------------------------------------------------------------------


@tickets_router.get(
    "/dispatch-queue",
    response_model=AssignmentList,
    summary="Tickets waiting for a dispatch (diagnosed or reopened), the nearest deadline first",
)
async def dispatch_queue(
    region: RegionFilter | None = None,
    limit: int = Query(default=100, ge=1, le=500),
    principal: Principal = Depends(allow(*TICKET_READERS)),
    platform: Platform = Depends(get_platform),
) -> AssignmentList:
    if principal.region is not None:
        if region is not None and region != principal.region:
            return AssignmentList(items=[])
        region = principal.region
    async with platform.db.reading() as conn:
        rows = await read_models.dispatch_queue(conn, region, limit)
    return AssignmentList(items=[assignment_item(r, principal) for r in rows])


def candidate_views(
    candidates: tuple[domain.Candidate, ...] | list[domain.Candidate],
) -> list[CandidateView]:
    return [
        CandidateView(
            technician_id=c.technician.id,
            service_point_id=c.service_point.id,
            open_assignments=c.open_assignments,
            appointment_start=c.appointment_start,
            appointment_end=c.appointment_end,
        )
        for c in candidates
    ]


@tickets_router.get(
    "/tickets/{ticket_id}/candidates",
    response_model=CandidatesView,
    summary="Who the service would send, ranked, with the reason (records nothing)",
)
async def ticket_candidates(
    ticket_id: UUID,
    principal: Principal = Depends(allow("dispatcher", "admin")),
    platform: Platform = Depends(get_platform),
) -> CandidatesView:
    commands = DispatchCommands(platform)
    async with platform.db.reading() as conn:
        state = await load_ticket(platform, conn, str(ticket_id))
        domain.require_reach(state, principal.region, None)
        domain.check_dispatchable(state)
        ranked = await commands.candidates(conn, state, None)
    return CandidatesView(
        ticket_id=str(ticket_id),
        reason=domain.suggestion_reason(domain.ticket_facts(state), ranked),
        candidates=candidate_views(ranked),
    )


@tickets_router.post(
    "/tickets/{ticket_id}/dispatch",
    response_model=DispatchAccepted,
    summary="Assign the ticket to a service point and technician (event TicketDispatched)",
    description="Name the technician, or let the service choose: a technician at a service "
    "point covering the ticket's region (and postcode), with the product-line skill, the "
    "fewest open assignments and working at the appointment. The response states the "
    "reason. Dispatching again (re-dispatch, also after a reopening) needs a `reason` and "
    "keeps the earlier assignments in the history.",
)
async def dispatch_ticket(
    ticket_id: UUID,
    body: DispatchRequest,
    request: Request,
    principal: Principal = Depends(allow("dispatcher", "admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)
    window = (
        (body.appointment_start, body.appointment_end)
        if body.appointment_start and body.appointment_end
        else None
    )
    command = DispatchTicket(body.technician_id, body.service_point_id, window, body.reason)

    async def run(conn: AsyncConnection) -> CommandResponse:
        result, assignment = await DispatchCommands(platform).dispatch(
            conn, str(ticket_id), command, context, version, reach_of(principal)
        )
        event = result.after.dispatch
        assert event is not None
        view = DispatchAccepted(
            ticket_id=str(ticket_id),
            status=result.after.status.value,
            version=result.after.version,
            region=event.region,
            service_point_id=event.service_point_id,
            technician_id=event.technician_id,
            appointment_start=event.appointment_start,
            appointment_end=event.appointment_end,
            reason=event.reason,
            redispatch=event.redispatch,
            candidates=candidate_views(assignment.candidates),
            events=[str(e.event_id) for e in result.events],
        )
        return CommandResponse(200, view.model_dump(mode="json"))

    return await idempotent_command(
        platform,
        principal,
        scope=f"{SERVICE}:dispatch:{ticket_id}",
        key=key,
        body=body,
        command=run,
    )


@tickets_router.get(
    "/tickets/{ticket_id}/dispatches",
    response_model=DispatchHistory,
    summary="Every assignment of the ticket, oldest first, with its reason",
)
async def dispatch_history(
    ticket_id: UUID,
    principal: Principal = Depends(allow(*TICKET_READERS)),
    platform: Platform = Depends(get_platform),
) -> DispatchHistory:
    async with platform.db.reading() as conn:
        events = await platform.store.read_stream(conn, str(ticket_id))
    if not events:
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    require_region(principal, events[-1].region, "ticket", str(ticket_id))
    items = []
    for e in events:
        payload = typed_payload(e)
        if isinstance(payload, TicketDispatched):
            items.append(
                DispatchHistoryEntry(
                    stream_version=e.stream_version,
                    occurred_at=e.occurred_at,
                    actor=e.actor.model_dump(),
                    **payload.model_dump(exclude={"region"}),
                )
            )
    return DispatchHistory(ticket_id=str(ticket_id), items=items)


@tickets_router.post(
    "/tickets/{ticket_id}/visit",
    response_model=TicketAccepted,
    summary="The technician's on-site check-in (event TicketVisited)",
    description="Only on a dispatched ticket, by its technician (or the dispatcher on "
    "their behalf); never on a closed ticket.",
)
async def visit_ticket(
    ticket_id: UUID,
    body: VisitRequest,
    request: Request,
    principal: Principal = Depends(allow("technician", "dispatcher", "admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)

    async def run(conn: AsyncConnection) -> CommandResponse:
        result = await DispatchCommands(platform).visit(
            conn,
            str(ticket_id),
            body.arrived_at,
            body.findings,
            context,
            version,
            reach_of(principal),
        )
        return CommandResponse(200, ticket_accepted(result))

    return await idempotent_command(
        platform, principal, scope=f"{SERVICE}:visit:{ticket_id}", key=key, body=body, command=run
    )


@tickets_router.post(
    "/tickets/{ticket_id}/repair",
    response_model=TicketAccepted,
    summary="Record the repair (event TicketRepaired)",
    description="On-site and replacement tickets need a visit after the current dispatch; "
    "remote-guidance tickets may be repaired without one. The technician is taken from the "
    "current dispatch. Cost defaults to the warranty unless the ticket is out of warranty.",
)
async def repair_ticket(
    ticket_id: UUID,
    body: RepairRequest,
    request: Request,
    principal: Principal = Depends(allow("technician", "dispatcher", "admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)
    command = domain.RecordRepair(
        outcome=body.outcome,
        parts_used=tuple(body.parts_used),
        labour_minutes=body.labour_minutes,
        cost_borne_by=body.cost_borne_by,
        cost_amount=body.cost_amount,
        notes=body.notes,
    )

    async def run(conn: AsyncConnection) -> CommandResponse:
        result = await DispatchCommands(platform).repair(
            conn, str(ticket_id), command, context, version, reach_of(principal)
        )
        return CommandResponse(200, ticket_accepted(result))

    return await idempotent_command(
        platform, principal, scope=f"{SERVICE}:repair:{ticket_id}", key=key, body=body, command=run
    )

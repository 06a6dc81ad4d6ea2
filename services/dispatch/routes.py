"""Dispatch's HTTP routes: thin — parse, call a command handler or a read model, shape."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from services.dispatch import commands, domain, read_models
from services.dispatch.schemas import (
    ActivationRequest,
    AssignmentItem,
    AssignmentList,
    AssignmentPage,
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
from shared.app.executor import Handling, Invocation, Outcome
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.commands import CommandCall, command_call
from shared.http.context import Principal, allow
from shared.http.disclosure import Disclosure, open_rows
from shared.http.headers import NEXT_PAGE_RESPONSE, etag, link_next
from shared.http.idempotency import CommandResponse
from shared.http.params import (
    ASCII_COUNT,
    NetworkIdFilter,
    ProductLineFilter,
    QueryFlag,
    RegionFilter,
    keyset_cursor,
)
from shared.http.problems import PROBLEM_RESPONSES
from shared.kernel.errors import NotFound
from shared.kernel.events.envelope import CommandContext
from shared.kernel.events.network import NetworkId, NetworkLevel
from shared.kernel.events.registry import typed_payload
from shared.kernel.events.tickets import TicketDispatched
from shared.kernel.personal import Kind
from shared.kernel.reach import Scope
from shared.kernel.ticket import TICKETS, TicketState

SERVICE = "dispatch"
network_router = APIRouter(tags=["network"], responses=PROBLEM_RESPONSES)
tickets_router = APIRouter(tags=["dispatch"], responses=PROBLEM_RESPONSES)

# Who may call what (docs/access-control.md); the reach rule (region, assignment) applies
# on top, on the state each command decides on.
Manage = Annotated[CommandCall, Depends(command_call(SERVICE, "admin", scope="network:write"))]
Assign = Annotated[
    CommandCall, Depends(command_call(SERVICE, "dispatcher", "admin", scope="tickets:write"))
]
FieldWork = Annotated[
    CommandCall,
    Depends(command_call(SERVICE, "technician", "dispatcher", "admin", scope="tickets:write")),
]
READERS = ("admin", "dispatcher", "regional_center", "auditor")
may_read_network = allow(*READERS, scope="network:read")
may_read_technician = allow(*READERS, "technician", scope="network:read")
may_read_tickets = allow(*READERS, scope="tickets:read")
may_read_assignments = allow(*READERS, "technician", scope="tickets:read")


def network_accepted(
    result: Outcome[domain.NetworkMember], location: str | None = None
) -> CommandResponse:
    member = result.after
    view = NetworkAccepted(
        id=member.member_id, version=member.version, events=[str(e.event_id) for e in result.events]
    )
    return CommandResponse(201 if location else 200, view.model_dump(mode="json"), location)


def ticket_accepted(result: Outcome[TicketState]) -> CommandResponse:
    view = TicketAccepted(
        ticket_id=result.after.ticket_id,
        status=result.after.status.value,
        version=result.after.version,
        events=[str(e.event_id) for e in result.events],
    )
    return CommandResponse(200, view.model_dump(mode="json"))


# --- the service network ---------------------------------------------------------------


@network_router.post(
    "/service-points",
    status_code=201,
    response_model=NetworkAccepted,
    summary="Register a headquarters, regional center or service point",
    description="Service points (own outlets or dealers) belong to a regional center of "
    "their region and cover the region, or only the postcode prefixes they list. "
    "Event ServicePointRegistered on the member's own stream. Ids compare without case: "
    "an id registered already, in any case, is 409 `already_registered` naming `id`.",
)
async def register_service_point(body: ServicePointCreate, call: Manage) -> JSONResponse:
    point_id, description, where = body.id, body.description(), f"/service-points/{body.id}"
    return await call.run(
        "register_service_point",
        body,
        lambda c: network_accepted(
            commands.register_service_point(c, call.handling, point_id, description), where
        ),
    )


@network_router.put(
    "/service-points/{point_id}",
    response_model=NetworkAccepted,
    summary="Replace a network member's description (event ServicePointUpdated)",
    description="`If-Match` as on every command. Setting `active: false` is refused (409 "
    "`work_under_way`, naming the tickets) while tickets dispatched through the point are "
    "not yet repaired: re-dispatch them first. Moving it to another region is refused "
    "while it holds open tickets (409 `open_tickets_in_region`). The same description again "
    "records nothing: 200, the current version, `events: []`.",
)
async def update_service_point(
    point_id: NetworkId, body: ServicePointReplace, call: Manage
) -> JSONResponse:
    description = body.description()
    return await call.run(
        f"update_service_point:{point_id}",
        body,
        lambda c: network_accepted(
            commands.update_service_point(c, call.handling, point_id, description, body.reason)
        ),
    )


@network_router.get(
    "/service-points",
    response_model=ServicePointPage,
    summary="The network's members",
    description="A caller bound to a region sees its region's members and headquarters (of "
    "no region: every caller's); `region` filters a global caller's list to that region's "
    "members.",
)
async def list_service_points(
    region: RegionFilter | None = None,
    level: NetworkLevel | None = None,
    principal: Principal = Depends(may_read_network),
    platform: Platform = Depends(get_platform),
) -> ServicePointPage:
    where, visible = principal.reach.list_region(region)
    if not visible:
        return ServicePointPage(items=[])
    rows = await platform.db.read(
        lambda c: read_models.list_service_point_rows(
            c,
            region=where,
            level=level.value if level else None,
            regionless=principal.reach.region is not None,
        )
    )
    return ServicePointPage(items=[ServicePointView(**dict(r._mapping)) for r in rows])


@network_router.get(
    "/service-points/{point_id}", response_model=ServicePointView, summary="One network member"
)
async def get_service_point(
    point_id: NetworkId,
    response: Response,
    principal: Principal = Depends(may_read_network),
    platform: Platform = Depends(get_platform),
) -> ServicePointView:
    row = await platform.db.read(lambda c: read_models.get_service_point_row(c, point_id))
    if row is None or not principal.reach.allows(Scope(region=row.region)):
        raise NotFound("service_point_not_found", f"no service point {point_id}")
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
async def register_technician(body: TechnicianCreate, call: Manage) -> JSONResponse:
    description = body.description(call.handling.settings.dispatch.default_timezone)
    technician_id, where = body.id, f"/technicians/{body.id}"
    return await call.run(
        "register_technician",
        body,
        lambda c: network_accepted(
            commands.register_technician(c, call.handling, technician_id, description), where
        ),
    )


@network_router.put(
    "/technicians/{technician_id}",
    response_model=NetworkAccepted,
    summary="Replace a technician's description (event TechnicianUpdated)",
    description="The same description again records nothing: 200, the current version, "
    "`events: []`.",
)
async def update_technician(
    technician_id: NetworkId, body: TechnicianReplace, call: Manage
) -> JSONResponse:
    description = body.description(call.handling.settings.dispatch.default_timezone)
    return await call.run(
        f"update_technician:{technician_id}",
        body,
        lambda c: network_accepted(
            commands.update_technician(c, call.handling, technician_id, description, body.reason)
        ),
    )


async def _set_active(
    technician_id: str, active: bool, body: ActivationRequest, call: CommandCall
) -> JSONResponse:
    command = body.command(active)
    return await call.run(
        f"{'activate' if active else 'deactivate'}_technician:{technician_id}",
        body,
        lambda c: network_accepted(
            commands.set_technician_active(c, call.handling, technician_id, command)
        ),
    )


@network_router.post(
    "/technicians/{technician_id}/deactivation",
    response_model=NetworkAccepted,
    summary="Take a technician off duty (event TechnicianDeactivated)",
    description="An inactive technician is never suggested nor may be named. Refused "
    "(409 `work_under_way`, naming the tickets) while a ticket is dispatched to it and not "
    "yet repaired: re-dispatch those first, or they would wait on someone no longer "
    "working, out of the dispatch queue. A reopened ticket of theirs waits in the queue "
    "for its next dispatch and does not hold it.",
)
async def deactivate_technician(
    technician_id: NetworkId, body: ActivationRequest, call: Manage
) -> JSONResponse:
    return await _set_active(technician_id, False, body, call)


@network_router.post(
    "/technicians/{technician_id}/activation",
    response_model=NetworkAccepted,
    summary="Put a technician back on duty (event TechnicianReactivated)",
)
async def activate_technician(
    technician_id: NetworkId, body: ActivationRequest, call: Manage
) -> JSONResponse:
    return await _set_active(technician_id, True, body, call)


@network_router.get("/technicians", response_model=TechnicianPage, summary="Technicians")
async def list_technicians(
    region: RegionFilter | None = None,
    service_point_id: NetworkIdFilter | None = None,
    skill: ProductLineFilter | None = Query(default=None, description="A product line."),
    active: QueryFlag | None = None,
    principal: Principal = Depends(may_read_network),
    platform: Platform = Depends(get_platform),
) -> TechnicianPage:
    where, visible = principal.reach.list_region(region)
    if not visible:
        return TechnicianPage(items=[])
    rows = await platform.db.read(
        lambda c: read_models.list_technician_rows(
            c, region=where, service_point_id=service_point_id, skill=skill, active=active
        )
    )
    return TechnicianPage(items=[TechnicianView(**dict(r._mapping)) for r in rows])


async def visible_technician(platform: Platform, principal: Principal, technician_id: str) -> Any:
    """The technician's row, or 404 outside the caller's reach (another region; for a
    technician, anyone but itself)."""
    row = await platform.db.read(lambda c: read_models.get_technician_row(c, technician_id))
    if row is None or not principal.reach.allows(Scope(row.region, assignee=row.id)):
        raise NotFound("technician_not_found", f"no technician {technician_id}")
    return row


@network_router.get(
    "/technicians/{technician_id}", response_model=TechnicianView, summary="One technician"
)
async def get_technician(
    technician_id: NetworkId,
    response: Response,
    principal: Principal = Depends(may_read_technician),
    platform: Platform = Depends(get_platform),
) -> TechnicianView:
    row = await visible_technician(platform, principal, technician_id)
    response.headers["ETag"] = etag(row.version)
    return TechnicianView(**dict(row._mapping))


# The work lists' personal column: the street, masked for roles without personal data.
WORK_LIST_COLUMNS: dict[str, Kind] = {"address_line": "hidden"}


def assignment_item(row: dict[str, Any], disclosure: Disclosure) -> AssignmentItem:
    """One line of a work list (opened), as the caller may see it (docs/personal-data.md)."""
    data = disclosure.row(row, WORK_LIST_COLUMNS)
    data.pop("customer_id", None)
    breached = [
        name for name in ("response", "resolution") if data.pop(f"{name}_breached_at") is not None
    ]
    return AssignmentItem(**data, reopened=data["reopen_count"] > 0, sla_breached=breached)


def work_list(request: Request, principal: Principal, rows: list[dict[str, Any]]) -> AssignmentList:
    disclosure = Disclosure(request, principal)
    items = [assignment_item(r, disclosure) for r in rows]
    disclosure.record()
    return AssignmentList(items=items)


@network_router.get(
    "/technicians/{technician_id}/assignments",
    response_model=AssignmentList,
    summary="A technician's work list: open assignments, the nearest deadline first",
    description="Dispatched and visited tickets, and reopened tickets still assigned to the "
    "technician (flagged `reopened`, with `escalated` when the reopening escalated). The "
    "deadline is the resolution deadline, else the response deadline. The street address "
    "is masked for roles without access to personal data.",
)
async def technician_assignments(
    technician_id: NetworkId,
    request: Request,
    principal: Principal = Depends(may_read_assignments),
    platform: Platform = Depends(get_platform),
) -> AssignmentList:
    await visible_technician(platform, principal, technician_id)

    def within_reach(c: Connection) -> list[Any]:
        # Each line is a ticket of its own region: only those the caller may see.
        rows = read_models.technician_assignments(c, technician_id)
        seen = [r for r in rows if principal.reach.allows(Scope(r.region, assignee=technician_id))]
        return open_rows(c, platform, seen, WORK_LIST_COLUMNS)

    return work_list(request, principal, await platform.db.read(within_reach))


# --- tickets -----------------------------------------------------------------------------


# A cursor of the dispatch queue: its id part is a ticket id.
queue_cursor = keyset_cursor(UUID)


@tickets_router.get(
    "/dispatch-queue",
    response_model=AssignmentPage,
    summary="Tickets waiting for a dispatch (diagnosed or reopened), the nearest deadline first",
    description="`limit` at a time; the next page is `next_cursor` passed as `cursor` (also in "
    'the `Link: <…>; rel="next"` header). The street address is masked for roles without '
    "access to personal data.",
    responses=NEXT_PAGE_RESPONSE,
)
async def dispatch_queue(
    request: Request,
    response: Response,
    region: RegionFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=500), ASCII_COUNT] = 100,
    cursor: str | None = Depends(queue_cursor),
    principal: Principal = Depends(may_read_tickets),
    platform: Platform = Depends(get_platform),
) -> AssignmentPage:
    where, visible = principal.reach.list_region(region)
    if not visible:
        return AssignmentPage(items=[], next_cursor=None)

    def page(c: Connection) -> tuple[list[dict[str, Any]], str | None]:
        rows, next_cursor = read_models.dispatch_queue(c, where, limit, cursor)
        return open_rows(c, platform, rows, WORK_LIST_COLUMNS), next_cursor

    rows, next_cursor = await platform.db.read(page)
    link_next(request, response, next_cursor)
    return AssignmentPage(items=work_list(request, principal, rows).items, next_cursor=next_cursor)


def candidate_views(candidates: tuple[domain.Candidate, ...]) -> list[CandidateView]:
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
    responses={
        409: {
            "description": "Nobody can be sent (`rule`: `not_diagnosed`, `ticket_closed`, "
            "`no_technician_available`, …)"
        }
    },
)
async def ticket_candidates(
    ticket_id: UUID,
    principal: Principal = Depends(allow("dispatcher", "admin", scope="tickets:read")),
    platform: Platform = Depends(get_platform),
) -> CandidatesView:
    context = CommandContext(actor=principal.actor, service=SERVICE)
    handling = Handling(
        platform.executor(SERVICE), Invocation(context, principal.reach), platform.settings
    )
    chosen = await platform.db.read(lambda c: commands.candidates(c, handling, str(ticket_id)))
    return CandidatesView(
        ticket_id=str(ticket_id),
        reason=chosen.reason,
        candidates=candidate_views(chosen.candidates),
    )


def dispatch_accepted(result: commands.Dispatched) -> CommandResponse:
    after = result.outcome.after
    event = after.dispatch
    assert event is not None
    view = DispatchAccepted(
        ticket_id=after.ticket_id,
        status=after.status.value,
        version=after.version,
        region=event.region,
        service_point_id=event.service_point_id,
        technician_id=event.technician_id,
        appointment_start=event.appointment_start,
        appointment_end=event.appointment_end,
        reason=event.reason,
        redispatch=event.redispatch,
        candidates=candidate_views(result.candidates),
        events=[str(e.event_id) for e in result.outcome.events],
    )
    return CommandResponse(200, view.model_dump(mode="json"))


@tickets_router.post(
    "/tickets/{ticket_id}/dispatch",
    response_model=DispatchAccepted,
    summary="Assign the ticket to a service point and technician (event TicketDispatched)",
    description="Name the technician, or let the service choose: a technician at a service "
    "point covering the ticket's region (and postcode), with the product-line skill, the "
    "fewest open assignments and working at the appointment (a suggested one avoids the "
    "holidays of the point's SLA calendar). The response states the "
    "reason. Dispatching again (re-dispatch, also after a reopening) needs a `reason` and "
    "keeps the earlier assignments in the history.",
)
async def dispatch_ticket(ticket_id: UUID, body: DispatchRequest, call: Assign) -> JSONResponse:
    request = body.command()
    return await call.run(
        f"dispatch:{ticket_id}",
        body,
        lambda c: dispatch_accepted(commands.dispatch(c, call.handling, str(ticket_id), request)),
    )


@tickets_router.get(
    "/tickets/{ticket_id}/dispatches",
    response_model=DispatchHistory,
    summary="Every assignment of the ticket, oldest first, with its reason",
)
async def dispatch_history(
    ticket_id: UUID,
    principal: Principal = Depends(may_read_tickets),
    platform: Platform = Depends(get_platform),
) -> DispatchHistory:
    events = await platform.db.read(lambda c: platform.store.read_stream(c, str(ticket_id)))
    state = TICKETS.fold(str(ticket_id), events)
    if not state.exists or not principal.reach.allows(TICKETS.scope(state)):
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    items = []
    for e in events:
        if e.event_type == TicketDispatched.event_type:
            payload = typed_payload(e)
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
async def visit_ticket(ticket_id: UUID, body: VisitRequest, call: FieldWork) -> JSONResponse:
    visit = body.command()
    return await call.run(
        f"visit:{ticket_id}",
        body,
        lambda c: ticket_accepted(commands.visit(c, call.handling, str(ticket_id), visit)),
    )


@tickets_router.post(
    "/tickets/{ticket_id}/repair",
    response_model=TicketAccepted,
    summary="Record the repair (event TicketRepaired)",
    description="On-site and replacement tickets need a visit after the current dispatch; "
    "remote-guidance tickets may be repaired without one. The technician is taken from the "
    "current dispatch. Cost defaults to the warranty unless the ticket is out of warranty.",
)
async def repair_ticket(ticket_id: UUID, body: RepairRequest, call: FieldWork) -> JSONResponse:
    repair = body.command()
    return await call.run(
        f"repair:{ticket_id}",
        body,
        lambda c: ticket_accepted(commands.repair(c, call.handling, str(ticket_id), repair)),
    )

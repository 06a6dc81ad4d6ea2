"""Intake's HTTP routes: thin — parse, call a command handler or a read model, shape."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from services.intake import commands
from services.intake.read_models import (
    TicketFilters,
    get_ticket_row,
    list_ticket_rows,
    ticket_row_as_of,
    ticket_sla,
)
from services.intake.schemas import (
    CorrectContactRequest,
    Deadlines,
    DiagnoseTicketRequest,
    HistoryEvent,
    ReceiveTicketRequest,
    TicketAccepted,
    TicketDeadlines,
    TicketHistory,
    TicketPage,
    TicketView,
)
from shared.app.executor import Outcome
from shared.app.platform import Platform
from shared.eventstore.verify import stream_chain
from shared.http.app import get_platform
from shared.http.commands import CommandCall, command_call
from shared.http.context import Principal, allow
from shared.http.disclosure import Disclosure, open_row, open_rows
from shared.http.headers import NEXT_PAGE_RESPONSE, etag, link_next
from shared.http.idempotency import CommandResponse
from shared.http.params import (
    ASCII_COUNT,
    PhoneFilter,
    RegionFilter,
    UtcTime,
    keyset_cursor,
    require_period,
)
from shared.http.problems import PROBLEM_RESPONSES, ProblemDetails, ProblemError
from shared.kernel.errors import NotFound
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.reach import Scope
from shared.kernel.sla import SlaClock
from shared.kernel.ticket import TicketState, TicketStatus

SERVICE = "intake"
router = APIRouter(tags=["tickets"], responses=PROBLEM_RESPONSES)

# Who may call what (docs/access-control.md); the reach rule (region, assignment) applies
# on top, on the state each command decides on.
Receive = Annotated[
    CommandCall,
    Depends(command_call(SERVICE, "call_center_agent", scope="tickets:write", rate_limit="intake")),
]
Diagnose = Annotated[
    CommandCall,
    Depends(command_call(SERVICE, "call_center_agent", "dispatcher", scope="tickets:write")),
]
Correct = Annotated[
    CommandCall,
    Depends(
        command_call(
            SERVICE, "call_center_agent", "dispatcher", "customer_relations", scope="tickets:write"
        )
    ),
]
may_read = allow(
    "call_center_agent",
    "dispatcher",
    "technician",
    "customer_relations",
    "regional_center",
    "auditor",
    "admin",
    scope="tickets:read",
)


def accepted(result: Outcome[TicketState], status_code: int = 200) -> CommandResponse:
    state = result.after
    assert state.received is not None
    view = TicketAccepted(
        ticket_id=state.ticket_id,
        ticket_number=state.received.ticket_number,
        status=state.status.value,
        version=state.version,
        sla=Deadlines(
            response_due_at=state.received.response_due_at,
            resolution_due_at=state.diagnosis.resolution_due_at if state.diagnosis else None,
        ),
        possible_duplicate_of=state.received.possible_duplicate_of,
        events=[str(e.event_id) for e in result.events],
    )
    location = f"/tickets/{view.ticket_id}" if status_code == 201 else None
    return CommandResponse(status_code, view.model_dump(mode="json"), location)


async def visible_ticket(platform: Platform, principal: Principal, ticket_id: UUID) -> Any:
    """The ticket's current row (personal columns opened), or 404 when it does not exist
    for this caller (outside its reach: another region, or a technician's ticket assigned
    to someone else)."""
    row = await platform.db.read(lambda c: open_row(c, platform, get_ticket_row(c, str(ticket_id))))
    if row is None or not principal.reach.allows(Scope(row["region"], row["technician_id"])):
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    return row


def ticket_view(data: dict[str, Any], clock: SlaClock | None = None) -> TicketView:
    """A row as the caller may see it (``Disclosure.row``), with the SLA clock's
    deadlines when one is given."""
    data = dict(data)
    data["sla"] = TicketDeadlines(
        response_due_at=data.pop("response_due_at"), resolution_due_at=data.pop("resolution_due_at")
    )
    if clock is not None:
        data["sla"] = clock_deadlines(data["sla"], clock)
    return TicketView(**data)


def clock_deadlines(recorded: TicketDeadlines, clock: SlaClock) -> TicketDeadlines:
    """The deadlines on the ticket's SLA clock (the recorded one where it has none)."""
    response, resolution = clock.deadline("response"), clock.deadline("resolution")
    return TicketDeadlines(
        response_due_at=(response.due_at if response else None) or recorded.response_due_at,
        resolution_due_at=(resolution.due_at if resolution else None) or recorded.resolution_due_at,
        paused=clock.paused,
        response_status=response.status if response else None,
        resolution_status=resolution.status if resolution else None,
    )


@router.post(
    "/tickets",
    status_code=201,
    response_model=TicketAccepted,
    responses={429: {"model": ProblemDetails, "description": "Rate limited (Retry-After)"}},
    summary="Record a customer request (event TicketReceived)",
    description="Returns the ticket number, the SLA deadlines that now apply and, when an "
    "open ticket of the region exists for the same phone and serial (or model), "
    "`possible_duplicate_of`. "
    "Send an `Idempotency-Key` so that a retried request never opens a second ticket. "
    "Refused with 422 naming the field: a purchase date in the future or before 1950, a "
    "warranty status the purchase date contradicts (but `extended`), a name or address "
    "line with no visible character.",
)
async def receive_ticket(body: ReceiveTicketRequest, call: Receive) -> JSONResponse:
    request = body.command()
    return await call.run(
        "receive", body, lambda c: accepted(commands.receive(c, call.handling, request), 201)
    )


@router.post(
    "/tickets/{ticket_id}/diagnosis",
    response_model=TicketAccepted,
    summary="Record the remote diagnosis (event TicketDiagnosed)",
    description="Complexity sets the resolution deadline. With `resolution_path` "
    "`remote_guidance` and a `remote_outcome`, the ticket is repaired on the call "
    "(TicketRepaired follows) and skips dispatch; `remote_outcome` `replaced` is 422 (a "
    "replacement names its parts: dispatch's repair records it).",
)
async def diagnose_ticket(
    ticket_id: UUID, body: DiagnoseTicketRequest, call: Diagnose
) -> JSONResponse:
    diagnosis = body.command()
    return await call.run(
        f"diagnose:{ticket_id}",
        body,
        lambda c: accepted(commands.diagnose(c, call.handling, str(ticket_id), diagnosis)),
    )


@router.patch(
    "/tickets/{ticket_id}/contact",
    response_model=TicketAccepted,
    summary="Correct the customer's contact details (event ContactDetailsCorrected)",
    description="A correction is a new event; the original details stay in the history. "
    "An address in another region moves the ticket there until it is dispatched; after "
    "its first dispatch the region no longer changes (409 `region_change_after_dispatch`). "
    "An erased customer's ticket (left open by a restore) takes no new details (409 "
    "`customer_erased`).",
)
async def correct_contact(
    ticket_id: UUID, body: CorrectContactRequest, call: Correct
) -> JSONResponse:
    correction = body.command()
    return await call.run(
        f"contact:{ticket_id}",
        body,
        lambda c: accepted(commands.correct_contact(c, call.handling, str(ticket_id), correction)),
    )


@router.get(
    "/tickets/{ticket_id}",
    response_model=TicketView,
    summary="One ticket's current state, or its state at a past time (`as_of`)",
)
async def get_ticket(
    ticket_id: UUID,
    request: Request,
    response: Response,
    as_of: UtcTime | None = Query(
        default=None,
        description="ISO 8601 with timezone: the state as recorded at that time, rebuilt "
        "from the ticket's events (e.g. 2026-11-20T10:00:00Z); its `ETag` is that state's "
        "version.",
    ),
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> TicketView:
    row = await visible_ticket(platform, principal, ticket_id)
    if as_of is not None:
        row = await platform.db.read(
            lambda c: open_row(
                c, platform, ticket_row_as_of(c, platform.store, str(ticket_id), as_of)
            )
        )
    if row is None:
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    now, sla = platform.clock.now(), platform.settings.sla
    at = min(as_of, now) if as_of is not None else now
    clock = await platform.db.read(
        lambda c: ticket_sla(c, platform.store, sla, str(ticket_id), at, as_of)
    )
    # The version of the state shown: a past state's, which If-Match then refuses (409).
    response.headers["ETag"] = etag(row["version"])
    disclosure = Disclosure(request, principal)
    view = ticket_view(disclosure.row(row), clock)
    disclosure.record()
    return view


# A cursor of the ticket list: its id part is a ticket id.
ticket_cursor = keyset_cursor(UUID)


def personal_data_filter(principal: Principal, field: str) -> None:
    """A role that sees a field masked may not search by it: matching a full value would
    confirm guesses of what the mask hides (docs/personal-data.md)."""
    if not principal.sees_personal_data:
        raise ProblemError(
            403,
            "forbidden",
            "Your role may not filter by personal data",
            f"role {principal.role!r} sees {field} masked and may not filter by it",
            errors=[{"field": field, "message": "masked for this role: not a filter"}],
        )


@router.get(
    "/tickets",
    response_model=TicketPage,
    summary="Find tickets (newest first, cursor-paginated)",
    responses=NEXT_PAGE_RESPONSE,
)
async def list_tickets(
    request: Request,
    response: Response,
    status: TicketStatus | None = None,
    region: RegionFilter | None = None,
    urgency: Literal["normal", "urgent", "critical"] | None = None,
    phone: PhoneFilter | None = Query(
        default=None,
        description="The full number (digits, optional leading +; spaces and dashes are "
        "ignored). Only for roles that see phone numbers in full (403 otherwise).",
    ),
    created_from: UtcTime | None = Query(default=None, description="Inclusive (ISO 8601)."),
    created_to: UtcTime | None = Query(default=None, description="Exclusive (ISO 8601)."),
    limit: Annotated[int, Query(ge=1, le=200), ASCII_COUNT] = 50,
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
    cursor: str | None = Depends(ticket_cursor),
) -> TicketPage:
    if phone is not None:
        personal_data_filter(principal, "phone")
    require_period(("created_from", created_from), ("created_to", created_to))
    where, visible = principal.reach.list_region(region)
    if not visible:
        return TicketPage(items=[], next_cursor=None)
    filters = TicketFilters(
        status=status.value if status else None,
        region=where,
        technician_id=principal.reach.technician,
        urgency=urgency,
        created_from=created_from,
        created_to=created_to,
    )

    def page(c: Connection) -> tuple[list[dict[str, Any]], str | None]:
        chosen = filters
        if phone is not None:  # the blind index: no clear number to compare with
            digest = platform.personal.phone_digest(c, phone) or ""
            chosen = replace(filters, phone_digest=digest)
        rows, next_cursor = list_ticket_rows(c, chosen, cursor=cursor, limit=limit)
        return open_rows(c, platform, rows), next_cursor

    rows, next_cursor = await platform.db.read(page)
    disclosure = Disclosure(request, principal)
    items = [ticket_view(disclosure.row(r)) for r in rows]
    disclosure.record()
    link_next(request, response, next_cursor)
    return TicketPage(items=items, next_cursor=next_cursor)


@router.get(
    "/tickets/{ticket_id}/history",
    response_model=TicketHistory,
    summary="The ticket's events in order, with hash-chain status (its audit trail)",
)
async def ticket_history(
    ticket_id: UUID,
    request: Request,
    principal: Principal = Depends(may_read),
    platform: Platform = Depends(get_platform),
) -> TicketHistory:
    row = await visible_ticket(platform, principal, ticket_id)

    def stored_and_opened(
        c: Connection,
    ) -> tuple[list[tuple[EventEnvelope, str]], list[EventEnvelope]]:
        checked = platform.store.read_stream_checked(c, str(ticket_id))
        return checked, platform.store.open(c, [e for e, _ in checked])

    checked, opened = await platform.db.read(stored_and_opened)
    if not checked:
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    disclosure = Disclosure(request, principal)
    # The hashes cover the stored (sealed) payloads; the caller sees them opened.
    chain = stream_chain(checked, row["version"])
    items = [
        history_event(e, disclosure.payload(clear, row["customer_id"], str(ticket_id)), ok)
        for (e, _), clear, ok in zip(checked, opened, chain.ok, strict=True)
    ]
    disclosure.record()
    return TicketHistory(
        ticket_id=str(ticket_id), chain_valid=chain.valid, problems=chain.problems, events=items
    )


def history_event(e: EventEnvelope, payload: dict[str, Any], hash_ok: bool) -> HistoryEvent:
    return HistoryEvent(
        position=e.position,
        stream_version=e.stream_version,
        event_id=str(e.event_id),
        event_type=e.event_type,
        schema_version=e.schema_version,
        occurred_at=e.occurred_at,
        recorded_at=e.recorded_at,
        actor=e.actor.model_dump(),
        service=e.service,
        correlation_id=str(e.correlation_id),
        causation_id=str(e.causation_id) if e.causation_id else None,
        payload=payload,
        prev_hash=e.prev_hash,
        hash=e.hash,
        hash_ok=hash_ok,
    )

"""The privacy officer's API: find a customer, subject access, erasure, legal holds, and
the read log (docs/personal-data.md)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from services.intake import commands, domain
from services.intake.read_models import CustomerData, customer_data
from services.intake.schemas import (
    CustomerEvent,
    CustomerFound,
    CustomerLookup,
    CustomerTicket,
    ErasureRequest,
    ErasureView,
    LegalHoldRequest,
    LegalHoldView,
    ReadEntry,
    ReadLogPage,
    SubjectAccess,
)
from shared.app.executor import Outcome
from shared.app.platform import Platform
from shared.app.read_log import read_log
from shared.http.app import get_platform
from shared.http.commands import CommandCall, command_call
from shared.http.context import Principal, allow, every_region
from shared.http.disclosure import Disclosure
from shared.http.idempotency import CommandResponse
from shared.http.params import ASCII_COUNT, EntryId, TextFilter, UtcTime, require_period
from shared.http.problems import PROBLEM_RESPONSES, problem_doc
from shared.kernel.errors import NotFound
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import UnknownEventType, payload_class
from shared.kernel.personal import get_path, personal_fields

SERVICE = "intake"
router = APIRouter(tags=["customers"], responses=PROBLEM_RESPONSES)

Erase = Annotated[
    CommandCall,
    Depends(command_call(SERVICE, "privacy_officer", "admin", scope="customers:write")),
]
Hold = Erase
may_read_customers = allow("privacy_officer", "admin", scope="customers:read")
may_read_log = allow("privacy_officer", "auditor", "admin", scope="customers:read")
# What a token confined to a region may not ask for (every_region).
CUSTOMER_DATA = "a customer's personal data (their tickets are in every region)"


def erasure_response(outcome: Outcome[domain.CustomerState]) -> CommandResponse:
    """The erasure as first recorded: a repeated request gets the same answer."""
    state, erased = outcome.after, outcome.after.erased
    assert erased is not None and state.erased_at is not None
    view = ErasureView(
        customer_id=state.customer_id,
        request_id=erased.request_id,
        legal_basis=erased.legal_basis,
        source=erased.source,
        erased_at=state.erased_at,
        tickets=erased.tickets,
    )
    return CommandResponse(200, view.model_dump(mode="json"), replayed=not outcome.events)


@router.post(
    "/customers/{customer_id}/erasure",
    response_model=ErasureView,
    summary="Erase the customer's personal data (event CustomerDataErased)",
    description="Destroys the customer's data key: their name, phone, address and words "
    "read `[erased]` in every view, history and replay (audit exports and event streams "
    "keep the sealed values no key opens; `ticketline export --kind tickets` leaves their "
    "tickets out); statistics, SLA, "
    "compliance and scorecards are unchanged. Refused (409) under legal hold or while a "
    "ticket of theirs is open (unless `after_restore`: erasing again a customer erased "
    "after the restored backup was taken). Erasing again answers with the first erasure "
    "(`Idempotent-Replayed: true`).",
)
async def erase_customer(customer_id: UUID, body: ErasureRequest, call: Erase) -> JSONResponse:
    every_region(call.principal, CUSTOMER_DATA)
    return await call.run(
        f"erasure:{customer_id}",
        body,
        lambda c: erasure_response(
            commands.erase_customer(
                c,
                call.handling,
                str(customer_id),
                body.request_id,
                body.legal_basis,
                after_restore=body.after_restore,
            )
        ),
    )


@router.put(
    "/customers/{customer_id}/legal-hold",
    response_model=LegalHoldView,
    summary="Place or release a legal hold (events LegalHoldPlaced / LegalHoldReleased)",
    description="Under a legal hold the retention job skips the customer and erasure is "
    "refused. Setting the state it already has records nothing.",
)
async def legal_hold(customer_id: UUID, body: LegalHoldRequest, call: Hold) -> JSONResponse:
    every_region(call.principal, CUSTOMER_DATA)
    command = domain.SetLegalHold(body.active, body.reason)

    def run(c: Any) -> CommandResponse:
        outcome = commands.set_legal_hold(c, call.handling, str(customer_id), command)
        after = outcome.after
        view = LegalHoldView(
            customer_id=after.customer_id, legal_hold=after.legal_hold, version=after.version
        )
        return CommandResponse(200, view.model_dump(mode="json"))

    return await call.run(f"legal-hold:{customer_id}", body, run)


@router.post(
    "/customers/lookup",
    response_model=CustomerFound,
    summary="Find the customer a person is, by name and phone (as given at intake)",
    description="For a subject-access or erasure request made by phone or in writing. "
    "404 when no customer has that name and phone (an erased customer is not found).",
    responses={404: problem_doc("No customer with that name and phone")},
)
async def find_customer(
    body: CustomerLookup,
    principal: Principal = Depends(may_read_customers),
    platform: Platform = Depends(get_platform),
) -> CustomerFound:
    every_region(principal, CUSTOMER_DATA)
    name, phone = body.customer.name, body.customer.phone
    found = await platform.db.read(lambda c: platform.personal.find_customer(c, name, phone))
    if found is None:
        raise NotFound("customer_not_found", "no customer with that name and phone")
    return CustomerFound(customer_id=found)


def customer_event(event: EventEnvelope) -> CustomerEvent:
    try:
        fields = personal_fields(payload_class(event.event_type))
    except UnknownEventType:
        fields = ()
    personal = {f.dotted: v for f in fields if (v := get_path(event.payload, f.path)) is not None}
    return CustomerEvent(
        stream_id=event.stream_id,
        position=event.position,
        event_type=event.event_type,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        actor=event.actor.model_dump(),
        personal=personal,
        payload=event.payload,
    )


def subject_access(customer_id: str, data: CustomerData) -> SubjectAccess:
    events = [customer_event(e) for e in data.events]
    comments = [e for e in events if e.event_type in ("FollowUpRecorded", "ComplaintFiled")]
    return SubjectAccess(
        customer_id=customer_id,
        status="erased" if data.key.erased_at is not None else "active",
        created_at=data.key.created_at,
        erased_at=data.key.erased_at,
        legal_hold=data.key.legal_hold,
        tickets=[CustomerTicket(**t) for t in data.tickets],
        events=events,
        comments=[c for c in comments if c.personal],
        privacy_events=[customer_event(e) for e in data.privacy_events],
        reads=[ReadEntry(**dict(r._mapping)) for r in data.reads],
        customers_sharing_a_phone=data.sharing_a_phone,
    )


@router.get(
    "/customers/{customer_id}/data",
    response_model=SubjectAccess,
    summary="Subject access: everything held about the customer, and who read it",
    description="All the customer's tickets, every event of them with personal fields in "
    "clear (`[erased]` after erasure), follow-up comments and complaints, legal holds and "
    "erasure, and the read log's entries for the customer. This answer is logged too.",
)
async def customer_data_export(
    customer_id: UUID,
    request: Request,
    principal: Principal = Depends(may_read_customers),
    platform: Platform = Depends(get_platform),
) -> SubjectAccess:
    every_region(principal, CUSTOMER_DATA)
    if platform.reads is not None:
        await platform.reads.flush()  # the trail includes this process's latest reads
    cid = str(customer_id)
    data = await platform.db.read(lambda c: customer_data(c, platform.store, cid))
    if data is None:
        raise NotFound("customer_not_found", f"no customer {cid}")
    answer = subject_access(cid, data)
    if answer.status == "active":
        disclosure = Disclosure(request, principal)
        disclosure.show(cid)
        disclosure.record()
    return answer


@router.get(
    "/personal-data/reads",
    response_model=ReadLogPage,
    summary="The read log: responses that showed a customer's personal data unmasked",
    description="Who (subject, role), when, which customer, through which endpoint (route "
    "and service), oldest first. Page with `after`.",
)
async def reads(
    customer_id: UUID | None = None,
    actor_subject: TextFilter | None = Query(default=None),
    since: UtcTime | None = Query(default=None, description="Inclusive (ISO 8601)."),
    until: UtcTime | None = Query(default=None, description="Exclusive (ISO 8601)."),
    after: EntryId | None = Query(default=None, description="`next_after` of a page."),
    limit: Annotated[int, Query(ge=1, le=1000), ASCII_COUNT] = 100,
    principal: Principal = Depends(may_read_log),
    platform: Platform = Depends(get_platform),
) -> ReadLogPage:
    every_region(principal, CUSTOMER_DATA)
    require_period(("since", since), ("until", until))
    if platform.reads is not None:
        await platform.reads.flush()
    cid = str(customer_id) if customer_id else None
    rows = await platform.db.read(
        lambda c: read_log(
            c,
            customer_id=cid,
            actor_subject=actor_subject,
            since=since,
            until=until,
            after_id=after or 0,
            limit=limit,
        )
    )
    items = [ReadEntry(**dict(r._mapping)) for r in rows]
    return ReadLogPage(items=items, next_after=items[-1].id if len(items) == limit else None)

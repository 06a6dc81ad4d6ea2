"""Feedback's HTTP routes: thin — parse, call a command handler or a read model, shape."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import TypeAdapter

from services.feedback import commands, read_models
from services.feedback.domain import ScorecardState
from services.feedback.schemas import (
    ComplaintRequest,
    ComplianceSummary,
    ComplianceTicket,
    ComplianceTicketPage,
    FeedbackAccepted,
    FollowUpRequest,
    QualityWeekly,
    ScorecardItemAccepted,
    ScorecardItemRequest,
    Scorecards,
)
from shared.app.executor import Outcome
from shared.app.importing.cells import spreadsheet_text
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.commands import CommandCall, command_call
from shared.http.context import Principal, allow
from shared.http.headers import NEXT_PAGE_RESPONSE, link_next
from shared.http.idempotency import CommandResponse
from shared.http.params import (
    ASCII_COUNT,
    IsoMonth,
    IsoWeek,
    NetworkIdFilter,
    RegionFilter,
    TicketNumber,
    UtcTime,
    keyset_cursor,
    wants_csv,
)
from shared.http.problems import PROBLEM_RESPONSES
from shared.kernel.clock import latest_today
from shared.kernel.errors import InvalidCommand, NotFound
from shared.kernel.ticket import TicketState
from shared.readmodels.paging import next_page
from shared.readmodels.ticket_state import current_scope

SERVICE = "feedback"
router = APIRouter(responses=PROBLEM_RESPONSES)

READERS = ("auditor", "admin", "regional_center", "dispatcher")

# Who may call what (docs/access-control.md); the reach rule (region) applies on top, on
# the ticket each command decides on.
FollowUpCall = Annotated[
    CommandCall,
    Depends(command_call(SERVICE, "customer_relations", "admin", scope="tickets:write")),
]
ComplaintCall = Annotated[
    CommandCall,
    Depends(
        command_call(
            SERVICE, "customer_relations", "call_center_agent", "admin", scope="tickets:write"
        )
    ),
]
ScorecardItemCall = Annotated[
    CommandCall, Depends(command_call(SERVICE, "admin", scope="reports:write"))
]
may_read_reports = allow(*READERS, scope="reports:read")
# The compliance pages' cursor: the last row's receipt time and ticket number (ours or an
# imported one), the number being where the next page starts.
ticket_number_cursor = keyset_cursor(TypeAdapter(TicketNumber).validate_python)


def accepted(result: Outcome[TicketState]) -> CommandResponse:
    types = [e.event_type for e in result.events]
    outcome = (
        "closed"
        if "TicketClosed" in types
        else "reopened"
        if "TicketReopened" in types
        else "recorded"
    )
    view = FeedbackAccepted(
        ticket_id=result.after.ticket_id,
        status=result.after.status.value,
        version=result.after.version,
        outcome=outcome,
        events=[str(e.event_id) for e in result.events],
    )
    return CommandResponse(201, view.model_dump(mode="json"))


def item_accepted(result: Outcome[ScorecardState]) -> CommandResponse:
    (event,) = result.events
    view = ScorecardItemAccepted(
        event_id=str(event.event_id),
        service_point_id=event.payload["service_point_id"],
        item=event.payload["item"],
        month=event.payload["occurred_on"][:7],
    )
    return CommandResponse(201, view.model_dump(mode="json"))


@router.post(
    "/tickets/{ticket_id}/follow-ups",
    status_code=201,
    response_model=FeedbackAccepted,
    tags=["follow-ups"],
    summary="Record the return visit (FollowUpRecorded) — closes or reopens the ticket",
    description="Only after the repair. Satisfied (score ≥ the `dissatisfied_below` setting, "
    "default 60) and solved → TicketClosed. Otherwise → TicketReopened and TicketEscalated "
    "(regional center): the ticket goes back to dispatch.",
)
async def record_follow_up(
    ticket_id: UUID, body: FollowUpRequest, call: FollowUpCall
) -> JSONResponse:
    follow_up = body.command()
    return await call.run(
        f"follow-up:{ticket_id}",
        body,
        lambda c: accepted(commands.record_follow_up(c, call.handling, str(ticket_id), follow_up)),
    )


@router.post(
    "/tickets/{ticket_id}/complaints",
    status_code=201,
    response_model=FeedbackAccepted,
    tags=["follow-ups"],
    summary="File a complaint (ComplaintFiled); against a closed ticket it reopens it",
    description="A complaint against a closed ticket also records TicketReopened (source "
    "complaint) and TicketEscalated — unless the ticket's customer was erased: then it is "
    "only recorded (as `[erased]`) and the ticket stays closed, since no one could be sent "
    "to an address that no longer reads. A public complaint or media exposure is a "
    "scorecard deduction for the service point.",
)
async def file_complaint(
    ticket_id: UUID, body: ComplaintRequest, call: ComplaintCall
) -> JSONResponse:
    complaint = body.command()
    return await call.run(
        f"complaint:{ticket_id}",
        body,
        lambda c: accepted(commands.file_complaint(c, call.handling, str(ticket_id), complaint)),
    )


def csv_text(rows: Iterable[list[Any]]) -> str:
    """Rows as CSV, each text cell that starts like a formula after an apostrophe (a
    spreadsheet's mark for text: a ticket number ``=HYPERLINK(…)`` stays text)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        [spreadsheet_text(v) if isinstance(v, str) else v for v in row] for row in rows
    )
    return buffer.getvalue()


def csv_response(header: list[str], rows: Iterable[list[Any]], filename: str) -> Response:
    return Response(
        csv_text([header, *rows]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# Rows of a streamed CSV read per page: memory stays flat however many tickets match.
CSV_PAGE = 2_000


def compliance_csv(platform: Platform, filters: read_models.ComplianceFilters) -> Response:
    """Every matching ticket's row, streamed a page at a time in ticket-number order (the
    first bytes go out at once; a ticket received meanwhile may be in it or not)."""

    async def pages() -> AsyncIterator[str]:
        yield csv_text([read_models.ticket_csv_header()])
        after: str | None = None
        while True:
            rows = await platform.db.read(
                lambda c, a=after: read_models.list_compliance_rows(
                    c, filters, after=a, limit=CSV_PAGE + 1
                )
            )
            page, after = next_page(rows, CSV_PAGE, "received_at", "ticket_number")
            yield csv_text(read_models.ticket_csv_row(r) for r in page)
            if after is None:
                return

    return StreamingResponse(
        pages(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="compliance-tickets.csv"'},
    )


ItemStatus = Literal["true", "false", "pending", "unknown"]
ItemName = Literal[
    "responded_within_sla",
    "resolved_within_sla",
    "visited_before_repair",
    "follow_up_done",
    "satisfied",
    "parts_returned",
    "steps_in_order",
]
FORMAT_DESCRIPTION = "`csv` for a CSV file (also with `Accept: text/csv`); JSON otherwise."
# The 200 answer's other media type (the JSON one comes from the response model).
CSV_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or with `format=csv` / `Accept: text/csv` a CSV file with a "
        "header row.",
    }
}


@router.get(
    "/compliance/tickets",
    response_model=ComplianceTicketPage,
    responses={200: CSV_ANSWER[200] | NEXT_PAGE_RESPONSE[200]},
    tags=["compliance"],
    summary="Per-ticket closed-loop checklist with evidence (JSON pages or CSV)",
    description="Each item is true, false or pending with the ids of the events that "
    "decide it. Ordered by ticket number; pass `next_cursor` as `cursor` (text of no "
    "cursor's form — the page's last row's time, with its offset, and ticket number — is "
    "422 naming `cursor`; a well-formed one goes on after the ticket it names). The CSV "
    "holds every matching row.",
)
async def compliance_tickets(
    request: Request,
    response: Response,
    region: RegionFilter | None = None,
    service_point: NetworkIdFilter | None = None,
    technician: NetworkIdFilter | None = None,
    month: IsoMonth | None = Query(default=None, description="YYYY-MM (UTC)"),
    compliant: ItemStatus | None = None,
    failing: ItemName | None = Query(default=None, description="Only tickets failing this item."),
    cursor: str | None = Depends(ticket_number_cursor),
    limit: Annotated[int, Query(ge=1, le=500), ASCII_COUNT] = 50,
    format: Literal["json", "csv"] | None = Query(default=None, description=FORMAT_DESCRIPTION),
    principal: Principal = Depends(may_read_reports),
    platform: Platform = Depends(get_platform),
) -> Any:
    filters = read_models.ComplianceFilters(
        region=region,
        service_point_id=service_point,
        technician_id=technician,
        month=month,
        compliant=compliant,
        failing=failing,
        reach=principal.reach,
    )
    if wants_csv(request, format):
        return compliance_csv(platform, filters)
    rows = await platform.db.read(
        lambda c: read_models.list_compliance_rows(c, filters, after=cursor, limit=limit + 1)
    )
    rows, next_cursor = next_page(rows, limit, "received_at", "ticket_number")
    link_next(request, response, next_cursor)
    return ComplianceTicketPage(
        items=[ComplianceTicket(**read_models.ticket_view(r)) for r in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/compliance/tickets/{ticket_id}",
    response_model=ComplianceTicket,
    tags=["compliance"],
    summary="One ticket's checklist with evidence",
)
async def compliance_ticket(
    ticket_id: UUID,
    as_of: UtcTime | None = Query(
        default=None,
        description="ISO 8601 with timezone: the checklist as it stood then, computed from "
        "the events recorded until that time (e.g. 2026-11-20T10:00:00Z).",
    ),
    principal: Principal = Depends(allow(*READERS, "customer_relations", scope="reports:read")),
    platform: Platform = Depends(get_platform),
) -> ComplianceTicket:
    tid = str(ticket_id)
    view, now_at = await platform.db.read(
        lambda c: (
            read_models.compliance_view(c, platform.store, tid, as_of),
            current_scope(c, tid),
        )
    )
    # Outside the caller's reach the ticket does not exist for it — judged by where it is
    # now (the inline ticket state), not where it was at `as_of` nor where the compliance
    # row, written moments after, last saw it.
    if view is None or now_at is None or not principal.reach.allows(now_at):
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    return ComplianceTicket(**view)


@router.get(
    "/compliance/summary",
    response_model=ComplianceSummary,
    responses=CSV_ANSWER,
    tags=["compliance"],
    summary="Compliance rate, SLA attainment, first-time fix, satisfaction, NPS, complaints",
    description="Grouped by region, service point, technician (the ticket's latest "
    "dispatch) or month of receipt (UTC). Rates are percentages of the decided tickets "
    "(pending ones are counted separately); satisfaction, bands and NPS count every "
    "follow-up. Each group carries the service-level targets (settings) with `met`.",
)
async def compliance_summary(
    request: Request,
    group_by: Literal["region", "service_point", "technician", "month"] = "region",
    month: IsoMonth | None = Query(default=None, description="YYYY-MM (UTC)"),
    region: RegionFilter | None = None,
    service_point: NetworkIdFilter | None = None,
    format: Literal["json", "csv"] | None = Query(default=None, description=FORMAT_DESCRIPTION),
    principal: Principal = Depends(may_read_reports),
    platform: Platform = Depends(get_platform),
) -> Any:
    filters = read_models.ComplianceFilters(
        region=region,
        month=month,
        service_point_id=service_point,
        reach=principal.reach,
    )
    settings = platform.settings.feedback
    result = await platform.db.read(lambda c: read_models.summary(c, filters, group_by, settings))
    if wants_csv(request, format):
        groups = [*result["groups"], {**result["total"], "key": "TOTAL"}]
        return csv_response(
            [group_by, *read_models.SUMMARY_CSV_COLUMNS[1:]],
            (read_models.summary_csv_row(g) for g in groups),
            f"compliance-summary-{group_by}.csv",
        )
    return ComplianceSummary(month=month, **result)


@router.get(
    "/scorecards",
    response_model=Scorecards,
    tags=["scorecards"],
    summary="Monthly service-point scores (deductions traced to events) and staff KPIs",
)
async def get_scorecards(
    month: Annotated[IsoMonth, Query(description="YYYY-MM (UTC)")],
    service_point: NetworkIdFilter | None = None,
    principal: Principal = Depends(may_read_reports),
    platform: Platform = Depends(get_platform),
) -> Scorecards:
    settings, region = platform.settings.feedback, principal.reach.region
    # A month to come anywhere (the items' own rule: a day is today somewhere up to UTC+14):
    # every point would show its base score.
    if month > latest_today(platform.clock.now()).strftime("%Y-%m"):
        raise InvalidCommand("month", f"{month} is to come: nothing to score yet")
    data = await platform.db.read(
        lambda c: read_models.scorecards(
            c, month, settings, service_point_id=service_point, region=region
        )
    )
    return Scorecards(**data)


@router.post(
    "/scorecards/items",
    status_code=201,
    response_model=ScorecardItemAccepted,
    tags=["scorecards"],
    summary="Enter a manual scorecard item (poor service, falsified records, media coverage)",
    description="For a service point of the network (its id as registered on dispatch): "
    "422 `service_point_id` for an unknown id or another level of the network; 422 "
    "`ticket_ids.N` for an id that names no ticket within the caller's reach or is given "
    "twice; 422 `occurred_on` for a day in the future, before 1950-01-01 or before the "
    "point joined the network.",
)
async def record_scorecard_item(
    body: ScorecardItemRequest, call: ScorecardItemCall
) -> JSONResponse:
    item = body.command()
    return await call.run(
        "scorecard-item",
        body,
        lambda c: item_accepted(commands.record_scorecard_item(c, call.handling, item)),
    )


@router.get(
    "/quality/weekly",
    response_model=QualityWeekly,
    tags=["quality"],
    summary="Weekly quality report: alerts raised and repairs per model and fault category",
)
async def quality_weekly(
    week: Annotated[IsoWeek, Query(description="ISO week, e.g. 2026-W47")],
    principal: Principal = Depends(may_read_reports),
    platform: Platform = Depends(get_platform),
) -> QualityWeekly:
    try:
        read_models.iso_week_days(week)
    except ValueError:
        raise InvalidCommand("week", f"{week} is not a week of that year") from None
    settings = platform.settings.feedback
    data = await platform.db.read(
        lambda c: read_models.quality_weekly(c, week, settings, principal.region)
    )
    return QualityWeekly(**data)

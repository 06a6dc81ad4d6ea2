"""Feedback's HTTP routes: thin — parse, call a command handler or a read model, shape."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from services.feedback import domain, read_models
from services.feedback.commands import FeedbackCommands
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
from shared.app.commands import TicketCommandResult
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.context import Principal, allow, command_context, require_region
from shared.http.headers import expected_version, idempotency_key
from shared.http.idempotency import CommandResponse, idempotent_command
from shared.http.params import (
    IsoMonth,
    IsoWeek,
    NetworkIdFilter,
    RegionFilter,
    TicketNumber,
    UtcTime,
)
from shared.http.problems import PROBLEM_RESPONSES
from shared.kernel.errors import InvalidCommand, NotFound
from shared.kernel.events.quality import ScorecardItemRecorded
from shared.kernel.ticket import TicketState

SERVICE = "feedback"
router = APIRouter(responses=PROBLEM_RESPONSES)

READERS = ("auditor", "admin", "regional_center", "dispatcher")


def accepted(result: TicketCommandResult) -> dict[str, Any]:
    types = [e.event_type for e in result.events]
    outcome = (
        "closed"
        if "TicketClosed" in types
        else "reopened"
        if "TicketReopened" in types
        else "recorded"
    )
    return FeedbackAccepted(
        ticket_id=result.after.ticket_id,
        status=result.after.status.value,
        version=result.after.version,
        outcome=outcome,
        events=[str(e.event_id) for e in result.events],
    ).model_dump(mode="json")


def in_region(principal: Principal, ticket_id: str) -> Any:
    """A decide wrapper: outside the caller's region the ticket does not exist for it."""

    def check(state: TicketState) -> None:
        if state.exists:
            require_region(principal, state.region, "ticket", ticket_id)

    return check


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
    ticket_id: UUID,
    body: FollowUpRequest,
    request: Request,
    principal: Principal = Depends(allow("customer_relations", "admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)
    command = domain.RecordFollowUp(
        satisfaction_score=body.satisfaction_score,
        would_recommend=body.would_recommend,
        problem_solved=body.problem_solved,
        channel=body.channel,
        comment=body.comment,
    )

    async def run(conn: AsyncConnection) -> CommandResponse:
        result = await FeedbackCommands(platform).record_follow_up(
            conn,
            str(ticket_id),
            command,
            context,
            version,
            authorize=in_region(principal, str(ticket_id)),
        )
        return CommandResponse(201, accepted(result))

    return await idempotent_command(
        platform,
        principal,
        scope=f"{SERVICE}:follow-up:{ticket_id}",
        key=key,
        body=body,
        command=run,
    )


@router.post(
    "/tickets/{ticket_id}/complaints",
    status_code=201,
    response_model=FeedbackAccepted,
    tags=["follow-ups"],
    summary="File a complaint (ComplaintFiled); against a closed ticket it reopens it",
    description="A complaint against a closed ticket also records TicketReopened (source "
    "complaint) and TicketEscalated. A public complaint or media exposure is a scorecard "
    "deduction for the service point.",
)
async def file_complaint(
    ticket_id: UUID,
    body: ComplaintRequest,
    request: Request,
    principal: Principal = Depends(allow("customer_relations", "call_center_agent", "admin")),
    key: str | None = Depends(idempotency_key),
    version: int | None = Depends(expected_version),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    context = command_context(request, principal.actor, SERVICE)
    command = domain.FileComplaint(
        complaint=body.complaint, channel=body.channel, public=body.public
    )

    async def run(conn: AsyncConnection) -> CommandResponse:
        result = await FeedbackCommands(platform).file_complaint(
            conn,
            str(ticket_id),
            command,
            context,
            version,
            authorize=in_region(principal, str(ticket_id)),
        )
        return CommandResponse(201, accepted(result))

    return await idempotent_command(
        platform,
        principal,
        scope=f"{SERVICE}:complaint:{ticket_id}",
        key=key,
        body=body,
        command=run,
    )


def wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    return "text/csv" in request.headers.get("accept", "")


def csv_response(header: list[str], rows: Iterable[list[Any]], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def scoped_region(principal: Principal, region: str | None) -> tuple[str | None, bool]:
    """(region to filter by, whether anything can match) for a region-bound caller."""
    asked = region.lower() if region else None
    if principal.region is None:
        return asked, True
    return principal.region, asked in (None, principal.region)


ItemStatus = Literal["true", "false", "pending"]
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


@router.get(
    "/compliance/tickets",
    response_model=ComplianceTicketPage,
    tags=["compliance"],
    summary="Per-ticket closed-loop checklist with evidence (JSON pages or CSV)",
    description="Each item is true, false or pending with the ids of the events that "
    "decide it. Ordered by ticket number; pass `next_cursor` as `cursor`. The CSV holds "
    "every matching row.",
)
async def compliance_tickets(
    request: Request,
    region: RegionFilter | None = None,
    service_point: NetworkIdFilter | None = None,
    technician: NetworkIdFilter | None = None,
    month: IsoMonth | None = Query(default=None, description="YYYY-MM (UTC)"),
    compliant: ItemStatus | None = None,
    failing: ItemName | None = Query(default=None, description="Only tickets failing this item."),
    cursor: TicketNumber | None = Query(
        default=None, description="`next_cursor` of the previous page (a ticket number)."
    ),
    limit: int = Query(default=50, ge=1, le=500),
    format: Literal["json", "csv"] | None = Query(default=None, description=FORMAT_DESCRIPTION),
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> Any:
    region, visible = scoped_region(principal, region)
    filters = read_models.ComplianceFilters(
        region=region,
        service_point_id=service_point,
        technician_id=technician,
        month=month,
        compliant=compliant,
        failing=failing,
    )
    as_csv = wants_csv(request, format)
    rows: list[Any] = []
    if visible:
        async with platform.db.reading() as conn:
            rows = await read_models.list_compliance_rows(
                conn, filters, after=None if as_csv else cursor, limit=None if as_csv else limit + 1
            )
    if as_csv:
        return csv_response(
            read_models.ticket_csv_header(),
            (read_models.ticket_csv_row(r) for r in rows),
            "compliance-tickets.csv",
        )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = rows[-1].ticket_number
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
    principal: Principal = Depends(allow(*READERS, "customer_relations")),
    platform: Platform = Depends(get_platform),
) -> ComplianceTicket:
    async with platform.db.reading() as conn:
        if as_of is None:
            row = await read_models.compliance_row(conn, str(ticket_id))
        else:
            row = await read_models.compliance_row_as_of(
                conn, platform.store, str(ticket_id), as_of
            )
    if row is None:
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    view = read_models.ticket_view(row)
    require_region(principal, view["region"], "ticket", str(ticket_id))
    return ComplianceTicket(**view)


@router.get(
    "/compliance/summary",
    response_model=ComplianceSummary,
    tags=["compliance"],
    summary="Compliance rate, SLA attainment, first-time fix, satisfaction, NPS, complaints",
    description="Grouped by region, service point, technician (the ticket's latest "
    "dispatch) or month of receipt (UTC). Rates are percentages of the decided tickets "
    "(pending ones are counted separately); satisfaction, bands and NPS count every "
    "follow-up.",
)
async def compliance_summary(
    request: Request,
    group_by: Literal["region", "service_point", "technician", "month"] = "region",
    month: IsoMonth | None = Query(default=None, description="YYYY-MM (UTC)"),
    region: RegionFilter | None = None,
    service_point: NetworkIdFilter | None = None,
    format: Literal["json", "csv"] | None = Query(default=None, description=FORMAT_DESCRIPTION),
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> Any:
    region, visible = scoped_region(principal, region)
    filters = read_models.ComplianceFilters(
        region=region, month=month, service_point_id=service_point
    )
    rows: list[Any] = []
    if visible:
        async with platform.db.reading() as conn:
            rows = await read_models.list_compliance_rows(conn, filters)
    result = read_models.summary(rows, group_by, platform.settings.feedback)
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
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> Scorecards:
    async with platform.db.reading() as conn:
        data = await read_models.scorecards(
            conn,
            month,
            platform.settings.feedback,
            service_point_id=service_point,
            region=principal.region,
        )
    return Scorecards(**data)


@router.post(
    "/scorecards/items",
    status_code=201,
    response_model=ScorecardItemAccepted,
    tags=["scorecards"],
    summary="Enter a manual scorecard item (poor service, falsified records, media coverage)",
)
async def record_scorecard_item(
    body: ScorecardItemRequest,
    request: Request,
    principal: Principal = Depends(allow("admin")),
    key: str | None = Depends(idempotency_key),
    platform: Platform = Depends(get_platform),
) -> JSONResponse:
    if body.occurred_on > platform.clock.now().date():
        raise InvalidCommand("occurred_on", "the date is in the future")
    context = command_context(request, principal.actor, SERVICE)
    item = ScorecardItemRecorded(**body.model_dump())

    async def run(conn: AsyncConnection) -> CommandResponse:
        event = await FeedbackCommands(platform).record_scorecard_item(conn, item, context)
        return CommandResponse(
            201,
            ScorecardItemAccepted(
                event_id=str(event.event_id),
                service_point_id=item.service_point_id,
                item=item.item.value,
                month=item.occurred_on.strftime("%Y-%m"),
            ).model_dump(mode="json"),
        )

    return await idempotent_command(
        platform, principal, scope=f"{SERVICE}:scorecard-item", key=key, body=body, command=run
    )


@router.get(
    "/quality/weekly",
    response_model=QualityWeekly,
    tags=["quality"],
    summary="Weekly quality report: alerts raised and repairs per model and fault category",
)
async def quality_weekly(
    week: Annotated[IsoWeek, Query(description="ISO week, e.g. 2026-W47")],
    principal: Principal = Depends(allow(*READERS)),
    platform: Platform = Depends(get_platform),
) -> QualityWeekly:
    async with platform.db.reading() as conn:
        data = await read_models.quality_weekly(conn, week, platform.settings.feedback)
    return QualityWeekly(**data)

"""Audit export over HTTP: events with their hashes and a signed summary."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from shared.app.audit import render, select_events, signing_key, summarise
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.context import Principal, allow, region_asked
from shared.http.params import RegionFilter, UtcTime
from shared.http.problems import problem_doc
from shared.kernel.errors import InvalidCommand, NotFound
from shared.kernel.events.envelope import canonical_json

router = APIRouter(tags=["audit"])

# Exports are evidence: unmasked (they must verify against the ledger), hence few roles.
AUDIT_ROLES = ("auditor", "regional_center", "admin")
may_export = allow(*AUDIT_ROLES, scope="audit:export")


@router.get(
    "/audit/export",
    summary="A ticket's or a period's events as JSON lines or CSV, with a signed summary",
    description="The body is the export; the `X-Export-Summary` header holds the summary "
    "(event count, positions, SHA-256 of the body, HMAC signature). Keep both: "
    "`ticketline verify-export` checks them later against each other and the ledger.",
    response_class=Response,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}},
        404: problem_doc("Another region than the caller's, or an unknown ticket"),
    },
)
async def export_events(
    ticket_id: UUID | None = None,
    region: RegionFilter | None = None,
    recorded_from: UtcTime | None = Query(default=None, description="Inclusive, ISO 8601."),
    recorded_to: UtcTime | None = Query(default=None, description="Exclusive, ISO 8601."),
    format: Literal["jsonl", "csv"] = "jsonl",
    principal: Principal = Depends(may_export),
    platform: Platform = Depends(get_platform),
) -> Response:
    region = region_asked(principal, region)
    for name, value in (("recorded_from", recorded_from), ("recorded_to", recorded_to)):
        if value is not None and value.tzinfo is None:
            raise InvalidCommand(name, "give a timezone, e.g. 2026-11-20T10:00:00Z")
    scope = {
        "ticket_id": str(ticket_id) if ticket_id else None,
        "region": region,
        "recorded_from": recorded_from.isoformat() if recorded_from else None,
        "recorded_to": recorded_to.isoformat() if recorded_to else None,
    }
    envelopes = await platform.db.read(
        lambda c: select_events(
            c,
            ticket_id=scope["ticket_id"],
            region=region,
            recorded_from=recorded_from,
            recorded_to=recorded_to,
        )
    )
    if ticket_id and not envelopes:
        # Unknown, or (for a regional caller) another region's: the same answer.
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    data = render(envelopes, format)
    summary = summarise(data, envelopes, format, scope, signing_key(platform.settings))
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    return Response(
        data,
        media_type=media,
        headers={
            "X-Export-Summary": canonical_json(summary),
            "Content-Disposition": f'attachment; filename="ticketline-export.{format}"',
            "Cache-Control": "no-store",
        },
    )

"""Audit export over HTTP: events with their hashes and a signed summary."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import BinaryIO, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from shared.app.audit import (
    ExportFormat,
    ExportScope,
    export_summary,
    signing_key,
    ticket_region,
    write_export,
)
from shared.app.platform import Platform
from shared.http.app import get_platform
from shared.http.context import Principal, allow, region_asked
from shared.http.params import RegionFilter, UtcTime, require_period, wants_csv
from shared.http.problems import problem_doc
from shared.kernel.errors import NotFound
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
    "`ticketline verify-export` checks them later against each other and the ledger. "
    "With `ticket_id`, the ticket's whole history (as `GET /tickets/{id}/history` shows "
    "it), to a regional caller (or with `region`) only while the ticket is in that region "
    "— a ticket moved to another region is theirs from then on, all of it.",
    response_class=Response,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "headers": {
                "X-Export-Summary": {
                    "description": "The signed summary, canonical JSON: `format`, `scope`, "
                    "`events` (count), `first_position`, `last_position`, `sha256` of the "
                    "body, `signature` (HMAC-SHA256); and `not_matching_hash` (`events`, "
                    "the first ten `positions`) when rows no longer match their hash in "
                    "the ledger: exported as stored, said in the signed summary.",
                    "schema": {"type": "string"},
                }
            },
        },
        404: problem_doc("Another region than the caller's, or an unknown ticket"),
    },
)
async def export_events(
    request: Request,
    ticket_id: UUID | None = None,
    region: RegionFilter | None = None,
    recorded_from: UtcTime | None = Query(default=None, description="Inclusive, ISO 8601."),
    recorded_to: UtcTime | None = Query(default=None, description="Exclusive, ISO 8601."),
    format: Literal["jsonl", "csv"] | None = Query(
        default=None, description="Default: `csv` with `Accept: text/csv`, else `jsonl`."
    ),
    principal: Principal = Depends(may_export),
    platform: Platform = Depends(get_platform),
) -> Response:
    chosen: ExportFormat = "csv" if wants_csv(request, format) else "jsonl"
    region = region_asked(principal, region)
    require_period(("recorded_from", recorded_from), ("recorded_to", recorded_to))
    if ticket_id and region:
        # The ticket's region now, not each event's: one moved stays whole with its owner.
        if await platform.db.read(lambda c: ticket_region(c, str(ticket_id))) != region:
            raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
        region = None
    scope = ExportScope(str(ticket_id) if ticket_id else None, region, recorded_from, recorded_to)
    # Spooled to an unnamed file (gone when closed, whatever happens), then sent from it:
    # the summary header needs the whole body's digest first, memory stays flat.
    spool = tempfile.TemporaryFile(prefix="ticketline-export-")  # noqa: SIM115
    try:
        tally = await platform.db.read(lambda c: write_export(c, spool, chosen, scope))
        if ticket_id and not tally.events:
            # Unknown, or (for a regional caller) another region's: the same answer.
            raise NotFound("ticket_not_found", f"no ticket {ticket_id}")
    except BaseException:
        spool.close()
        raise
    summary = export_summary(tally, chosen, scope.as_summary(), signing_key(platform.settings))
    size = spool.tell()
    spool.seek(0)
    media = "application/x-ndjson" if chosen == "jsonl" else "text/csv"
    return StreamingResponse(
        _sent(spool),
        media_type=media,
        headers={
            "X-Export-Summary": canonical_json(summary),
            "Content-Disposition": f'attachment; filename="ticketline-export.{chosen}"',
            "Cache-Control": "no-store",
            "Content-Length": str(size),
        },
    )


async def _sent(spool: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(spool.read, 1 << 20):
            yield chunk
    finally:
        spool.close()

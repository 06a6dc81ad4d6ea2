"""Server-Sent Events: the event streams for regional centers that cannot reach Kafka.

``GET /streams/events?region=east&types=TicketReceived,TicketRepaired`` streams events in
global order. Each SSE message's ``id`` is the event's global position: a client that
reconnects with ``Last-Event-ID`` resumes right after it, with no gap and no duplicate
(positions are gap-free and become visible in order). The server reads at most
``batch`` events ahead per client and only reads more as the client consumes them, so a
slow client holds a bounded backlog.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Connection, Row, select

from shared.app.platform import Platform
from shared.eventstore.db import DatabaseUnavailable
from shared.eventstore.driver import rows_tolerating_damage
from shared.eventstore.ledger import row_to_envelope
from shared.eventstore.tables import CUSTOMER_STREAM, events
from shared.http.app import get_platform
from shared.http.auth.personal_data import mask_payload
from shared.http.context import Principal, allow, credentials_expire_at, region_asked
from shared.http.headers import last_event_id
from shared.http.params import ASCII_COUNT, Position, RegionFilter
from shared.http.problems import ProblemError, problem_doc
from shared.kernel.errors import InvalidCommand
from shared.kernel.events.envelope import EventEnvelope, canonical_json
from shared.kernel.events.registry import UnreadableEvent, all_payload_classes
from shared.kernel.text import escape_line_separators
from shared.readmodels.ticket_state import region_held_before, seen_by_region, ticket_state

log = logging.getLogger("ticketline.streams")

router = APIRouter(tags=["streams"])

HEARTBEAT_SECONDS = 15.0

may_subscribe = allow("regional_center", "dispatcher", "auditor", "admin", scope="events:read")


def format_sse(event: EventEnvelope, *, masked: bool = False) -> str:
    document = event.to_json_dict()
    if masked:
        # Roles without access to personal data get it masked; such an event no longer
        # matches its hash (auditors verify with /audit/export, which is unmasked).
        document["payload"] = mask_payload(document["payload"])
    # One data line per event, whatever line-splitting the client does (U+2028, …).
    data = escape_line_separators(canonical_json(document))
    return f"id: {event.position}\nevent: {event.event_type}\ndata: {data}\n\n"


async def start_after(platform: Platform, resume_after: int | None, asked: int | None) -> int:
    """Where a stream starts: after its Last-Event-ID, else the position asked for, else
    now (the ledger's last position). A position past the ledger's end came from another
    ledger (another deployment, or this one restored from an older backup): following from
    it would skip every event up to it in silence, so it is refused."""
    head = await platform.db.read(platform.store.last_position)
    start, field = (
        (resume_after, "Last-Event-ID") if resume_after is not None else (asked, "from_position")
    )
    if start is None:
        return head
    if start > head:
        message = f"past the ledger's last position, {head}: not a position of this ledger"
        raise ProblemError(
            409,
            "position-ahead",
            "The position is past the ledger's end",
            f"position {start} is {message} (another deployment's, or one restored from an "
            f"older backup): resume from {head} to follow new events, or from 0",
            rule="position_ahead",
            errors=[{"field": field, "message": message}],
        )
    return start


# The event that ends a stream whose database went away once the answer had started (no
# 503 then): the client reconnects after the stream's `retry` from its last id.
UNAVAILABLE_SSE = "event: unavailable\ndata: the database is unavailable; reconnect\n\n"


# The event that ends a stream when its server stops (Ctrl+C, a deployment's SIGTERM): the
# client reconnects, to another replica or the restarted process, from its last id.
STOPPING_SSE = "event: unavailable\ndata: the server is stopping; reconnect\n\n"


def server_stopping(request: Request) -> bool:
    """Whether the request's server is stopping (set by ``shared.app.runtime``)."""
    return bool(getattr(request.app.state, "stopping", False))


def stream_end(request: Request, expires_at: float | None) -> str | None:
    """The event that ends a stream now, if one does: its server is stopping, or its token
    expired (the stream ends as any request would be refused; the client reconnects with a
    new one, from its Last-Event-ID)."""
    if server_stopping(request):
        return STOPPING_SSE
    if expires_at is not None and time.time() >= expires_at:
        return "event: expired\ndata: the token expired\n\n"
    return None


def sse_response(stream: AsyncIterator[str]) -> StreamingResponse:
    """A Server-Sent Events answer: never cached, never buffered by a proxy."""
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def damaged_sse(damaged: UnreadableEvent) -> str:
    """The event that ends a stream at a stored row that makes no event."""
    detail = json.dumps({"position": damaged.position, "detail": damaged.explained})
    return f"event: ledger-damaged\ndata: {detail}\n\n"


class StreamRead(NamedTuple):
    found: list[EventEnvelope]
    damaged: UnreadableEvent | None  # the first stored row that makes no event
    read_to: int  # every event up to here was looked at (matching or not)


async def read_after(
    platform: Platform, position: int, region: str | None, types: list[str], limit: int
) -> StreamRead:
    """The next events, up to the first stored row that makes no event (and that row's
    error: the stream sends what comes before it, then says where it stops). A filtered
    stream reads up to the ledger's head as it was first read (every position up to a
    visible one is visible), so one that finds no match moves on past what it read: one
    waiting for a rare type reads each event once, not every one since its last match
    at every poll."""
    query = (
        select(events).where(events.c.position > position).order_by(events.c.position).limit(limit)
    )
    if region:
        query = query.where(seen_by_region(region))
    if types:
        query = query.where(events.c.event_type.in_(types))

    def read(c: Connection) -> tuple[int | None, Sequence[Row[Any]]]:
        head = platform.store.last_position(c) if region or types else None
        bounded = query if head is None else query.where(events.c.position <= head)
        return head, rows_tolerating_damage(c, bounded)

    head, rows = await platform.db.read(read)
    found: list[EventEnvelope] = []
    damaged: UnreadableEvent | None = None
    for row in rows:
        try:
            found.append(row_to_envelope(row))
        except UnreadableEvent as exc:
            damaged = exc
            break
    if region and any(e.stream_type == CUSTOMER_STREAM for e in found):
        found = await platform.db.read(lambda c: reduced_for_region(c, region, found))
    if head is not None and damaged is None and len(rows) < limit:
        read_to = head
    else:
        read_to = found[-1].position if found else position
    return StreamRead(found, damaged, read_to)


# What a region's stream keeps of a customer's erasure or legal hold (it gets those of
# customers whose tickets it held: ``seen_by_region``): ids and an erasure's source, and
# of the tickets an erasure lists, those the region held (another region's ticket does
# not exist for it); request, legal basis and reason are text for the whole platform, in
# their place ``WITHHELD`` — so the event still reads as its published schema, whose
# fields they are. Reduced, the event no longer matches its hash, as a masked one does
# (auditors verify with /audit/export).
_REGION_KEEPS = {"CustomerDataErased": ("customer_id", "source", "tickets")}
WITHHELD = "[withheld]"


def reduced_for_region(
    conn: Connection, region: str, found: list[EventEnvelope]
) -> list[EventEnvelope]:
    out: list[EventEnvelope] = []
    for event in found:
        if event.stream_type != CUSTOMER_STREAM:
            out.append(event)
            continue
        p = event.payload
        keeps = _REGION_KEEPS.get(event.event_type, ("customer_id",))
        kept = {
            k: v if k in keeps else WITHHELD
            for k, v in p.items()
            if k in keeps or isinstance(v, str)
        }
        if "tickets" in kept:
            held = region_held_before(region, event.position)
            theirs = held.where(ticket_state.c.ticket_id.in_(list(p["tickets"]))).distinct()
            found_here = set(conn.execute(theirs).scalars())
            kept["tickets"] = [t for t in p["tickets"] if t in found_here]
        out.append(EventEnvelope.trusted({**event.__dict__, "payload": kept}))
    return out


def parse_types(types: str | None) -> list[str]:
    """The event types asked for; none asked (no parameter) = every type. A parameter that
    names no type (``types=``), or has an empty item (``types=A,,B``), is a malformed
    filter, not "every type"."""
    if types is None:
        return []
    chosen = [t.strip() for t in types.split(",")]
    if not any(chosen):
        raise InvalidCommand("types", "name at least one event type, e.g. TicketReceived")
    if not all(chosen):
        raise InvalidCommand("types", "an empty item: event types separated by single commas")
    known = all_payload_classes()
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise InvalidCommand("types", f"unknown event types: {', '.join(unknown)}")
    return chosen


@router.get(
    "/streams/events",
    summary="Follow events live (Server-Sent Events), resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "An endless SSE stream"},
        404: problem_doc("Another region than the caller's"),
        409: problem_doc(
            "The position (`Last-Event-ID` or `from_position`) is past the ledger's end: "
            "not a position of this ledger (`position-ahead`)"
        ),
    },
)
async def stream_events(
    request: Request,
    region: RegionFilter | None = Query(default=None, description="Only this region's events."),
    types: str | None = Query(
        default=None, max_length=4000, description="Comma-separated event types."
    ),
    from_position: Position | None = Query(
        default=None,
        description="Start after this global position (0 = from the beginning). Without it "
        "and without Last-Event-ID the stream starts with events recorded from now on.",
    ),
    batch: Annotated[
        int, Query(ge=1, le=1000, description="Events read ahead per client."), ASCII_COUNT
    ] = 100,
    principal: Principal = Depends(may_subscribe),
    resume_after: int | None = Depends(last_event_id),
    platform: Platform = Depends(get_platform),
) -> StreamingResponse:
    chosen = parse_types(types)
    region_filter = region_asked(principal, region)
    masked = not principal.sees_personal_data
    position = await start_after(platform, resume_after, from_position)
    poll = platform.settings.projector_poll_seconds
    expires_at = credentials_expire_at(request)

    async def generate() -> AsyncIterator[str]:
        nonlocal position
        yield f"retry: 2000\n: streaming after position {position}\n\n"
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            if (end := stream_end(request, expires_at)) is not None:
                yield end
                return
            try:
                found, damaged, read_to = await read_after(
                    platform, position, region_filter, chosen, batch
                )
            except DatabaseUnavailable:
                yield UNAVAILABLE_SSE
                return
            for event in found:
                yield format_sse(event, masked=masked)
            position = max(position, read_to)
            if damaged is not None:
                # The answer has started: the stream ends with an event saying why (the
                # client's reconnect from its Last-Event-ID meets the same row).
                log.error("unreadable event at position %s", damaged.position)
                yield damaged_sse(damaged)
                return
            if found:
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(poll)

    return sse_response(generate())

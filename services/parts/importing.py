"""The parts service's imports: stock locations, the part catalogue, stock on hand (an
opening balance per location and part) and historical usage per location, part and month
(which replenishment averages). Each is decided by the parts service's own decide
functions. Formats: ``docs/import/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, case, func, select

from services.parts import domain, read_models
from services.parts.schemas import LocationRequest
from services.parts.tables import (
    parts_catalogue,
    parts_locations,
    parts_monthly_usage,
    parts_stock,
)
from shared.app.importing.fields import Column, Fields, Problem, RowFailed
from shared.app.importing.kinds import (
    Kind,
    KindContext,
    Parsed,
    Segment,
    Verdict,
    conflict,
    each,
    guarded,
    run_at,
)
from shared.eventstore.db import utc_from_stored
from shared.eventstore.ledger import EventStore, StreamHead
from shared.eventstore.tables import events
from shared.kernel.events.parts import LocationId, LocationLevel, PartNumber, UsageHistoryRecorded

SERVICE = "parts"
_LOCATION = TypeAdapter(LocationId)
_PART = TypeAdapter(PartNumber)
_LEVEL_ORDER = {"headquarters": 0, "regional_center": 1}


def location_id(f: Fields, column: str, *, required: bool = False) -> str | None:
    return f.identifier(
        column, _LOCATION, max_length=24, allowed="letters, digits and . _ -", required=required
    )


def part_number(f: Fields, column: str, *, required: bool = False) -> str | None:
    return f.identifier(
        column, _PART, max_length=32, allowed="letters, digits and . _ -", required=required
    )


def _place(
    conn: Connection, context: KindContext, line: int, column: str, given: str
) -> domain.Place:
    """A registered location (this file's earlier rows first), or the row's problem."""
    memory: dict[str, domain.Place] = context.memory.setdefault("parts.locations", {})
    place = memory.get(domain.location_key(given)) or read_models.find_place(conn, given)
    if place is None:
        raise RowFailed([Problem(line, column, f"no location {given!r} is registered")])
    return place


# --- locations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocationRow:
    location_id: str
    request: domain.NewLocation
    registered_at: datetime


class Locations(Kind):
    name = "locations"
    service = SERVICE
    title = "Stock locations (headquarters, regional centers, service points)"
    key_column = "location_id"
    columns = (
        Column("location_id", True, "Use the dispatch service points' ids (any case)."),
        Column("name", True),
        Column("level", True, "headquarters, regional_center, service_point."),
        Column(
            "parent_id",
            False,
            "The next location up (on an earlier line): a regional center's is headquarters, "
            "a service point's a regional center.",
        ),
        Column("region", False, "Default: the parent's; a service point's is its parent's."),
        Column("registered_at", False, "Default: the import."),
    )

    def parse(self, f: Fields, context: KindContext) -> LocationRow | None:
        lid = location_id(f, "location_id", required=True)
        values = {
            "name": f.text("name", required=True, max_length=200),
            "level": f.choice("level", LocationLevel, required=True),
            "parent_id": location_id(f, "parent_id"),
            "region": f.text("region"),
        }
        # PUT /locations' own request model: the same rules (a region code in lower case).
        request = f.model(LocationRequest, {k: k for k in values}, **values)
        at = f.timestamp("registered_at") or context.now
        if lid is None or request is None:
            return None
        return LocationRow(lid, request.command(), at)

    def key(self, item: LocationRow) -> str:
        return domain.location_key(item.location_id)

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        memory: dict[str, domain.Place] = context.memory.setdefault("parts.locations", {})

        def one(parsed: Parsed) -> Verdict:
            row: LocationRow = parsed.item
            r = row.request
            existing = read_models.get_location(conn, row.location_id)
            if existing is not None:
                same = (existing.name, existing.level, existing.parent_id) == (
                    r.name,
                    r.level.value,
                    r.parent_id,
                )
                if not same or (r.region is not None and r.region != existing.region):
                    raise conflict(
                        parsed.line,
                        "location_id",
                        f"location {row.location_id}",
                        remedy="a location keeps what it was registered with",
                    )
                return Verdict(parsed.line, present=True)
            parent = (
                _place(conn, context, parsed.line, "parent_id", r.parent_id)
                if r.parent_id
                else None
            )
            command = domain.RegisterLocation(r, parent)
            state = domain.LocationState(row.location_id)
            events, after = guarded(
                parsed.line,
                "level",
                lambda: run_at(
                    domain.LOCATIONS,
                    state,
                    command,
                    domain.decide_register_location,
                    row.registered_at,
                ),
                {
                    "parent_id": "parent_id",
                    "parent_level": "parent_id",
                    "parent_region": "region",
                    "region": "region",
                },
            )
            assert after.registered is not None
            memory[self.key(row)] = domain.Place(
                row.location_id, r.level, after.registered.region, after.registered.parent_id
            )
            stream = domain.location_stream(row.location_id)
            return Verdict(
                parsed.line,
                segments=(Segment(SERVICE, stream, tuple(events), after.registered.region),),
            )

        return each(batch, one)

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any]]:
        c = parts_locations.c
        order = case(_LEVEL_ORDER, value=c.level, else_=2)
        for row in conn.execute(select(parts_locations).order_by(order, c.location_id)):
            yield {
                "location_id": row.location_id,
                "name": row.name,
                "level": row.level,
                "parent_id": row.parent_id,
                "region": row.region,
                "registered_at": row.registered_at,
            }


# --- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class PartRow:
    part_number: str
    spec: domain.PartSpec
    catalogued_at: datetime


class Parts(Kind):
    name = "parts"
    service = SERVICE
    title = "The part catalogue"
    key_column = "part_number"
    columns = (
        Column("part_number", True, "Compared case-insensitively, stored upper-case."),
        Column("name", True),
        Column("fits_models", False, "Product models, ';'-separated; empty: any model."),
        Column("unit_cost", True),
        Column("return_required", False, "true (default): the old part comes back under warranty."),
        Column("catalogued_at", False, "Default: the import."),
    )

    def parse(self, f: Fields, context: KindContext) -> PartRow | None:
        number = part_number(f, "part_number", required=True)
        name = f.text("name", required=True, max_length=200)
        models = tuple(f.items("fits_models"))
        cost = f.number("unit_cost", required=True, minimum=0)
        required = f.boolean("return_required")
        at = f.timestamp("catalogued_at") or context.now
        if number is None or name is None or cost is None:
            return None
        spec = domain.PartSpec(name, models, cost, required is not False).normalised()
        return PartRow(number, spec, at)

    def key(self, item: PartRow) -> str:
        return item.part_number

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        def one(parsed: Parsed) -> Verdict:
            row: PartRow = parsed.item
            existing = read_models.part_spec(conn, row.part_number)
            if existing is not None:
                if existing.normalised() != row.spec:
                    what = f"part {row.part_number}"
                    stored = existing.normalised()
                    raise conflict(
                        parsed.line,
                        "part_number",
                        what,
                        stored,
                        row.spec,
                        remedy=f"change it with PUT /parts/{row.part_number}",
                    )
                return Verdict(parsed.line, present=True)
            state = domain.PartEntry(row.part_number)
            command = domain.PutPart(row.spec)
            events, _ = guarded(
                parsed.line,
                "part_number",
                lambda: run_at(
                    domain.PART_ENTRIES, state, command, domain.decide_put_part, row.catalogued_at
                ),
            )
            stream = domain.part_stream(row.part_number)
            return Verdict(parsed.line, segments=(Segment(SERVICE, stream, tuple(events)),))

        return each(batch, one)

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any]]:
        c = parts_catalogue.c
        for row in conn.execute(select(parts_catalogue).order_by(c.part_number)):
            yield {
                "part_number": row.part_number,
                "name": row.name,
                "fits_models": json.loads(row.fits_models),
                "unit_cost": row.unit_cost,
                "return_required": bool(row.return_required),
                "catalogued_at": row.updated_at,
            }


# --- stock on hand and usage history (stock streams) ----------------------------------------


@dataclass
class _Streams:
    """The stock streams a batch touches: each loaded once, then continued row by row."""

    conn: Connection
    store: EventStore
    states: dict[str, domain.StockLevel]

    def get(self, stream: str) -> tuple[domain.StockLevel, StreamHead | None]:
        state = self.states.get(stream)
        if state is not None:
            return state, None  # after this batch's earlier rows
        events = self.store.read_stream(self.conn, stream)
        state = domain.STOCK_LEVELS.fold(stream, events)
        head = StreamHead(events[-1].stream_version, events[-1].hash) if events else StreamHead()
        self.states[stream] = state
        return state, head


def _stock_parts(
    conn: Connection, context: KindContext, parsed: Parsed, location: str, part: str
) -> tuple[domain.Place, bool]:
    place = _place(conn, context, parsed.line, "location_id", location)
    catalogued = read_models.get_part(conn, part) is not None
    return place, catalogued


@dataclass(frozen=True)
class StockRow:
    location_id: str
    part_number: str
    quantity: int
    counted_at: datetime
    reference: str | None


class Stock(Kind):
    name = "stock"
    service = SERVICE
    title = "Stock on hand per location and part (opening balances)"
    key_column = "part_number"
    columns = (
        Column("location_id", True, "A registered location."),
        Column("part_number", True, "A catalogued part."),
        Column("quantity", True, "On hand, 0 or more."),
        Column("counted_at", False, "When it was counted (default: the import)."),
        Column("reference", False, "e.g. the stock-take's reference."),
    )

    def parse(self, f: Fields, context: KindContext) -> StockRow | None:
        lid = location_id(f, "location_id", required=True)
        number = part_number(f, "part_number", required=True)
        quantity = f.integer("quantity", required=True, minimum=0, maximum=100_000)
        at = f.timestamp("counted_at") or context.now
        if at > context.now:
            f.problem("counted_at", "in the future")
        reference = f.text("reference", max_length=200) or "opening balance (imported)"
        if lid is None or number is None or quantity is None:
            return None
        return StockRow(lid, number, quantity, at, reference)

    def key(self, item: StockRow) -> str:
        return f"{domain.location_key(item.location_id)}\x1f{item.part_number}"

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        streams = _Streams(conn, EventStore(), {})

        def one(parsed: Parsed) -> Verdict:
            row: StockRow = parsed.item
            place, catalogued = _stock_parts(
                conn, context, parsed, row.location_id, row.part_number
            )
            stream = domain.stock_stream(place.location_id, row.part_number)
            state, head = streams.get(stream)
            if state.opening_balance == row.quantity or (row.quantity == 0 and not state.moved):
                return Verdict(parsed.line, present=True)
            if state.opening_balance is not None:
                raise conflict(
                    parsed.line,
                    "quantity",
                    "the opening balance",
                    remedy="correct the stock with POST /stock/adjustments",
                )
            command = domain.RecordOpeningBalance(
                row.quantity, row.counted_at, catalogued, row.reference
            )
            events, after = guarded(
                parsed.line,
                "quantity",
                lambda: run_at(
                    domain.STOCK_LEVELS,
                    state,
                    command,
                    domain.decide_opening_balance,
                    row.counted_at,
                ),
                {"part_number": "part_number", "quantity": "quantity"},
            )
            streams.states[stream] = after
            return Verdict(
                parsed.line, segments=(Segment(SERVICE, stream, tuple(events), place.region, head),)
            )

        return each(batch, one)

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any]]:
        c = parts_stock.c
        query = select(parts_stock).where(c.on_hand > 0).order_by(c.location_id, c.part_number)
        moved = _last_movements(conn)
        for row in conn.execute(query):
            stream = domain.stock_stream(row.location_id, row.part_number)
            yield {
                "location_id": row.location_id,
                "part_number": row.part_number,
                "quantity": row.on_hand,
                # When the stock last moved: usage history recorded since moves none.
                "counted_at": moved.get(stream, row.updated_at),
                "reference": None,
            }


def _last_movements(conn: Connection) -> dict[str, datetime]:
    """Per stock stream, when its latest movement occurred (a recorded month of usage
    history is no movement)."""
    e = events.c
    query = (
        select(e.stream_id, func.max(e.occurred_at))
        .where(e.stream_type == "stock", e.event_type != UsageHistoryRecorded.event_type)
        .group_by(e.stream_id)
    )
    return {stream: utc_from_stored(at) for stream, at in conn.execute(query)}


@dataclass(frozen=True)
class UsageRow:
    location_id: str
    part_number: str
    month: str
    quantity: int


class Usage(Kind):
    name = "usage"
    service = SERVICE
    title = "Historical parts usage per location, part and month (replenishment's input)"
    key_column = "month"
    columns = (
        Column("location_id", True, "A registered location."),
        Column("part_number", True, "A catalogued part."),
        Column("month", True, "YYYY-MM, before the current month."),
        Column("quantity", True, "Units used that month, 0 or more."),
    )

    def parse(self, f: Fields, _context: KindContext) -> UsageRow | None:
        lid = location_id(f, "location_id", required=True)
        number = part_number(f, "part_number", required=True)
        month = f.month("month", required=True)
        quantity = f.integer("quantity", required=True, minimum=0, maximum=10_000_000)
        if lid is None or number is None or month is None or quantity is None:
            return None
        return UsageRow(lid, number, month, quantity)

    def key(self, item: UsageRow) -> str:
        return f"{domain.location_key(item.location_id)}\x1f{item.part_number}\x1f{item.month}"

    def decide(
        self, conn: Connection, batch: Sequence[Parsed], context: KindContext
    ) -> list[Verdict]:
        streams = _Streams(conn, EventStore(), {})
        current = context.now.strftime("%Y-%m")

        def one(parsed: Parsed) -> Verdict:
            row: UsageRow = parsed.item
            place, catalogued = _stock_parts(
                conn, context, parsed, row.location_id, row.part_number
            )
            stream = domain.stock_stream(place.location_id, row.part_number)
            state, head = streams.get(stream)
            if row.month in state.usage_months:
                if state.usage_months[row.month] != row.quantity:
                    raise conflict(
                        parsed.line,
                        "quantity",
                        f"usage for {row.month}",
                        remedy="a month's imported usage is final (it counts in the "
                        "replenishment average while the month is among its last full months)",
                    )
                return Verdict(parsed.line, present=True)
            command = domain.RecordUsageHistory(row.month, row.quantity, current, catalogued)
            events, after = guarded(
                parsed.line,
                "month",
                lambda: run_at(
                    domain.STOCK_LEVELS, state, command, domain.decide_usage_history, context.now
                ),
                {"part_number": "part_number", "month": "month"},
            )
            streams.states[stream] = replace(after, region=place.region)
            return Verdict(
                parsed.line, segments=(Segment(SERVICE, stream, tuple(events), place.region, head),)
            )

        return each(batch, one)

    def export(
        self, conn: Connection, now: datetime, store: EventStore
    ) -> Iterator[dict[str, Any]]:
        """Every month before the current one (the import takes past months only)."""
        c = parts_monthly_usage.c
        current = now.strftime("%Y-%m")
        query = (
            select(parts_monthly_usage)
            .where(c.month < current)
            .order_by(c.location_id, c.part_number, c.month)
        )
        for row in conn.execute(query):
            yield {
                "location_id": row.location_id,
                "part_number": row.part_number,
                "month": row.month,
                "quantity": row.quantity,
            }


LOCATIONS = Locations()
PARTS = Parts()
STOCK = Stock()
USAGE = Usage()
KINDS: tuple[Kind, ...] = (LOCATIONS, PARTS, STOCK, USAGE)

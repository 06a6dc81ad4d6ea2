"""Ticket-state projection: one row per ticket with status, key times, assignee, deadlines.

The personal columns (customer_name, customer_phone, address_line) hold the values as the
ledger stores them — sealed tokens (docs/personal-data.md) — so a rebuild gives the same
rows before and after an erasure; responses open them for callers who may see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache, partial
from typing import Any, ClassVar

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Index,
    Integer,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
)

from shared.eventstore.db import UtcDateTime, metadata
from shared.eventstore.driver import sqlite_driver
from shared.eventstore.projection import Row, RowProjection, _write_time
from shared.eventstore.tables import EVERY_REGIONS_STREAMS, LEDGER_STREAM, events
from shared.eventstore.verify import BrokenLink
from shared.kernel.events.customers import customer_stream_id
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import all_payload_classes, payload_dict
from shared.kernel.lifecycle import STATUS_AFTER_TEXT, TicketStatus
from shared.kernel.reach import Scope
from shared.readmodels.planning import not_by_index

ticket_state = Table(
    "ticket_state",
    metadata,
    Column("ticket_id", String(36), primary_key=True),
    Column("ticket_number", String(32), nullable=False, unique=True),
    Column("status", String(20), nullable=False),
    Column("region", String(32), nullable=False),
    Column("urgency", String(10), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("warranty_status", String(20), nullable=False),
    # The customer (data subject); null only for tickets received before version 2.
    Column("customer_id", String(36), nullable=True),
    Column("customer_name", Text, nullable=False),
    Column("customer_phone", Text, nullable=False),
    Column("address_line", Text, nullable=False),
    Column("product_model", String(200), nullable=False),
    Column("product_line", String(200), nullable=True),
    Column("serial_number", String(200), nullable=True),
    Column("category", String(20), nullable=True),
    Column("complexity", String(10), nullable=True),
    Column("resolution_path", String(20), nullable=True),
    Column("service_point_id", String(200), nullable=True),
    Column("technician_id", String(200), nullable=True),
    Column("appointment_start", UtcDateTime, nullable=True),
    Column("appointment_end", UtcDateTime, nullable=True),
    Column("repair_outcome", String(20), nullable=True),
    Column("satisfaction_score", Integer, nullable=True),
    Column("possible_duplicate_of", String(36), nullable=True),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("responded_at", UtcDateTime, nullable=True),
    Column("diagnosed_at", UtcDateTime, nullable=True),
    Column("dispatched_at", UtcDateTime, nullable=True),
    Column("visited_at", UtcDateTime, nullable=True),
    Column("repaired_at", UtcDateTime, nullable=True),
    Column("followed_up_at", UtcDateTime, nullable=True),
    Column("closed_at", UtcDateTime, nullable=True),
    Column("response_due_at", UtcDateTime, nullable=False),
    Column("resolution_due_at", UtcDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_ticket_state_created_at_ticket_id", "created_at", "ticket_id"),
    # Every filter of the ticket list, ending in its order (migrations 0004, 0006).
    *(
        Index(
            f"ix_ticket_state_{'_'.join(columns)}_created_at_ticket_id",
            *columns,
            "created_at",
            "ticket_id",
        )
        for columns in (
            ("status",),
            ("region",),
            ("region", "status"),
            ("urgency",),
            ("technician_id",),
            # A customer's tickets (phone search goes through the blind index to these).
            ("customer_id",),
        )
    ),
    # A technician's open tickets, counted at every assignment (migration 0012).
    Index("ix_ticket_state_technician_id_status", "technician_id", "status"),
    # A service point's open tickets: the console's board filtered by one (migration 0013).
    Index("ix_ticket_state_service_point_id_status", "service_point_id", "status"),
    # Serial numbers compare case-insensitively (repeat repairs, duplicates; migration 0008).
    Index("ix_ticket_state_serial_key", text("upper(serial_number)")),
    # The console's board and SLA lists: a status and region's tickets in deadline order
    # (migration 0007).
    *(
        Index(
            f"ix_ticket_state_status_region_{deadline}", "status", "region", deadline, "ticket_id"
        )
        for deadline in ("response_due_at", "resolution_due_at", "repaired_at")
    ),
)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _received_row(event: EventEnvelope, p: dict[str, Any]) -> Row:
    customer, address, product = p["customer"], p["address"], p["product"]
    return {
        "ticket_id": event.stream_id,
        "ticket_number": p["ticket_number"],
        "region": address["region"],
        "urgency": p["urgency"],
        "channel": p["channel"],
        "warranty_status": p["warranty_status"],
        "customer_id": p.get("customer_id"),
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "address_line": address["line"],
        "product_model": product["model"],
        "product_line": product.get("product_line"),
        "serial_number": product.get("serial_number"),
        "category": None,
        "complexity": None,
        "resolution_path": None,
        "service_point_id": None,
        "technician_id": None,
        "appointment_start": None,
        "appointment_end": None,
        "repair_outcome": None,
        "satisfaction_score": None,
        "possible_duplicate_of": p.get("possible_duplicate_of"),
        "reopen_count": 0,
        "created_at": event.occurred_at,
        "responded_at": None,
        "diagnosed_at": None,
        "dispatched_at": None,
        "visited_at": None,
        "repaired_at": None,
        "followed_up_at": None,
        "closed_at": None,
        "response_due_at": _time(p["response_due_at"]),
        "resolution_due_at": None,
    }


def _changes(row: Row, event: EventEnvelope, p: dict[str, Any]) -> Row:
    """The columns one event sets on an existing row besides its status (which the
    lifecycle table moves); the payload as stored (JSON types)."""
    at = event.occurred_at
    match event.event_type:
        case "ContactDetailsCorrected":
            values: Row = {}
            if customer := p.get("customer"):
                values |= {"customer_name": customer["name"], "customer_phone": customer["phone"]}
            if address := p.get("address"):
                values |= {"address_line": address["line"], "region": address["region"]}
            return values
        case "TicketDiagnosed":
            return {
                "category": p["category"],
                "complexity": p["complexity"],
                "resolution_path": p["resolution_path"],
                "diagnosed_at": at,
                "resolution_due_at": _time(p["resolution_due_at"]),
                # First contact with the customer is the (first) diagnosis call.
                "responded_at": row["responded_at"] or at,
            }
        case "TicketDispatched":
            return {
                "service_point_id": p["service_point_id"],
                "technician_id": p["technician_id"],
                "appointment_start": _time(p["appointment_start"]),
                "appointment_end": _time(p["appointment_end"]),
                "dispatched_at": at,
            }
        case "TicketVisited":
            return {"visited_at": _time(p["arrived_at"])}
        case "TicketRepaired":
            return {
                "repair_outcome": p["outcome"],
                "repaired_at": at,
            }
        case "FollowUpRecorded":
            return {
                "satisfaction_score": p["satisfaction_score"],
                "followed_up_at": at,
            }
        case "TicketReopened":
            return {
                "reopen_count": row["reopen_count"] + 1,
                "closed_at": None,
            }
        case "TicketClosed":
            return {"closed_at": at}
    return {}


def apply_changes(row: Row | None, event: EventEnvelope) -> Row | None:
    """The ticket's row after one more event: the one definition shared by the projection
    and as-of reads (folding a stream up to a time). Updates ``row`` in place (its owner
    folds a stream or a batch)."""
    p = payload_dict(event)
    if event.event_type == "TicketReceived":
        row = _received_row(event, p)
        row["status"] = TicketStatus.received.value
    elif row is None:
        return None
    else:
        row.update(_changes(row, event, p))
        row["status"] = STATUS_AFTER_TEXT.get(event.event_type, row["status"])
    row["version"] = event.stream_version
    row["updated_at"] = event.recorded_at
    return row


class TicketStateProjection(RowProjection):
    name: ClassVar[str] = "ticket_state"
    tables: ClassVar[tuple[Table, ...]] = (ticket_state,)
    stream_types: ClassVar[tuple[str, ...]] = ("ticket",)
    table: ClassVar[Table] = ticket_state
    envelope_fields: ClassVar[frozenset[str]] = frozenset(
        {"stream_id", "stream_version", "event_type", "schema_version"}
        | {"occurred_at", "recorded_at", "payload"}
    )

    def key(self, event: EventEnvelope) -> tuple[str]:
        return (event.stream_id,)

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        return apply_changes(row, event)

    def fold_in_database(self, conn: Connection, head: int) -> None:
        """A rebuild's fold of every ticket up to ``head`` as one statement (``_fold_sql``),
        with each stream's applied version: ~5x the rate of folding event by event. A
        ledger the statement cannot fold (an event of an older schema version or an
        unknown type, a stream not opened by its one TicketReceived) fails it with an
        IntegrityError, and the runner folds event by event instead — with the upcasts,
        and parking what cannot be applied."""
        values = {"head": head, "projection": self.name}
        raw = sqlite_driver(conn)
        if raw is None:
            # For this transaction: its sorts of every ticket event by stream in memory, not
            # in temporary files, and no JIT compiling (planned on tables never analysed,
            # it compiles for longer than it saves): -27 % on a 1M-event rebuild.
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            conn.execute(text("SET LOCAL jit = off"))
            conn.execute(text(_fold_sql(postgres=True)), values)
            return
        raw.create_function("ticketline_time", 1, _stored_time, deterministic=True)
        conn.execute(text(_fold_sql(postgres=False)), values)
        conn.execute(text(_SQLITE_VERSIONS), values)


# --- the same fold as one statement (a rebuild from the first event) ----------------------
# Every column of a ticket's row is what the last event setting it left there (or a count,
# or the first diagnosis), so the row is read off a dozen of its events: one pass over the
# ledger groups the ticket events by stream and marks those events' positions, each is
# then found by its position. apply_changes stays the definition; the fold in SQL is held
# equal to it on every event type by tests/test_replay_fast_paths.py.

# Which event each mark points at: (aggregate, which events).
_MARKS: dict[str, tuple[str, str]] = {
    "r": ("max", "e.event_type = 'TicketReceived'"),
    "dg": ("max", "e.event_type = 'TicketDiagnosed'"),
    "d1": ("min", "e.event_type = 'TicketDiagnosed'"),
    "dp": ("max", "e.event_type = 'TicketDispatched'"),
    "vs": ("max", "e.event_type = 'TicketVisited'"),
    "rp": ("max", "e.event_type = 'TicketRepaired'"),
    "fu": ("max", "e.event_type = 'FollowUpRecorded'"),
    "cl": ("max", "e.event_type = 'TicketClosed'"),
    "ro": ("max", "e.event_type = 'TicketReopened'"),
    "cd": ("max", "e.event_type = 'ContactDetailsCorrected'"),
    "st": ("max", "e.event_type IN ({moving})"),
    "ls": ("max", "true"),
}
# A correction may leave the customer or the address out: the last one that has each is
# looked for in the (few) tickets corrected only, so the pass never carries payloads.
_CORRECTED = {"cc": "customer", "ca": "address"}
# The events the row reads, found by their mark; of those, the ones whose payload it reads.
_FOUND = ("r", "dg", "d1", "dp", "vs", "rp", "fu", "cl", "st", "ls")
_READ_PAYLOAD = ("r", "dg", "dp", "vs", "rp", "fu", "cc", "ca")
# Their event types: an older schema version of one of these makes a stream unfoldable
# here (the upcast is Python's); any version of another type folds the same — an upgraded
# ledger's older SlaPolicyApplied must not send every rebuild event by event.
_PAYLOAD_TYPES = frozenset(
    {
        *(
            _MARKS[m][1].removeprefix("e.event_type = ").strip("'")
            for m in _READ_PAYLOAD
            if m in _MARKS
        ),
        "ContactDetailsCorrected",  # cc, ca: the corrections, looked up apart (_CORRECTED)
    }
)


def _stored_time(value: str | None) -> str | None:
    return _write_time(_time(value))


@cache
def _fold_sql(postgres: bool) -> str:
    """``INSERT INTO ticket_state … SELECT``: every ticket stream up to ``:head``, in one
    statement. On SQLite payload times go through ``ticketline_time`` (the parse and the
    stored form apply_changes uses, so the text is the same to the microsecond). On
    PostgreSQL each event's payload is parsed once (a lateral subquery kept apart by
    ``OFFSET 0``, or every column read would parse it again), and the marks, computed
    once (``WITH … MATERIALIZED``), also give each stream's applied version."""
    columns = _column_rules(postgres)
    insert = (
        f"INSERT INTO ticket_state ({', '.join(columns)})\n"
        f"SELECT {', '.join(columns.values())}\n"
        f"FROM {'a' if postgres else f'({_marked()}) AS a'}\n"
        + "\n".join(_joins(postgres))
        + "\nWHERE a.r IS NOT NULL OR a.unfoldable > 0"
    )
    if not postgres:
        return insert
    # The stream versions from the same pass (a second pass over the ledger: +12 %).
    return (
        f"WITH a AS MATERIALIZED ({_marked()}),\n"
        f"versions AS ({_VERSIONS} SELECT :projection, a.stream_id, a.version FROM a)\n" + insert
    )


def _payload_value(postgres: bool, alias: str, path: str, kind: str = "") -> str:
    """A value of the payload of the event ``alias`` (``path`` dotted), as column ``kind``."""
    if postgres:
        value = f"({alias}.j #>> '{{{path.replace('.', ',')}}}')"
        return f"{value}::{kind}" if kind else value
    value = f"json_extract({alias}.payload, '$.{path}')"
    return f"ticketline_time({value})" if kind == "timestamptz" else value


def _column_rules(postgres: bool) -> dict[str, str]:
    """Each column of the row as an expression of the marks (``a``) and the events they
    point at: what apply_changes leaves there."""
    pay = partial(_payload_value, postgres)

    def latest(path: str, correction: str) -> str:
        return (
            f"CASE WHEN {correction}.position IS NOT NULL THEN {pay(correction, path)}"
            f" ELSE {pay('r', path)} END"
        )

    status = " ".join(f"WHEN '{name}' THEN '{to}'" for name, to in STATUS_AFTER_TEXT.items())
    columns: dict[str, str] = {
        # NULL (the statement fails) for a stream it cannot fold: the runner folds in Python.
        "ticket_id": "CASE WHEN a.unfoldable = 0 AND a.receipts = 1 AND a.r = a.first"
        " THEN a.stream_id END",
        "ticket_number": pay("r", "ticket_number"),
        "status": f"CASE st.event_type {status} END",
        "region": latest("address.region", "ca"),
        "urgency": pay("r", "urgency"),
        "channel": pay("r", "channel"),
        "warranty_status": pay("r", "warranty_status"),
        "customer_id": pay("r", "customer_id"),
        "customer_name": latest("customer.name", "cc"),
        "customer_phone": latest("customer.phone", "cc"),
        "address_line": latest("address.line", "ca"),
        "product_model": pay("r", "product.model"),
        "product_line": pay("r", "product.product_line"),
        "serial_number": pay("r", "product.serial_number"),
        "category": pay("dg", "category"),
        "complexity": pay("dg", "complexity"),
        "resolution_path": pay("dg", "resolution_path"),
        "service_point_id": pay("dp", "service_point_id"),
        "technician_id": pay("dp", "technician_id"),
        "appointment_start": pay("dp", "appointment_start", "timestamptz"),
        "appointment_end": pay("dp", "appointment_end", "timestamptz"),
        "repair_outcome": pay("rp", "outcome"),
        "satisfaction_score": pay("fu", "satisfaction_score", "integer"),
        "possible_duplicate_of": pay("r", "possible_duplicate_of"),
        "reopen_count": "a.reopens",
        "created_at": "r.occurred_at",
        "responded_at": "d1.occurred_at",
        "diagnosed_at": "dg.occurred_at",
        "dispatched_at": "dp.occurred_at",
        "visited_at": pay("vs", "arrived_at", "timestamptz"),
        "repaired_at": "rp.occurred_at",
        "followed_up_at": "fu.occurred_at",
        # Closed unless reopened since.
        "closed_at": "CASE WHEN a.cl > coalesce(a.ro, 0) THEN cl.occurred_at END",
        "response_due_at": pay("r", "response_due_at", "timestamptz"),
        "resolution_due_at": pay("dg", "resolution_due_at", "timestamptz"),
        "version": "a.version",
        "updated_at": "ls.recorded_at",
    }
    assert list(columns) == [c.name for c in ticket_state.columns], "a column without a rule"
    return columns


def _marked() -> str:
    """The one pass over the ledger: per ticket stream, its version, counts, and the
    positions of the events ``_MARKS`` names (no payload read)."""
    moving = ", ".join(f"'{name}'" for name in STATUS_AFTER_TEXT)
    current = " ".join(
        f"WHEN '{name}' THEN "
        + (str(cls.schema_version) if name in _PAYLOAD_TYPES else "e.schema_version")
        for name, cls in all_payload_classes().items()
        if cls.stream_type == "ticket"
    )
    marks = ",\n  ".join(
        f"{how}(e.position) FILTER (WHERE {which.format(moving=moving)}) AS {alias}"
        for alias, (how, which) in _MARKS.items()
    )
    return (
        "SELECT e.stream_id, max(e.stream_version) AS version,\n"
        "  count(*) FILTER (WHERE e.event_type = 'TicketReopened') AS reopens,\n"
        "  count(*) FILTER (WHERE e.event_type = 'TicketReceived') AS receipts,\n"
        f"  count(*) FILTER (WHERE e.schema_version <> CASE e.event_type {current} ELSE -1 END)"
        " AS unfoldable,\n"
        "  min(e.position) AS first,\n"
        f"  {marks}\n"
        "  FROM events AS e WHERE e.stream_type = 'ticket' AND e.position <= :head\n"
        "  GROUP BY e.stream_id"
    )


def _joins(postgres: bool) -> list[str]:
    """The marked events, each found by its position; the last correction that holds the
    customer or the address, looked for in corrected tickets only."""

    def event(alias: str, where: str) -> str:
        if not postgres:
            return f"LEFT JOIN events AS {alias} ON {alias}.position = {where}"
        payload = ", x.payload::jsonb AS j" if alias in _READ_PAYLOAD else ""
        return (
            f"LEFT JOIN LATERAL (SELECT x.position, x.occurred_at, x.recorded_at, x.event_type"
            f"{payload} FROM events AS x WHERE x.position = {where} OFFSET 0) AS {alias} ON true"
        )

    has = "x.payload::jsonb ->> '{}'" if postgres else "json_extract(x.payload, '$.{}')"
    return [event(alias, f"a.{alias}") for alias in _FOUND] + [
        event(
            alias,
            "CASE WHEN a.cd IS NOT NULL THEN (SELECT max(x.position) FROM events AS x"
            " WHERE x.stream_id = a.stream_id AND x.event_type = 'ContactDetailsCorrected'"
            f" AND x.position <= :head AND {has.format(part)} IS NOT NULL) END",
        )
        for alias, part in _CORRECTED.items()
    ]


_VERSIONS = "INSERT INTO projection_stream_versions (projection, stream_id, version)"
# SQLite writes no table from a WITH clause: its versions take a pass of their own.
_SQLITE_VERSIONS = (
    f"{_VERSIONS} SELECT :projection, stream_id, max(stream_version) FROM events"
    " WHERE stream_type = 'ticket' AND position <= :head GROUP BY stream_id"
)


def seen_by_region(region: str) -> ColumnElement[bool]:
    """The events a region's caller receives (intake's ``GET /streams/events``, the
    console's live page): its region's, the ledger's checkpoints, and a customer's
    erasure and legal holds once one of the customer's tickets had an event in the region
    before them — the region holds that customer's data (also after a correction moved
    the ticket away); another region's customer does not exist for it. Decided by what
    came before each event, so a position's answer never changes later."""
    customer = func.substr(events.c.stream_id, len(customer_stream_id("")) + 1)
    theirs = region_held_before(region, events.c.position).where(
        ticket_state.c.customer_id == customer
    )
    # The stream types as one IN: the plan reads both indexes by position.
    of_no_region = events.c.stream_type.in_(EVERY_REGIONS_STREAMS)
    return or_(
        events.c.region == region,
        and_(of_no_region, or_(events.c.stream_type == LEDGER_STREAM, theirs.exists())),
    )


def region_held_before(region: str, position: Any) -> Select[tuple[str]]:
    """The tickets with an event in ``region`` before ``position`` (ids; add a filter on
    ``ticket_state``: a customer, ticket ids). Region and position are compared through
    ``not_by_index`` (planning.py), so no index serves them: the plan starts from the
    few tickets the filter names and reads their events by stream, never a region's
    history up to the position."""
    held = events.alias("held")
    return (
        select(held.c.stream_id)
        .select_from(ticket_state)
        .join(held, held.c.stream_id == ticket_state.c.ticket_id)
        .where(not_by_index(held.c.region) == region, not_by_index(held.c.position) < position)
    )


_LAST_EVENT = (
    select(events.c.stream_version, events.c.position)
    .where(events.c.stream_id == bindparam("stream_id"))
    .order_by(events.c.stream_version.desc())
    .limit(1)
)


def ticket_tail_problems(
    conn: Connection, heads: Mapping[str, tuple[int, str]], region: str | None = None
) -> list[BrokenLink]:
    """Events cut from the end of a ticket's stream leave every remaining link intact (the
    global gap they leave names the next event's stream, another ticket's): the ticket's
    state row, written with its events, records the version it reached. A row ahead of
    the walk is looked up again (the state first: its events committed with it), as
    events appended since the walk passed are not missing. ``region``: its tickets only
    (a region's walk). Each finding's position is the last event the stream still has."""
    found = []
    t = ticket_state.c
    query = select(t.ticket_id, t.version)
    if region is not None:
        query = query.where(t.region == region)
    for ticket_id, version in conn.execute(query):
        if version <= heads.get(ticket_id, (0, ""))[0]:
            continue
        held, position = conn.execute(_LAST_EVENT, {"stream_id": ticket_id}).first() or (0, 0)
        if held < version:
            found.append(
                BrokenLink(
                    "stream_tail",
                    ticket_id,
                    held,
                    "",
                    position,
                    f"the ticket's state records version {version}, the ledger holds "
                    f"versions up to {held}: events at the end of its stream were removed",
                )
            )
    return found


def current_scope(conn: Connection, ticket_id: str) -> Scope | None:
    """Where the ticket is now (its region, its technician), whoever asks about its past:
    a ticket that moved region is the new region's only, ``as_of`` included."""
    t = ticket_state.c
    found = conn.execute(select(t.region, t.technician_id).where(t.ticket_id == ticket_id)).first()
    return Scope(region=found.region, assignee=found.technician_id) if found else None

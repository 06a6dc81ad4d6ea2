"""Every database read of the console, in one module.

The functions are synchronous and take a SQLAlchemy ``Connection``; pages call them
through :func:`read`, the one adapter to the platform's database. Each function receives
the caller's :class:`Reach` (or a region already forced to it) and filters in SQL: a
regional caller's query never reads another region's rows.

Every statement the pages run is checked with ``EXPLAIN QUERY PLAN`` on SQLite
(tests/test_console.py): an index search, never a scan or a sort. The board and the SLA
lists walk ``ticket_state``'s (status, region, deadline, ticket_id) indexes (migration
0007): one status and region's open tickets in deadline order, keyset pages;
headquarters' lists merge the regions' pages, and the counts read the index alone. A
service point's or a technician's open tickets, a handful, come through their (…,
status) indexes (migrations 0012, 0013) and are the one thing sorted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, true
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from services.dispatch.tables import service_points, sla_clocks, ticket_flags
from services.feedback.tables import (
    compliance_tickets,
    follow_ups,
    quality_alerts,
    repairs,
)
from shared.app.config import FeedbackSettings
from shared.app.platform import Platform
from shared.eventstore.driver import rows_tolerating_damage
from shared.eventstore.ledger import checked_row
from shared.eventstore.outbox import outbox_backlog
from shared.eventstore.tables import events, projection_checkpoints
from shared.eventstore.verify import ledger_end_problems, link_problems, unreadable_detail
from shared.kernel import lifecycle
from shared.kernel.errors import InvalidCommand
from shared.kernel.events.envelope import GENESIS_HASH, EventEnvelope
from shared.kernel.reach import EVERYWHERE, Reach
from shared.readmodels.planning import checked_only_if, not_by_index
from shared.readmodels.ticket_state import seen_by_region, ticket_state, ticket_tail_problems

T = TypeVar("T")


async def read(platform: Platform, query: Callable[[Connection], T]) -> T:
    """Run one synchronous query function as a unit of work (a read snapshot)."""
    return await platform.db.read(query)


# --- scope ------------------------------------------------------------------------------


t = ticket_state.c

# Ticket statuses on the board (open), and which deadline runs in each.
AWAITING_RESPONSE = lifecycle.stored(lifecycle.AWAITING_RESPONSE)
AWAITING_RESOLUTION = lifecycle.stored(lifecycle.AWAITING_RESOLUTION)
AWAITING_FOLLOW_UP = lifecycle.stored(lifecycle.OPEN_STATUSES - lifecycle.CLOCK_STATUSES)
OPEN_STATUSES = (*AWAITING_RESPONSE, *AWAITING_RESOLUTION, *AWAITING_FOLLOW_UP)


def _ticket_scope(scope: Reach, narrow: bool = False) -> list[ColumnElement[bool]]:
    """``narrow``: other conditions pick a service point's tickets; a technician's or a
    point's are a handful of a region's, so the region is only checked on their rows
    (``not_by_index``: SQLite would walk the region's, planning.py)."""
    conditions: list[ColumnElement[bool]] = []
    if scope.region is not None:
        narrower = narrow or scope.technician is not None
        conditions.append(checked_only_if(narrower, t.region) == scope.region)
    if scope.technician is not None:
        conditions.append(t.technician_id == scope.technician)
    return conditions


@dataclass(frozen=True)
class BoardFilters:
    region: str | None = None  # already forced to the caller's scope
    service_point_id: str | None = None
    urgency: str | None = None
    technician_id: str | None = None

    @property
    def narrow(self) -> bool:
        """Whether a service point or a technician is chosen: an index of their own."""
        return bool(self.service_point_id or self.technician_id)

    def conditions(self) -> list[ColumnElement[bool]]:
        reach = Reach(region=self.region, technician=self.technician_id)
        found = _ticket_scope(reach, narrow=self.narrow)
        if self.service_point_id:
            found.append(t.service_point_id == self.service_point_id)
        if self.urgency:
            found.append(t.urgency == self.urgency)
        return found


def deadline_column(status: str) -> Any:
    """The deadline that runs while a ticket is in this status (None: no SLA clock)."""
    if status in AWAITING_RESPONSE:
        return t.response_due_at
    if status in AWAITING_RESOLUTION:
        return t.resolution_due_at
    return t.repaired_at  # awaiting follow-up: oldest repair first


# The ticket's SLA clock (dispatch's ``dispatch_sla_clocks``): whether it is paused, and
# the deadlines moved by pauses, a re-dispatch or a re-evaluation. Pauses and resumptions
# are dispatch's own events, which keep the row current in their transaction, so a row is
# right about the pause even when another service's event made it older than the ticket;
# its deadlines count only once it is current (a diagnosis or a reopening moves them),
# the recorded ones until then. The lists walk the recorded deadlines' indexes; what they
# show and which ticket is breached is the clock's.
k = sla_clocks.c
TICKETS = ticket_state.outerjoin(sla_clocks, k.ticket_id == t.ticket_id)
_CURRENT = k.version == t.version


def _clock_due(column: Any) -> Any:
    return case((_CURRENT, column), else_=None)


CLOCK_COLUMNS = (
    k.paused.label("sla_paused"),
    k.response_status.label("sla_response_status"),
    k.resolution_status.label("sla_resolution_status"),
    _clock_due(k.response_due_at).label("clock_response_due_at"),
    _clock_due(k.resolution_due_at).label("clock_resolution_due_at"),
)
RUNNING = k.paused.is_not(true())  # no clock row yet: running
# A deadline that breached before its clock was paused: the pause does not undo it.
BREACHED = {
    "response": k.response_status == "breached",
    "resolution": k.resolution_status == "breached",
}


def running_deadline(status: str) -> Any:
    """The deadline of this status's clock as it runs: the clock's, else the recorded one."""
    recorded = deadline_column(status)
    if status in AWAITING_RESPONSE:
        return func.coalesce(_clock_due(k.response_due_at), recorded)
    if status in AWAITING_RESOLUTION:
        return func.coalesce(_clock_due(k.resolution_due_at), recorded)
    return recorded


BOARD_COLUMNS = (
    t.ticket_id,
    t.ticket_number,
    t.status,
    t.region,
    t.urgency,
    t.product_model,
    t.service_point_id,
    t.technician_id,
    t.created_at,
    t.diagnosed_at,
    t.repaired_at,
    t.response_due_at,
    t.resolution_due_at,
    *CLOCK_COLUMNS,
)


# --- keyset cursors ---------------------------------------------------------------------


def encode_cursor(value: datetime | str | None, ident: str) -> str:
    if value is None:
        return f"~|{ident}"
    text = value.isoformat() if isinstance(value, datetime) else value
    return f"{text}|{ident}"


def decode_cursor(cursor: str | None) -> tuple[bool, datetime | str | None, str] | None:
    """(has a value, the value, the id) or None for the first page."""
    if not cursor or "|" not in cursor:
        return None
    value, _, ident = cursor.rpartition("|")
    if value == "~":
        return False, None, ident
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return True, value, ident
    # The console writes times with their offset: one without is text, not a time.
    return True, (moment if moment.tzinfo is not None else value), ident


def cursor_position(after: str | None, order: Any) -> tuple[bool, Any, str] | None:
    """``after`` decoded for a list ordered by ``order``; a value of another type than the
    column's (text where a time is) is no cursor of this list."""
    position = decode_cursor(after)
    column_type = getattr(order.type, "impl", order.type)  # UtcDateTime decorates DateTime
    try:
        is_time = column_type.python_type is datetime
    except NotImplementedError:
        is_time = False
    if position is not None and position[0] and is_time != isinstance(position[1], datetime):
        raise InvalidCommand("after", "not a cursor of this list")
    return position


def keyset_page(
    conn: Connection,
    columns: Sequence[Any],
    conditions: Sequence[ColumnElement[bool]],
    order: Any,
    ident: Any,
    after: str | None,
    limit: int,
    nulls: bool = True,
    from_: FromClause | None = None,
) -> tuple[list[Any], str | None]:
    """Rows ordered by (order, ident), ``limit`` at a time: rows with a value first (in
    order), then those without one (NULL, by ident) — the same on SQLite and PostgreSQL,
    and each part walks an index on (order, ident) without sorting. ``nulls``: whether
    rows without a value can match at all (not for a NOT NULL column or a range on it).
    ``from_``: the tables (a join), when the columns are not all of one."""
    position = cursor_position(after, order)
    rows: list[Any] = []
    if position is not None and not position[0] and not nulls:
        return [], None
    if position is None or position[0]:
        where = [*conditions, order.is_not(None)]
        if position is not None:
            _, value, last = position
            where.append(or_(order > value, and_(order == value, ident > last)))
        query = select(*columns).where(*where).order_by(order, ident).limit(limit + 1)
        if from_ is not None:
            query = query.select_from(from_)
        rows = list(conn.execute(query).all())
    if len(rows) <= limit and nulls:
        where = [*conditions, order.is_(None)]
        if position is not None and not position[0]:
            where.append(ident > position[2])
        query = select(*columns).where(*where).order_by(ident).limit(limit + 1 - len(rows))
        if from_ is not None:
            query = query.select_from(from_)
        rows += list(conn.execute(query).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]._mapping
    return rows, encode_cursor(last[order.key], last[ident.key])


def merged_keyset_page(
    conn: Connection,
    columns: Sequence[Any],
    partitions: Sequence[Sequence[ColumnElement[bool]]],
    order: Any,
    ident: Any,
    after: str | None,
    limit: int,
    nulls: bool = True,
    from_: FromClause | None = None,
) -> tuple[list[Any], str | None]:
    """:func:`keyset_page` over several partitions (statuses, regions) merged in the same
    order: each partition is one index walk, so no query sorts."""
    cursor_position(after, order)  # refused even when no partition is walked
    rows: list[Any] = []
    more = False
    for conditions in partitions:
        found, cursor = keyset_page(
            conn, columns, conditions, order, ident, after, limit, nulls=nulls, from_=from_
        )
        rows += found
        more = more or cursor is not None

    def key(row: Any) -> tuple[bool, Any, str]:
        m = row._mapping
        value = m[order.key]
        return (value is None, value if value is not None else "", m[ident.key])

    rows.sort(key=key)
    if len(rows) > limit:
        more = True
    rows = rows[:limit]
    if not more or not rows:
        return rows, None
    last = rows[-1]._mapping
    return rows, encode_cursor(last[order.key], last[ident.key])


# --- board ------------------------------------------------------------------------------


def regions(conn: Connection, scope: Reach) -> list[str]:
    """The regions that have tickets: one index seek per region (a skip scan of the
    (region, status) index), not a pass over every ticket."""
    if scope.region is not None:
        return [scope.region]
    found: list[str] = []
    while True:
        query = select(func.min(t.region))
        if found:
            query = query.where(t.region > found[-1])
        region = conn.execute(query).scalar()
        if region is None or len(found) >= 200:
            return found
        found.append(region)


def service_point_choices(conn: Connection, region: str | None) -> list[tuple[str, str]]:
    sp = service_points.c
    query = select(sp.id, sp.name).where(sp.level == "service_point").order_by(sp.id)
    if region is not None:
        query = query.where(sp.region == region)
    return [(r.id, r.name) for r in conn.execute(query)]


def board_counts(conn: Connection, filters: BoardFilters) -> dict[str, int]:
    query = (
        select(t.status, func.count())
        .where(t.status.in_(OPEN_STATUSES), *filters.conditions())
        .group_by(t.status)
    )
    counts = {status: 0 for status in OPEN_STATUSES}
    counts.update({status: int(n) for status, n in conn.execute(query)})
    return counts


def partitions(
    conn: Connection,
    statuses: Sequence[str],
    region: str | None,
    extra: list[Any],
    narrow: bool = False,
) -> list[list[ColumnElement[bool]]]:
    """One (status, region) pair per partition: the (status, region, deadline) indexes
    give each its tickets in deadline order. ``narrow``: ``extra`` picks a service
    point's or a technician's tickets, found through their own (status) index and sorted,
    rather than by walking every region's tickets of the status for them."""
    if narrow:
        within = [] if region is None else [not_by_index(t.region) == region]
        return [[t.status == status, *within, *extra] for status in statuses]
    chosen = [region] if region is not None else regions(conn, EVERYWHERE)
    return [[t.status == status, t.region == r, *extra] for status in statuses for r in chosen]


def board_page(
    conn: Connection, filters: BoardFilters, status: str, after: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """One status's open tickets, nearest deadline first."""
    extra = BoardFilters(None, filters.service_point_id, filters.urgency, filters.technician_id)
    parts = partitions(conn, [status], filters.region, extra.conditions(), filters.narrow)
    order = deadline_column(status)
    return merged_keyset_page(
        conn,
        BOARD_COLUMNS,
        parts,
        order,
        t.ticket_id,
        after,
        limit,
        nulls=order.nullable,
        from_=TICKETS,
    )


# --- one ticket -------------------------------------------------------------------------


def ticket(conn: Connection, ticket_id: str) -> Any:
    query = select(ticket_state, *CLOCK_COLUMNS).select_from(TICKETS)
    return conn.execute(query.where(t.ticket_id == ticket_id)).first()


def ticket_compliance(conn: Connection, ticket_id: str) -> Any:
    c = compliance_tickets.c
    return conn.execute(select(compliance_tickets).where(c.ticket_id == ticket_id)).first()


def ticket_flag_row(conn: Connection, ticket_id: str) -> Any:
    f = ticket_flags.c
    return conn.execute(select(ticket_flags).where(f.ticket_id == ticket_id)).first()


# --- SLA risk ---------------------------------------------------------------------------

SLA_KINDS = {"response": AWAITING_RESPONSE, "resolution": AWAITING_RESOLUTION}


def sla_summary(
    conn: Connection, scope: Reach, now: datetime, soon: datetime
) -> dict[str, dict[str, dict[str, int]]]:
    """Per region and kind: breached (both deadlines passed, step still missing: what the
    breached list shows) and due before ``soon``; a paused clock is neither, unless it
    breached before the pause (breached). Each count
    walks the (status, deadline) index up to ``soon`` by the recorded deadline: a pause
    moves the clock's later, so nothing is missed for it; a clock deadline earlier than
    the recorded one counts by the recorded one (marked breached on its card) until that
    passes (docs/console.md)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for kind, statuses in SLA_KINDS.items():
        due = deadline_column(statuses[0])
        running = running_deadline(statuses[0])
        query = (
            select(
                t.region,
                func.sum(case((and_(running < now, due < now), 1), else_=0)),
                func.count(),
            )
            .select_from(TICKETS)
            .where(t.status.in_(statuses), due < soon, or_(RUNNING, BREACHED[kind]), running < soon)
            .where(*_ticket_scope(scope))
            .group_by(t.region)
        )
        for region, breached, total in conn.execute(query):
            entry = out.setdefault(region, {}).setdefault(kind, {})
            entry["breached"] = int(breached or 0)
            entry["due_soon"] = int(total) - int(breached or 0)
    return out


def sla_page(
    conn: Connection,
    scope: Reach,
    region: str | None,
    kind: str,
    state: str,
    now: datetime,
    after: str | None,
    limit: int,
) -> tuple[list[Any], str | None]:
    """Breached tickets (oldest deadline first) or those still in time (nearest first),
    in the recorded deadline's order; breached and in time by the clock, paused ones in
    neither — one that breached before its pause stays breached — (a resumed ticket whose
    recorded deadline passed is in time until its moved one passes)."""
    statuses = SLA_KINDS[kind]
    due = deadline_column(statuses[0])
    running = running_deadline(statuses[0])
    if state == "breached":
        extra = [due < now, or_(RUNNING, BREACHED[kind]), running < now]
    else:
        extra = [RUNNING, or_(due >= now, running >= now)]
    if scope.technician is not None:
        extra.append(t.technician_id == scope.technician)
    narrow = scope.technician is not None
    parts = partitions(conn, statuses, region or scope.region, extra, narrow)
    return merged_keyset_page(
        conn, BOARD_COLUMNS, parts, due, t.ticket_id, after, limit, nulls=False, from_=TICKETS
    )


# --- compliance and satisfaction -------------------------------------------------------

c = compliance_tickets.c


# What "the tickets behind a rate" are: the ones that pull it down.
def _detractors(s: FeedbackSettings) -> ColumnElement[bool]:
    """Tickets with a follow-up whose would-recommend makes a detractor (what NPS is short
    by), whatever the ticket's latest word."""
    said = select(follow_ups.c.ticket_id).where(
        follow_ups.c.would_recommend <= s.nps_detractor_up_to
    )
    return c.ticket_id.in_(said)


RATE_FILTERS: dict[str, Callable[[FeedbackSettings], ColumnElement[bool]]] = {
    "compliance": lambda _s: c.compliant == "false",
    "response_sla": lambda _s: c.responded_within_sla == "false",
    "resolution_sla": lambda _s: c.resolved_within_sla == "false",
    "sla": lambda _s: or_(c.responded_within_sla == "false", c.resolved_within_sla == "false"),
    "first_time_fix": lambda _s: c.first_time_fix == "false",
    "satisfaction": lambda _s: c.satisfied == "false",
    "detractors": _detractors,
    "complaints": lambda _s: c.complaints > 0,
    "all": lambda _s: true(),
}


def compliance_ticket_page(
    conn: Connection,
    region: str | None,
    month: str,
    service_point_id: str | None,
    rate: str,
    after: str | None,
    limit: int,
    settings: FeedbackSettings,
    technician_id: str | None = None,
) -> tuple[list[Any], str | None]:
    conditions = [c.month == month, RATE_FILTERS[rate](settings)]
    if region is not None:
        conditions.append(c.region == region)
    if service_point_id:
        conditions.append(c.service_point_id == service_point_id)
    if technician_id:
        conditions.append(c.technician_id == technician_id)
    query = (
        select(
            c.ticket_id,
            c.ticket_number,
            c.region,
            c.service_point_id,
            c.technician_id,
            c.status,
            c.compliant,
            c.responded_within_sla,
            c.resolved_within_sla,
            c.first_time_fix,
            c.satisfied,
        )
        .where(*conditions)
        .order_by(c.ticket_number)
        .limit(limit + 1)
    )
    if after:
        query = query.where(c.ticket_number > after)
    rows = list(conn.execute(query).all())
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].ticket_number


# --- quality ----------------------------------------------------------------------------


def quality_alert_rows(conn: Connection, from_day: str, to_day: str) -> list[Any]:
    a = quality_alerts.c
    query = (
        select(quality_alerts)
        .where(a.day >= from_day, a.day < to_day)
        .order_by(a.day.desc(), a.product_model, a.fault_category)
        .limit(500)
    )
    return list(conn.execute(query).all())


def repair_counts(conn: Connection, from_day: str, to_day: str) -> list[Any]:
    """Repairs per (model, fault category, day) in [from_day, to_day)."""
    r = repairs.c
    query = (
        select(r.product_model, r.fault_category, r.day, func.count().label("repairs"))
        .where(r.day >= from_day, r.day < to_day)
        .group_by(r.product_model, r.fault_category, r.day)
    )
    return list(conn.execute(query).all())


# --- live -------------------------------------------------------------------------------

e = events.c
LIVE_COLUMNS = (
    e.position,
    e.stream_type,
    e.stream_id,
    e.stream_version,
    e.event_type,
    e.occurred_at,
    e.recorded_at,
    e.actor_subject,
    e.actor_role,
    e.service,
    e.region,
)


def _event_scope(scope: Reach) -> list[ColumnElement[bool]]:
    # Events without a region (network, parts, quality streams) are headquarters' view,
    # but for the checkpoints and the customers' streams (as intake's GET /streams/events).
    return [seen_by_region(scope.region)] if scope.region is not None else []


def recent_events(conn: Connection, scope: Reach, limit: int) -> list[Any]:
    query = (
        select(*LIVE_COLUMNS).where(*_event_scope(scope)).order_by(e.position.desc()).limit(limit)
    )
    return list(conn.execute(query).all())


def events_after(conn: Connection, scope: Reach, position: int, limit: int) -> list[Any]:
    query = (
        select(*LIVE_COLUMNS)
        .where(e.position > position, *_event_scope(scope))
        .order_by(e.position)
        .limit(limit)
    )
    return list(conn.execute(query).all())


def ledger_head(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(e.position), 0))).scalar_one())


def ticket_numbers(conn: Connection, ticket_ids: Sequence[str]) -> dict[str, str]:
    if not ticket_ids:
        return {}
    query = select(t.ticket_id, t.ticket_number).where(t.ticket_id.in_(list(ticket_ids)))
    return {r.ticket_id: r.ticket_number for r in conn.execute(query)}


# --- audit ------------------------------------------------------------------------------


def checkpoints(conn: Connection, stream_types: dict[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Each projection's checkpoint and lag (the head of the stream types it reads minus
    its checkpoint), as /metrics reports them."""
    stored = {r.projection: r for r in conn.execute(select(projection_checkpoints))}
    heads: dict[str, int] = {}
    for stream_type in sorted({st for types in stream_types.values() for st in types}):
        # One index seek per stream type on (stream_type, position).
        query = select(func.max(e.position)).where(e.stream_type == stream_type)
        heads[stream_type] = int(conn.execute(query).scalar() or 0)
    out = []
    for name, types in sorted(stream_types.items()):
        head = max((heads[st] for st in types), default=0)
        row = stored.get(name)
        done = int(row.position) if row else 0
        out.append(
            {
                "projection": name,
                "checkpoint": done,
                "lag": max(0, int(head) - done),
                "updated_at": row.updated_at if row else None,
            }
        )
    return out


def outbox_state(conn: Connection) -> tuple[int, datetime | None]:
    count, oldest = outbox_backlog(conn)
    return count, oldest if isinstance(oldest, datetime) else None


@dataclass
class VerifyProgress:
    """A verification walked in batches (so a page never waits for the whole ledger)."""

    region: str | None
    last_position: int = 0
    events_checked: int = 0
    heads: dict[str, tuple[int, str]] | None = None
    broken: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.heads = self.heads or {}
        self.broken = self.broken or []


def verify_batch(conn: Connection, progress: VerifyProgress, batch: int = 2000) -> bool:
    """Check the next ``batch`` events of the scope; False when there were none left.

    Every region (headquarters): the checks of ``ticketline verify`` — contiguous global
    positions, each stream's versions in sequence, each prev_hash the previous event's
    hash, each hash matching the content. One region: the same per event and per stream
    for the region's events (a stream that moved region is checked where it is visible;
    the global sequence is headquarters' check)."""
    assert progress.heads is not None and progress.broken is not None
    query = (
        select(events)
        .where(e.position > progress.last_position, *_event_scope(Reach(region=progress.region)))
        .order_by(e.position)
        .limit(batch)
    )
    rows = rows_tolerating_damage(conn, query)
    for row in rows:
        progress.events_checked += 1
        try:
            event, stored_hash = checked_row(row)
        except Exception as exc:  # a hand-edited row that makes no event
            _broken(progress, "unreadable", row.stream_id, row.stream_version, row, exc)
            progress.heads[row.stream_id] = (row.stream_version, row.hash)
            progress.last_position = row.position
            continue
        known = progress.heads.get(event.stream_id)
        if progress.region is None:
            version, previous = known or (0, GENESIS_HASH)
            problems = link_problems(event, stored_hash, progress.last_position, version, previous)
        else:
            problems = _regional_link_problems(conn, event, known)
            if stored_hash != event.hash:
                problems.append(("hash", "content does not match its hash"))
        for kind, detail in problems:
            _broken(progress, kind, event.stream_id, event.stream_version, row, detail)
        progress.heads[event.stream_id] = (event.stream_version, event.hash)
        progress.last_position = event.position
    if not rows:
        ending = (
            ledger_end_problems(
                conn, progress.last_position, progress.heads, [ticket_tail_problems]
            )
            if progress.region is None
            else ticket_tail_problems(conn, progress.heads, region=progress.region)
        )
        progress.broken += [asdict(b) for b in ending]
    return bool(rows)


_HASH_OF_VERSION = select(e.hash).where(
    e.stream_id == bindparam("stream_id"), e.stream_version == bindparam("version")
)


def _regional_link_problems(
    conn: Connection, event: EventEnvelope, known: tuple[int, str] | None
) -> list[tuple[str, str]]:
    """A region's walk sees a stream only while it was in the region: a version that does
    not follow the last one seen is looked up in the whole ledger (the stream was elsewhere
    meanwhile) — missing there, it was deleted."""
    seen = known[0] if known else 0
    if event.stream_version <= seen:  # out of order
        return [("stream_version", f"version {event.stream_version} follows {seen}")]
    if event.stream_version == seen + 1:
        previous: str | None = known[1] if known else GENESIS_HASH
    else:
        wanted = {"stream_id": event.stream_id, "version": event.stream_version - 1}
        previous = conn.execute(_HASH_OF_VERSION, wanted).scalar()
        if previous is None:
            missing = f"version {event.stream_version - 1} is not in the ledger"
            return [("stream_version", f"version {event.stream_version} follows {seen}: {missing}")]
    if event.prev_hash != previous:
        return [("chain", "prev_hash is not the previous event's hash")]
    return []


def _broken(
    progress: VerifyProgress,
    kind: str,
    stream_id: str,
    version: int,
    row: Any,
    detail: str | Exception,
) -> None:
    assert progress.broken is not None
    if len(progress.broken) < 50:
        progress.broken.append(
            {
                "kind": kind,
                "stream_id": stream_id,
                "stream_version": version,
                "event_id": str(row.event_id),
                "position": row.position,
                "detail": detail if isinstance(detail, str) else unreadable_detail(detail),
            }
        )

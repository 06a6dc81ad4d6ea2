"""The event store: append with optimistic concurrency, read a stream, read all in order.

Every function here is a step of a unit of work (``Database.write``/``read``): it runs on
the caller's connection, inside the caller's transaction, so events, outbox rows and
whatever else a command writes commit or fail together.

An append is one round of statements whatever the number of events: take the positions
(``event_sequence``, locked until commit, which keeps positions gap-free and visible in
order), insert the events and their outbox rows. The stream head the command already
loaded is reused, not selected again; the unique (stream, version) constraint rejects a
writer that lost the race (``ConcurrencyError``, HTTP 409).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from json.encoder import encode_basestring
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.util import await_only

from shared.eventstore.db import LedgerBehind, utc_from_stored
from shared.eventstore.driver import (
    DamagedText,
    asyncpg_driver,
    integrity_errors,
    pg_array_of,
    read_tolerating_damage,
    sqlite_driver,
    sqlite_time,
)
from shared.eventstore.metrics import note_appended
from shared.eventstore.tables import events
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.envelope import (
    GENESIS_HASH,
    Actor,
    CommandContext,
    EventEnvelope,
    EventPayload,
    PendingEvent,
    canonical_json,
    format_timestamp,
)
from shared.kernel.events.registry import UnreadableEvent
from shared.kernel.ids import uuid7_text

if TYPE_CHECKING:
    from shared.eventstore.personal import PersonalData

ANY_VERSION: None = None
NO_STREAM = 0

T = TypeVar("T")

log = logging.getLogger("ticketline.ledger")


class ConcurrencyError(Exception):
    """The stream moved on since the caller read it (HTTP 409)."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id}: expected version {expected}, actual {actual if actual is not None else 'newer'}"
        )


@dataclass(frozen=True, slots=True)
class StreamHead:
    """Where a stream ends: its version and the hash of its last event."""

    version: int = 0
    hash: str = GENESIS_HASH


NEW_STREAM = StreamHead()


@dataclass(frozen=True)
class StreamAppend:
    """Events for one stream, appended after ``head`` (the head the decision read; None
    reads it in the append, for streams whose writers need no state)."""

    stream_id: str
    events: Sequence[PendingEvent | EventPayload]
    head: StreamHead | None
    region: str | None = None


# --- hashing ------------------------------------------------------------------------------

# How canonical_json writes a string (ensure_ascii=False): the envelope text is put
# together from quoted values instead of serialising a dict per event.
_quote = encode_basestring


def _quote_or_null(value: str | None) -> str:
    return "null" if value is None else _quote(value)


@dataclass(frozen=True, slots=True)
class HashText:
    """The canonical envelope text around the two values an append learns last: the
    global position and the previous hash. ``before`` ends with ``"position":``; the
    envelope is ``before + position + ',"prev_hash":"' + prev_hash + '",' + after``."""

    before: str
    after: str

    def between(self, prev_hash: str) -> str:
        return ',"prev_hash":"' + prev_hash + '",' + self.after

    def hash(self, position: int, prev_hash: str) -> str:
        text_ = self.before + str(position) + self.between(prev_hash)
        return hashlib.sha256(text_.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class EnvelopeText:
    """The canonical (sorted-key) envelope text the events of one append share, cut where
    each event's own values go: ``head`` ends with ``"event_id":``, ``recorded`` runs from
    ``"recorded_at"`` to ``"schema_version":``, ``tail`` from ``,"service"`` to
    ``"stream_version":``. Byte-identical to canonical_json of the whole envelope, which
    is what ``EventEnvelope.computed_hash`` (and ``ticketline verify``) hashes: a test
    checks it for awkward values."""

    head: str
    recorded: str
    tail: str

    @classmethod
    def of(cls, common: dict[str, Any], recorded_at: str) -> EnvelopeText:
        """``common``: the events row's shared columns (``_drafts``); ``recorded_at``
        as ``format_timestamp`` writes it."""
        head = (
            f'{{"actor":{{"role":{_quote(common["actor_role"])},'
            f'"subject":{_quote(common["actor_subject"])}}},'
            f'"causation_id":{_quote_or_null(common["causation_id"])},'
            f'"correlation_id":{_quote(common["correlation_id"])},"event_id":'
        )
        recorded = (
            f'"recorded_at":{_quote(recorded_at)},'
            f'"region":{_quote_or_null(common["region"])},"schema_version":'
        )
        tail = (
            f',"service":{_quote(common["service"])},"stream_id":{_quote(common["stream_id"])},'
            f'"stream_type":{_quote(common["stream_type"])},"stream_version":'
        )
        return cls(head, recorded, tail)

    def event(
        self,
        event_id: str,
        event_type: str,
        occurred_at: str,
        payload_json: str,
        schema_version: int,
        stream_version: int,
    ) -> HashText:
        before = (
            f'{self.head}{_quote(event_id)},"event_type":{_quote(event_type)},'
            f'"occurred_at":{_quote(occurred_at)},"payload":{payload_json},"position":'
        )
        return HashText(before, f"{self.recorded}{schema_version:d}{self.tail}{stream_version:d}}}")


# --- statements ---------------------------------------------------------------------------

EVENT_COLUMNS = (
    "position",
    "event_id",
    "stream_type",
    "stream_id",
    "stream_version",
    "event_type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "actor_subject",
    "actor_role",
    "service",
    "correlation_id",
    "causation_id",
    "region",
    "payload",
    "prev_hash",
    "hash",
)
_EVENT_COLUMNS = ", ".join(EVENT_COLUMNS)
_TAKE_POSITIONS = text(
    "UPDATE event_sequence SET last_position = last_position + :n WHERE id = 1 "
    "RETURNING last_position"
)
_HEAD = text(
    "SELECT stream_version, hash FROM events WHERE stream_id = :stream_id "
    "ORDER BY stream_version DESC LIMIT 1"
)
_INSERT_EVENT = text(
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (:position, :event_id, :stream_type, "
    ":stream_id, :stream_version, :event_type, :schema_version, :occurred_at, :recorded_at, "
    ":actor_subject, :actor_role, :service, :correlation_id, :causation_id, :region, "
    ":payload, :prev_hash, :hash)"
)
_INSERT_OUTBOX = text("INSERT INTO outbox (position) VALUES (:position)")
# SQLite, on the sqlite3 connection directly (its statement cache prepares each once).
_SQLITE_TAKE_POSITIONS = (
    "UPDATE event_sequence SET last_position = last_position + ? WHERE id = 1 "
    "RETURNING last_position"
)
_SQLITE_INSERT_EVENT = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
_SQLITE_INSERT_OUTBOX = "INSERT INTO outbox (position) VALUES (?)"
# PostgreSQL, on the driver directly (asyncpg prepares each once per connection): the
# positions, then events and their outbox rows in one statement — two round trips.
_PG_TAKE_POSITIONS = (
    "UPDATE event_sequence SET last_position = last_position + $1 WHERE id = 1 "
    "RETURNING last_position"
)
_PG_INSERT_EVENTS_AND_OUTBOX = f"""WITH new_events AS (
  INSERT INTO events ({_EVENT_COLUMNS})
  SELECT * FROM unnest(
    $1::bigint[], $2::varchar[], $3::varchar[], $4::varchar[], $5::integer[], $6::varchar[],
    $7::integer[], $8::timestamptz[], $9::timestamptz[], $10::varchar[], $11::varchar[],
    $12::varchar[], $13::varchar[], $14::varchar[], $15::varchar[], $16::text[],
    $17::varchar[], $18::varchar[])
  RETURNING position
)
INSERT INTO outbox (position) SELECT position FROM new_events"""
# One event (the usual command): position, hash, event and outbox row in one statement.
_PG_APPEND_ONE = f"""WITH taken AS (
  UPDATE event_sequence SET last_position = last_position + 1 WHERE id = 1
  RETURNING last_position AS position
), new_event AS (
  INSERT INTO events ({_EVENT_COLUMNS})
  SELECT taken.position, $1, $2, $3, $4::integer, $5, $6::integer, $7::timestamptz,
    $8::timestamptz, $9, $10, $11, $12, $13, $14, $15, $16,
    encode(sha256(convert_to($17::text || taken.position::text || $18::text, 'UTF8')), 'hex')
  FROM taken
  RETURNING position, hash
), queued AS (
  INSERT INTO outbox (position) SELECT position FROM new_event
)
SELECT position, hash FROM new_event"""
_SELECT_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM events"
_READ_STREAM = text(
    f"{_SELECT_EVENTS} WHERE stream_id = :stream_id AND stream_version >= :from_version "
    "AND stream_version <= :to_version ORDER BY stream_version"
)
_READ_ALL = text(f"{_SELECT_EVENTS} WHERE position > :after ORDER BY position LIMIT :limit")
_READ_STREAMS = text(
    f"{_SELECT_EVENTS} WHERE stream_id IN :ids ORDER BY stream_id, stream_version"
).bindparams(bindparam("ids", expanding=True))
_LAST_POSITION = text("SELECT COALESCE(MAX(position), 0) FROM events")
_MAX_VERSION = 2**31 - 1


_ACTORS: dict[tuple[str, str], Actor] = {}


def _actor(subject: str, role: str) -> Actor:
    """Actors repeat (a few agents write most events): one immutable instance each."""
    found = _ACTORS.get((subject, role))
    if found is None:
        if len(_ACTORS) > 10_000:
            _ACTORS.clear()
        found = _ACTORS[(subject, role)] = Actor.model_construct(subject=subject, role=role)
    return found


def _versions(stream_version: Any, schema_version: Any) -> None:
    """A version column holding text (SQLite keeps what it is given) is no event."""
    if stream_version.__class__ is not int or schema_version.__class__ is not int:
        raise TypeError(f"a version is not a whole number: {stream_version!r}, {schema_version!r}")


def row_to_envelope(row: Sequence[Any]) -> EventEnvelope:
    """An event from its stored row (columns in ``_EVENT_COLUMNS`` order). Trusted data
    from our own ledger: built without validation, with the payload decoded once; a row
    that does not decode is ``UnreadableEvent`` (the ``try`` costs nothing otherwise)."""
    (
        position,
        event_id,
        stream_type,
        stream_id,
        stream_version,
        event_type,
        schema_version,
        occurred_at,
        recorded_at,
        actor_subject,
        actor_role,
        service,
        correlation_id,
        causation_id,
        region,
        payload,
        prev_hash,
        hash_,
    ) = row
    try:
        recorded = utc_from_stored(recorded_at)
        occurred = recorded if occurred_at == recorded_at else utc_from_stored(occurred_at)
        decoded = orjson.loads(payload)
        _versions(stream_version, schema_version)
    except (ValueError, TypeError) as exc:  # orjson's and the time parser's errors
        cause = (
            ValueError("its payload is not UTF-8 text") if isinstance(payload, DamagedText) else exc
        )
        raise UnreadableEvent(position, cause) from exc
    return EventEnvelope.trusted(
        {
            "event_id": event_id,
            "position": position,
            "stream_type": stream_type,
            "stream_id": stream_id,
            "stream_version": stream_version,
            "event_type": event_type,
            "schema_version": schema_version,
            # Most events happen when recorded: one parse for both.
            "occurred_at": occurred,
            "recorded_at": recorded,
            "actor": _actor(actor_subject, actor_role),
            "service": service,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "region": region,
            "payload": decoded,
            "prev_hash": prev_hash,
            "hash": hash_,
        }
    )


_PAYLOAD_COLUMN = EVENT_COLUMNS.index("payload")


def checked_row(row: Sequence[Any]) -> tuple[EventEnvelope, str]:
    """An event from its stored row, and the hash of that row as stored: the canonical
    envelope text around the payload text exactly as written (an append writes the
    canonical text, and hashes that). A payload rewritten into another text of the same
    parsed value — a key given twice, which JSON readers resolve differently (SQL's
    ``json_extract`` takes the first, Python the last) — no longer matches, where
    ``EventEnvelope.computed_hash``, re-serialising the parsed payload, would. Raises
    (``UnreadableEvent``, ``TypeError``, ``ValueError``) for a row that is no event."""
    e = row_to_envelope(row)
    recorded = format_timestamp(e.recorded_at)
    occurred = recorded if e.occurred_at == e.recorded_at else format_timestamp(e.occurred_at)
    common = {
        "actor_role": e.actor.role,
        "actor_subject": e.actor.subject,
        "causation_id": e.causation_id,
        "correlation_id": e.correlation_id,
        "region": e.region,
        "service": e.service,
        "stream_id": e.stream_id,
        "stream_type": e.stream_type,
    }
    text_ = EnvelopeText.of(common, recorded).event(
        e.event_id,
        e.event_type,
        occurred,
        row[_PAYLOAD_COLUMN],
        e.schema_version,
        e.stream_version,
    )
    return e, text_.hash(e.position, e.prev_hash)


# A fold's columns: where the event sits, what it is, when, and its payload — what most
# read models use (and the runner: it orders, filters, checkpoints and parks by these).
# Read without the actor, the ids around the event and the hashes: half the bytes.
FOLD_FIELDS = frozenset(
    {"position", "event_id", "stream_type", "stream_id", "stream_version", "event_type"}
    | {"schema_version", "occurred_at", "recorded_at", "payload"}
)
_FOLD_COLUMNS = tuple(c for c in EVENT_COLUMNS if c in FOLD_FIELDS)  # in the ledger's order
_READ_ALL_FOLD = text(
    f"SELECT {', '.join(_FOLD_COLUMNS)} FROM events WHERE position > :after "
    "ORDER BY position LIMIT :limit"
)


def _types(stream_types: Collection[str]) -> tuple[str, dict[str, Any]]:
    """An ``IN`` list of stream types as named parameters (``:type0``…), and their values."""
    typed = sorted(stream_types)
    return ", ".join(f":type{n}" for n in range(len(typed))), {
        f"type{n}": t for n, t in enumerate(typed)
    }


@cache
def _read_typed(in_list: str, fold: bool) -> Any:
    """``read_page``'s sparse read, for the types of ``in_list`` (``_types``)."""
    columns = ", ".join(_FOLD_COLUMNS if fold else EVENT_COLUMNS)
    return text(
        f"SELECT {columns} FROM events WHERE stream_type IN ({in_list}) AND position > :after "
        "AND position <= :head ORDER BY position LIMIT :limit"
    )


@cache
def _read_by_stream(in_list: str, fold: bool) -> Any:
    """``read_in_stream_order``'s statement, for the types of ``in_list`` (``_types``). The
    type is compared as an expression: SQLite would otherwise walk the stream type's
    index and sort what remains of the ledger on every page."""
    columns = ", ".join(_FOLD_COLUMNS if fold else EVENT_COLUMNS)
    return text(
        f"SELECT {columns} FROM events WHERE (stream_id, stream_version) > (:sid, :version) "
        f"AND stream_type || '' IN ({in_list}) AND position <= :head "
        "ORDER BY stream_id, stream_version LIMIT :limit"
    )


def _fold_envelopes(rows: Iterable[Sequence[Any]]) -> list[EventEnvelope]:
    """Envelopes of ``FOLD_FIELDS`` from rows of ``_FOLD_COLUMNS``; a dict display, not
    ``dict(zip())`` and a loop of conversions (a fifth of the cost of each envelope)."""
    make, held = EventEnvelope.partial, FOLD_FIELDS
    out: list[EventEnvelope] = []
    for (
        position,
        event_id,
        stream_type,
        stream_id,
        stream_version,
        event_type,
        schema_version,
        occurred_at,
        recorded_at,
        payload,
    ) in rows:
        try:  # costs nothing unless a row is damaged (as in ``row_to_envelope``)
            recorded = utc_from_stored(recorded_at)
            occurred = recorded if occurred_at == recorded_at else utc_from_stored(occurred_at)
            decoded = orjson.loads(payload)
            _versions(stream_version, schema_version)
        except (ValueError, TypeError) as exc:
            raise UnreadableEvent(position, exc) from exc
        values = {
            "position": position,
            "event_id": event_id,
            "stream_type": stream_type,
            "stream_id": stream_id,
            "stream_version": stream_version,
            "event_type": event_type,
            "schema_version": schema_version,
            "occurred_at": occurred,
            "recorded_at": recorded,
            "payload": decoded,
        }
        out.append(make(values, held))
    return out


def _envelopes(rows: Iterable[Sequence[Any]]) -> list[EventEnvelope]:
    return [row_to_envelope(r) for r in rows]


@dataclass(slots=True)
class _Draft:
    """An event being appended, before it has a position (and so a hash)."""

    row: dict[str, Any]  # the events row, but for position, prev_hash and hash
    body: dict[str, Any]  # the payload as stored (JSON types)
    text: HashText
    context: CommandContext


def _drafts(
    append: StreamAppend, head: StreamHead, recorded_at: datetime, context: CommandContext
) -> list[_Draft]:
    pending = [e if isinstance(e, PendingEvent) else PendingEvent(e) for e in append.events]
    stream_types = {p.payload.stream_type for p in pending}
    if len(stream_types) != 1:
        raise ValueError("all events of one stream must share one stream type")
    common = {
        "stream_type": stream_types.pop(),
        "stream_id": append.stream_id,
        "recorded_at": recorded_at,
        "actor_subject": context.actor.subject,
        "actor_role": context.actor.role,
        "service": context.service,
        "correlation_id": str(context.correlation_id),
        "causation_id": str(context.causation_id) if context.causation_id else None,
        "region": append.region,
    }
    recorded_text = format_timestamp(recorded_at)
    shared = EnvelopeText.of(common, recorded_text)
    # The first event links to the stream's head; the others to the one before (None:
    # known once the one before has its hash).
    return [
        _draft(
            item,
            common,
            shared,
            recorded_text,
            context,
            head.version + offset + 1,
            head.hash if offset == 0 else None,
        )
        for offset, item in enumerate(pending)
    ]


def _draft(
    item: PendingEvent,
    common: dict[str, Any],
    shared: EnvelopeText,
    recorded_text: str,
    context: CommandContext,
    version: int,
    prev_hash: str | None,
) -> _Draft:
    payload = item.payload
    occurred_at = item.occurred_at or common["recorded_at"]
    # Most events happen when recorded: one timestamp text for both.
    occurred_text = recorded_text if item.occurred_at is None else format_timestamp(occurred_at)
    event_id = uuid7_text()
    body = payload.model_dump(mode="json")
    payload_json = canonical_json(body)
    text_ = shared.event(
        event_id,
        payload.event_type,
        occurred_text,
        payload_json,
        payload.schema_version,
        version,
    )
    row = {
        **common,
        "event_id": event_id,
        "stream_version": version,
        "event_type": payload.event_type,
        "schema_version": payload.schema_version,
        "occurred_at": occurred_at,
        "payload": payload_json,
        "prev_hash": prev_hash,
    }
    return _Draft(row, body, text_, context)


def _chain(drafts: list[_Draft], first_position: int) -> list[dict[str, Any]]:
    """Positions and hashes, in order: each event's hash covers its predecessor's."""
    rows: list[dict[str, Any]] = []
    for offset, draft in enumerate(drafts):
        row = draft.row  # a draft serves one append: its row is completed in place
        row["position"] = first_position + offset
        if row["prev_hash"] is None:
            row["prev_hash"] = rows[-1]["hash"]
        row["hash"] = draft.text.hash(row["position"], row["prev_hash"])
        rows.append(row)
    return rows


_ROW_VALUES = itemgetter(*EVENT_COLUMNS)
_OCCURRED_AT = EVENT_COLUMNS.index("occurred_at")
_RECORDED_AT = EVENT_COLUMNS.index("recorded_at")
assert _RECORDED_AT == _OCCURRED_AT + 1


def _sqlite_rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows as sqlite3 parameters in ``EVENT_COLUMNS`` order, times as SQLite
    stores them (each distinct time formatted once: an append shares ``recorded_at``)."""
    texts: dict[datetime, str] = {}

    def stored(value: datetime) -> str:
        found = texts.get(value)
        if found is None:
            found = texts[value] = sqlite_time(value)
        return found

    out = []
    for r in rows:
        values = _ROW_VALUES(r)
        times = (stored(r["occurred_at"]), stored(r["recorded_at"]))
        out.append(values[:_OCCURRED_AT] + times + values[_RECORDED_AT + 1 :])
    return out


def _pg_append_one(pg: Any, draft: _Draft) -> dict[str, Any]:
    """One event on PostgreSQL in one statement: the server takes the position and
    hashes the same canonical text the other paths hash (sha256 of UTF-8)."""
    row = draft.row
    with integrity_errors("INSERT INTO events"):
        position, hash_ = await_only(
            pg.fetchrow(
                _PG_APPEND_ONE,
                *(row[c] for c in EVENT_COLUMNS[1:-2]),
                row["prev_hash"],
                draft.text.before,
                draft.text.between(row["prev_hash"]),
            )
        )
    return {**row, "position": position, "hash": hash_}


def _write(conn: Connection, drafts: list[_Draft]) -> list[dict[str, Any]]:
    """Positions, hashes and rows (events and their outbox rows) on the driver at hand."""
    raw = sqlite_driver(conn)
    if raw is not None:
        return _sqlite_write(raw, drafts)
    pg = asyncpg_driver(conn)
    if pg is not None:
        if len(drafts) == 1:
            return [_pg_append_one(pg, drafts[0])]
        return _pg_write(pg, drafts)
    # Other drivers (aiosqlite under the legacy API): SQLite's stored time format.
    last = conn.execute(_TAKE_POSITIONS, {"n": len(drafts)}).scalar_one()
    rows = _chain(drafts, int(last) - len(drafts) + 1)
    times = ("occurred_at", "recorded_at")
    conn.execute(
        _INSERT_EVENT,
        [{k: (sqlite_time(v) if k in times else v) for k, v in r.items()} for r in rows],
    )
    conn.execute(_INSERT_OUTBOX, [{"position": r["position"]} for r in rows])
    return rows


def _stream_version_taken(exc: IntegrityError) -> bool:
    return "stream_version" in str(exc.orig)  # SQLite names the columns, PostgreSQL the constraint


def _position_taken(exc: IntegrityError) -> bool:
    """The events' primary key refused a row: its position, not its stream version."""
    said = str(exc.orig)
    return "events.position" in said or "pk_events" in said


def _sqlite_write(raw: Any, drafts: list[_Draft]) -> list[dict[str, Any]]:
    """The counter row is written first: the writer holds SQLite's write lock from then
    until commit, so positions are gap-free and visible in order."""
    count = len(drafts)
    last = raw.execute(_SQLITE_TAKE_POSITIONS, (count,)).fetchone()[0]
    rows = _chain(drafts, int(last) - count + 1)
    values = _sqlite_rows(rows)
    with integrity_errors("INSERT INTO events"):
        if count == 1:
            raw.execute(_SQLITE_INSERT_EVENT, values[0])
        else:
            raw.executemany(_SQLITE_INSERT_EVENT, values)
    if count == 1:
        raw.execute(_SQLITE_INSERT_OUTBOX, (rows[0]["position"],))
    else:
        raw.executemany(_SQLITE_INSERT_OUTBOX, [(r["position"],) for r in rows])
    return rows


def _pg_write(pg: Any, drafts: list[_Draft]) -> list[dict[str, Any]]:
    """Several events: the positions (the counter row stays locked until commit, which
    orders appenders), then events and outbox rows in one statement."""
    count = len(drafts)
    last = await_only(pg.fetchval(_PG_TAKE_POSITIONS, count))
    rows = _chain(drafts, int(last) - count + 1)
    columns = [[r[k] for r in rows] for k in EVENT_COLUMNS]
    with integrity_errors("INSERT INTO events"):
        await_only(pg.execute(_PG_INSERT_EVENTS_AND_OUTBOX, *columns))
    return rows


def _envelope(row: dict[str, Any], draft: _Draft) -> EventEnvelope:
    return EventEnvelope.trusted(
        {
            "event_id": row["event_id"],
            "position": row["position"],
            "stream_type": row["stream_type"],
            "stream_id": row["stream_id"],
            "stream_version": row["stream_version"],
            "event_type": row["event_type"],
            "schema_version": row["schema_version"],
            "occurred_at": row["occurred_at"],
            "recorded_at": row["recorded_at"],
            "actor": draft.context.actor,
            "service": row["service"],
            "correlation_id": row["correlation_id"],
            "causation_id": row["causation_id"],
            "region": row["region"],
            "payload": draft.body,
            "prev_hash": row["prev_hash"],
            "hash": row["hash"],
        }
    )


class EventStore:
    def __init__(
        self,
        clock: Clock | None = None,
        topic_prefix: str = "ticketline",
        personal: PersonalData | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.topic_prefix = topic_prefix
        # Seals personal fields on every append (the platform always sets it; a bare store
        # in tests and the bench's "without the cipher" figures store them in clear).
        self.personal = personal

    # --- writing --------------------------------------------------------------------------

    def append(
        self,
        conn: Connection,
        appends: Sequence[StreamAppend],
        context: CommandContext,
        *,
        recorded_at: datetime | None = None,
    ) -> list[EventEnvelope]:
        """Append to one or more streams in the caller's transaction; all or nothing.
        ``recorded_at``: the time of the decision being recorded (default: now)."""
        appends = [a for a in appends if a.events]
        if not appends:
            return []
        if self.personal is not None:  # every writer's personal fields are sealed here
            appends = self.personal.seal(conn, appends)
        recorded_at = recorded_at or self.clock.now()
        drafts: list[_Draft] = []
        for append in appends:
            head = append.head or self.stream_head(conn, append.stream_id)
            drafts += _drafts(append, head, recorded_at, context)
        try:
            rows = _write(conn, drafts)
        except IntegrityError as exc:
            if _position_taken(exc):
                raise LedgerBehind(
                    "the position counter is behind the ledger (a position it handed out "
                    "is taken): the database is not the one this process wrote to (a "
                    "backup copied over the live file?) or its counter row was edited"
                ) from exc
            if not _stream_version_taken(exc):  # rare: say which, for the operator
                log.warning(
                    "append refused by a constraint besides the stream's version: %s", exc.orig
                )
            failed = appends[0]
            raise ConcurrencyError(
                failed.stream_id, (failed.head or StreamHead()).version, None
            ) from exc
        envelopes = [_envelope(row, draft) for row, draft in zip(rows, drafts, strict=True)]
        note_appended(conn.info, [(e.service, e.event_type) for e in envelopes])
        return envelopes

    def append_to_stream(
        self,
        conn: Connection,
        stream_id: str,
        expected_version: int | None,
        new_events: Sequence[PendingEvent | EventPayload],
        context: CommandContext,
        *,
        region: str | None = None,
    ) -> list[EventEnvelope]:
        """One stream, for callers without the stream's state (tools, tests); commands go
        through the executor. ``expected_version`` None skips the check (the unique
        (stream, version) constraint still rejects a concurrent writer)."""
        head = None
        if expected_version is not None:
            head = self.stream_head(conn, stream_id)
            if head.version != expected_version:
                raise ConcurrencyError(stream_id, expected_version, head.version)
        return self.append(conn, [StreamAppend(stream_id, new_events, head, region)], context)

    # --- reading --------------------------------------------------------------------------

    def stream_head(self, conn: Connection, stream_id: str) -> StreamHead:
        row = conn.execute(_HEAD, {"stream_id": stream_id}).first()
        return StreamHead(row[0], row[1]) if row else StreamHead()

    def read_stream(
        self,
        conn: Connection,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
    ) -> list[EventEnvelope]:
        params = {
            "stream_id": stream_id,
            "from_version": from_version,
            "to_version": _MAX_VERSION if to_version is None else to_version,
        }
        found = [row_to_envelope(r) for r in _rows(conn, _READ_STREAM, params)]
        if recorded_until is not None:
            found = [e for e in found if e.recorded_at <= recorded_until]
        return found

    def read_stream_checked(
        self, conn: Connection, stream_id: str
    ) -> list[tuple[EventEnvelope, str]]:
        """The stream's events, each with the hash of its row as stored (``checked_row``):
        an audit trail's view."""
        params = {"stream_id": stream_id, "from_version": 1, "to_version": _MAX_VERSION}
        return [checked_row(r) for r in _rows(conn, _READ_STREAM, params)]

    def read_streams(
        self, conn: Connection, stream_ids: Iterable[str], *, recorded_until: datetime | None = None
    ) -> dict[str, list[EventEnvelope]]:
        """Several streams' events in one round (a statement per 500 streams on SQLite):
        what a projection recomputing whole tickets reads for a batch. Streams without
        events are absent."""
        found: dict[str, list[EventEnvelope]] = {}
        for row in _stream_rows(conn, sorted(set(stream_ids))):
            event = row_to_envelope(row)
            if recorded_until is None or event.recorded_at <= recorded_until:
                found.setdefault(event.stream_id, []).append(event)
        return found

    def read_all(
        self,
        conn: Connection,
        *,
        after_position: int = 0,
        limit: int = 1000,
        stream_types: Collection[str] | None = None,
        fields: frozenset[str] | None = None,
    ) -> list[EventEnvelope]:
        """Events after ``after_position`` in global order (``read_page``'s events). With
        ``stream_types``, a caller paging on resumes where ``read_page`` says the page ended,
        not after the last event it was given."""
        found, _ = self.read_page(
            conn,
            after_position=after_position,
            limit=limit,
            stream_types=stream_types,
            fields=fields,
        )
        return found

    def read_page(
        self,
        conn: Connection,
        *,
        after_position: int,
        limit: int,
        stream_types: Collection[str] | None = None,
        fields: frozenset[str] | None = None,
        sparse: bool = False,
    ) -> tuple[list[EventEnvelope], int | None]:
        """The events among the ``limit`` rows after ``after_position`` — only those of
        ``stream_types`` when given, the others never made into envelopes — and the
        position of the last row read (where the next page starts; None: none left).
        ``fields``: the envelope fields the caller reads (a projection's
        ``envelope_fields``); when ``FOLD_FIELDS`` hold them all, only those are read and
        the envelopes have no others. ``sparse`` (with ``stream_types``: few rows are of
        those types): up to ``limit`` rows of those types only, found by their index, up to
        the head read first — every position up to it is visible by then, since appends
        commit in position order — and the page ends at the head when it is not full."""
        fold = fields is not None and fields <= FOLD_FIELDS
        envelopes = _fold_envelopes if fold else _envelopes
        if sparse and stream_types:
            head = self.last_position(conn)
            if head <= after_position:
                return [], None
            in_list, params = _types(stream_types)
            params.update(after=after_position, head=head, limit=limit)
            found = _rows(conn, _read_typed(in_list, fold), params)
            return envelopes(found), int(found[-1][0]) if len(found) == limit else head
        rows = _rows(
            conn, _READ_ALL_FOLD if fold else _READ_ALL, {"after": after_position, "limit": limit}
        )
        if not rows:
            return [], None
        last = int(rows[-1][0])
        if stream_types:
            wanted = set(stream_types)
            # Both reads' third column is the stream type.
            rows = [r for r in rows if r[2] in wanted]
        return envelopes(rows), last

    def read_rows(
        self, conn: Connection, *, after_position: int, limit: int
    ) -> Sequence[Sequence[Any]]:
        """The stored rows after ``after_position`` in global order, as they are (columns in
        ``EVENT_COLUMNS`` order; ``row_to_envelope`` makes an event of one): for the
        verification, which reports a row that is no event instead of stopping on it."""
        return _rows(conn, _READ_ALL, {"after": after_position, "limit": limit})

    def read_in_stream_order(
        self,
        conn: Connection,
        *,
        after: tuple[str, int],
        head: int,
        limit: int,
        stream_types: Collection[str],
        fields: frozenset[str] | None = None,
    ) -> list[EventEnvelope]:
        """Up to ``limit`` events of ``stream_types`` up to position ``head``, ordered by
        stream and version, after the (stream id, version) ``after`` (``("", 0)``: from
        the first): every stream's events together, through the streams' unique index."""
        fold = fields is not None and fields <= FOLD_FIELDS
        in_list, params = _types(stream_types)
        params.update(sid=after[0], version=after[1], head=head, limit=limit)
        rows = _rows(conn, _read_by_stream(in_list, fold), params)
        return (_fold_envelopes if fold else _envelopes)(rows)

    def last_position(self, conn: Connection) -> int:
        return int(conn.execute(_LAST_POSITION).scalar_one())

    def open(self, conn: Connection, envelopes: Sequence[EventEnvelope]) -> list[EventEnvelope]:
        """The events with their personal fields in clear (or ``[erased]``): the explicit
        step for those who need the values (deciders, responses to roles that see them)."""
        if self.personal is None:
            return list(envelopes)
        return self.personal.open_events(conn, envelopes)


def _rows(conn: Connection, statement: Any, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
    """The rows of a text() statement, on the bare driver where there is one: a replay
    reads millions, and SQLAlchemy's per-row result processing would double the cost."""
    raw = sqlite_driver(conn)
    if raw is not None:
        sql, ordered = _positional(statement, params, "?")
        rows = read_tolerating_damage(conn, lambda: raw.execute(sql, ordered).fetchall())
        return cast(Sequence[Sequence[Any]], rows)
    pg = asyncpg_driver(conn)
    if pg is not None:  # asyncpg's records unpack like tuples; its statement cache prepares
        sql, ordered = _positional(statement, params, "$")
        return cast(Sequence[Sequence[Any]], await_only(pg.fetch(sql, *ordered)))
    return conn.execute(statement, params).all()


def _fetch_all(raw: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    return list(raw.execute(sql, params).fetchall())


def _stream_rows(conn: Connection, ids: list[str]) -> Iterable[Sequence[Any]]:
    order = "ORDER BY stream_id, stream_version"
    pg = asyncpg_driver(conn)
    if pg is not None:
        array = pg_array_of(events.c.stream_id)
        sql = f"{_SELECT_EVENTS} JOIN unnest($1::{array}) AS k(key) ON stream_id = k.key {order}"
        yield from await_only(pg.fetch(sql, ids))
        return
    raw = sqlite_driver(conn)
    for start in range(0, len(ids), 500):  # keep IN lists within driver limits
        chunk = ids[start : start + 500]
        where = f"WHERE stream_id IN ({', '.join('?' * len(chunk))})"
        if raw is not None:
            read = partial(_fetch_all, raw, f"{_SELECT_EVENTS} {where} {order}", chunk)
            yield from read_tolerating_damage(conn, read)
        else:
            yield from conn.execute(_READ_STREAMS, {"ids": chunk})


# --- copying the ledger into a SQLite file (``ticketline replay``'s scratch database) -------

_READ_UNTIL = text(
    f"{_SELECT_EVENTS} WHERE position > :after AND recorded_at <= :until "
    "ORDER BY position LIMIT :limit"
)


def stored_rows(
    conn: Connection, *, after_position: int, limit: int, recorded_until: datetime | None = None
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` rows after ``after_position`` (recorded until ``recorded_until``)
    as SQLite stores them, whatever the database: ``EVENT_COLUMNS`` order, times as text.
    Read on the bare driver and never made into envelopes: a copy of millions of events."""
    on_sqlite = conn.dialect.name == "sqlite"
    params: dict[str, Any] = {"after": after_position, "limit": limit}
    statement = _READ_ALL
    if recorded_until is not None:
        statement = _READ_UNTIL
        params["until"] = sqlite_time(recorded_until) if on_sqlite else recorded_until
    rows = _rows(conn, statement, params)
    if on_sqlite:  # stored that way already
        return [tuple(r) for r in rows]
    return [
        (*r[:_OCCURRED_AT], sqlite_time(r[_OCCURRED_AT]), sqlite_time(r[_RECORDED_AT]))
        + tuple(r[_RECORDED_AT + 1 :])
        for r in rows
    ]


def insert_stored_rows(conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
    """``stored_rows`` into this SQLite database's ledger, one ``executemany``."""
    raw = sqlite_driver(conn)
    if raw is None:
        raise ValueError("a copy of the ledger goes into a SQLite database")
    with integrity_errors("INSERT INTO events"):
        raw.executemany(_SQLITE_INSERT_EVENT, rows)


_POSITIONAL: dict[tuple[int, str], tuple[str, tuple[str, ...]]] = {}


def _positional(statement: Any, params: dict[str, Any], style: str) -> tuple[str, tuple[Any, ...]]:
    """A text() statement with positional parameters, ``?`` (sqlite3) or ``$n``
    (asyncpg), and its values in order (memoised)."""
    found = _POSITIONAL.get((id(statement), style))
    if found is None:
        import re

        pattern = r"(?<!:):(\w+)"
        names = tuple(re.findall(pattern, statement.text))
        numbers = iter(range(1, len(names) + 1))
        sql = re.sub(
            pattern, lambda _: "?" if style == "?" else f"${next(numbers)}", statement.text
        )
        found = _POSITIONAL[(id(statement), style)] = (sql, names)
    sql, names = found
    return sql, tuple(params[n] for n in names)

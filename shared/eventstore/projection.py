"""What a projection is: a named function of event batches that owns some read tables.

A projection receives the *new* events of a batch, in order (the runner has already
dropped duplicates and filled gaps), and writes its tables with a few statements per batch,
never one per event. ``RowProjection`` is the common shape: load the rows a batch touches
with one SELECT, fold every event into them in memory, write them back with one upsert.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import UTC, datetime
from functools import cache
from operator import itemgetter
from typing import Any, ClassVar, Protocol, cast

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex
from sqlalchemy.util import await_only

from shared.eventstore.db import UtcDateTime, take_locks, utc_from_stored
from shared.eventstore.driver import (
    asyncpg_driver,
    integrity_errors,
    pg_array_of,
    sqlite_driver,
    sqlite_time,
)
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.registry import payload_dict

Row = dict[str, Any]


class Projection(Protocol):
    """Must be a deterministic function of the events (no wall clock, no random), so that a
    rebuild from zero gives the same rows as applying the events one batch at a time.

    Optional: ``envelope_fields`` (the envelope fields it reads: lighter ledger reads),
    ``fold_in_database(conn, head)`` (its tables from every event up to ``head`` in SQL,
    and each stream's applied version, for a rebuild from the ledger; raises
    ``IntegrityError`` on what it cannot fold: ``ProjectionRunner.rebuild``) and
    ``recomputes_whole_streams`` (True when ``apply`` recomputes each stream it is given
    from the ledger, whole, whatever events it was given: a rebuild then reads the ledger
    in stream order, ``StreamOrderSource``)."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    stream_types: ClassVar[tuple[str, ...]]

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None: ...


def envelope_fields(projection: Projection) -> frozenset[str] | None:
    """The envelope fields a projection reads, if it declares them (a class attribute
    ``envelope_fields``; None: all). A ledger page read for it alone then holds only the
    fields of a fold (``FOLD_FIELDS``, shared/eventstore/ledger.py) when those cover them:
    a rebuild reads half the bytes. Its other sources (commands applying it inline, Kafka,
    gap fills) give whole envelopes, so a field used but not declared fails in a rebuild,
    which the rebuild tests run."""
    return cast("frozenset[str] | None", getattr(projection, "envelope_fields", None))


def fields_of(projections: Iterable[Projection]) -> frozenset[str] | None:
    """What one read serving all of ``projections`` must hold (None: whole envelopes)."""
    declared = [envelope_fields(p) for p in projections]
    if not declared or any(f is None for f in declared):
        return None
    return frozenset().union(*cast("list[frozenset[str]]", declared))


class EventByEvent:
    """For projections with little traffic: ``handle`` one event at a time."""

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            self.handle(conn, event)

    def handle(self, conn: Connection, event: EventEnvelope) -> None:
        raise NotImplementedError


_UPSERTS: dict[tuple[str, str], Any] = {}


def lock_tickets(conn: Connection, projection: str, ticket_ids: Sequence[str]) -> None:
    """PostgreSQL: one applier of a projection's rows of each ticket at a time, until
    commit, for a projection that recomputes tickets from the ledger. A command applying
    a ticket's events inline and a projector applying its parts paperwork would otherwise
    each recompute without the other's uncommitted event, and the last to commit would
    leave rows that miss one."""
    take_locks(conn, [f"{projection}:ticket:{t}" for t in ticket_ids])


def upsert_rows(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    """Insert or replace whole rows by primary key: one executemany statement."""
    if not rows:
        return
    raw = sqlite_driver(conn)
    if raw is not None:
        sql, columns, converted = _sqlite_upsert(table)
        take = itemgetter(*columns)
        values = []
        for row in rows:
            value = list(take(row))
            for at, convert in converted:
                if value[at] is not None:  # most optional columns are empty
                    value[at] = convert(value[at])
            values.append(value)
        with integrity_errors(sql):
            raw.executemany(sql, values)
        return
    pg = asyncpg_driver(conn)
    if pg is not None and (upsert := _pg_upsert(table)) is not None:
        sql, columns = upsert
        with integrity_errors(sql):
            await_only(pg.executemany(sql, [_pg_values(row, columns) for row in rows]))
        return
    key = (conn.dialect.name, table.name)
    statement = _UPSERTS.get(key)
    if statement is None:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        base = insert(table)
        pk = [c.name for c in table.primary_key.columns]
        statement = _UPSERTS[key] = base.on_conflict_do_update(
            index_elements=pk,
            set_={c.name: base.excluded[c.name] for c in table.columns if c.name not in pk},
        )
    conn.execute(statement, list(rows))


def delete_rows(conn: Connection, table: Table, keys: Iterable[tuple[Any, ...]]) -> None:
    """Delete rows by primary key."""
    keys = list(keys)
    if not keys:
        return
    pk = list(table.primary_key.columns)
    if len(pk) == 1:
        delete_where_in(conn, table, pk[0].name, [k[0] for k in keys])
        return
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        where = or_(*(and_(*(c == v for c, v in zip(pk, k, strict=True))) for k in chunk))
        conn.execute(delete(table).where(where))


def delete_where_in(conn: Connection, table: Table, column: str, values: Sequence[Any]) -> None:
    """Delete the rows whose ``column`` is one of ``values``: on the driver where there is
    one, a statement per 500 values (one in all on PostgreSQL)."""
    if not values:
        return
    raw = sqlite_driver(conn)
    pg = asyncpg_driver(conn) if raw is None else None
    if pg is not None:
        array = pg_array_of(table.c[column])
        sql = f"DELETE FROM {table.name} USING unnest($1::{array}) AS k(key) WHERE {column} = k.key"
        await_only(pg.execute(sql, list(values)))
        return
    for start in range(0, len(values), 500):
        chunk = list(values[start : start + 500])
        if raw is not None:
            raw.execute(
                f"DELETE FROM {table.name} WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk
            )
        else:
            conn.execute(delete(table).where(table.c[column].in_(chunk)))


@cache
def _pg_load(table: Table) -> Select[Any]:
    pk = next(iter(table.primary_key.columns))
    keys = bindparam("keys", type_=postgresql.ARRAY(pk.type))
    wanted = func.unnest(keys).table_valued("key").render_derived()
    return select(table).join(wanted, pk == wanted.c.key)


def drop_secondary_indexes(conn: Connection, tables: Iterable[Table]) -> None:
    """Drop the tables' non-unique indexes (unique ones keep guarding their rule): a
    rebuild fills the tables, then ``create_missing_indexes`` sorts each index once instead
    of inserting into every B-tree per row."""
    for table in tables:
        for index in table.indexes:
            if not index.unique:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")


def create_missing_indexes(conn: Connection, tables: Iterable[Table]) -> None:
    """Create the tables' indexes that are missing, as the schema declares them (the
    migrations create the same ones: tests/test_migrations.py). ``IF NOT EXISTS`` rather
    than SQLAlchemy's check first, which looks each index up in the catalog (80 ms of a
    PostgreSQL rebuild)."""
    for table in tables:
        for index in table.indexes:
            conn.execute(CreateIndex(index, if_not_exists=True))


def load_rows(conn: Connection, table: Table, keys: Iterable[tuple[Any, ...]]) -> dict[Any, Row]:
    """The rows with these primary keys, by key tuple; at most 500 keys per SELECT."""
    keys = list(keys)
    pk = _primary_key(table)
    found: dict[Any, Row] = {}
    raw = sqlite_driver(conn)
    if raw is not None and len(pk) == 1:
        columns, readers = _sqlite_readers(table)
        for start in range(0, len(keys), 500):
            chunk = [k[0] for k in keys[start : start + 500]]
            sql = (
                f"SELECT {', '.join(columns)} FROM {table.name} "
                f"WHERE {pk[0].name} IN ({', '.join('?' * len(chunk))})"
            )
            for values in raw.execute(sql, chunk):
                row = {c: f(v) for c, f, v in zip(columns, readers, values, strict=True)}
                found[(row[pk[0].name],)] = row
        return found
    if conn.dialect.name == "postgresql" and len(pk) == 1:
        rows = conn.execute(_pg_load(table), {"keys": [k[0] for k in keys]}).mappings()
        return {(r[pk[0].name],): dict(r) for r in rows}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        where = pk[0].in_([k[0] for k in chunk]) if len(pk) == 1 else tuple_(*pk).in_(chunk)
        for r in conn.execute(select(table).where(where)).mappings():
            found[tuple(r[c.name] for c in pk)] = dict(r)
    return found


# --- SQLite: the driver directly, with each column's conversion done once per table.
# SQLAlchemy's per-value type processing is most of the cost of a batch otherwise.


@cache
def _pg_upsert(table: Table) -> tuple[str, list[str]] | None:
    """The upsert as asyncpg SQL, for tables whose values asyncpg takes as they are
    (text, numbers, booleans, aware datetimes); None for others (JSON columns go through
    SQLAlchemy's serialiser)."""
    if any(isinstance(c.type, JSON | Date) or type(c.type) is DateTime for c in table.columns):
        return None
    columns = [c.name for c in table.columns]
    return _upsert_sql(table, [f"${i}" for i in range(1, len(columns) + 1)]), columns


def _upsert_sql(table: Table, placeholders: list[str]) -> str:
    """Insert a whole row, or replace it by primary key (the driver's placeholders)."""
    columns = [c.name for c in table.columns]
    pk = [c.name for c in table.primary_key.columns]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in pk)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(placeholders)}) "
        f"ON CONFLICT ({', '.join(pk)}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
    )


def _pg_values(row: Row, columns: list[str]) -> list[Any]:
    values = [row[c] for c in columns]
    for at, value in enumerate(values):
        if isinstance(value, datetime) and value.tzinfo is not UTC:
            # What UtcDateTime does on the way in.
            if value.tzinfo is None:
                raise ValueError("naive datetime; use timezone-aware UTC datetimes")
            values[at] = value.astimezone(UTC)
    return values


def _same(value: Any) -> Any:
    return value


def _write_time(value: datetime | None) -> str | None:
    return None if value is None else sqlite_time(value)


def _read_time(value: str | None) -> datetime | None:
    return None if value is None else utc_from_stored(value)


def _write_bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _read_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _write_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _read_json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def _converters(table: Table, writing: bool) -> list[Callable[[Any], Any]]:
    out: list[Callable[[Any], Any]] = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, UtcDateTime):
            out.append(_write_time if writing else _read_time)
        elif isinstance(kind, Boolean):
            out.append(_write_bool if writing else _read_bool)
        elif isinstance(kind, JSON):
            out.append(_write_json if writing else _read_json)
        elif isinstance(kind, Date | DateTime):
            raise TypeError(f"{table.name}.{column.name}: use UtcDateTime or a string")
        else:
            out.append(_same)
    return out


@cache
def _sqlite_upsert(table: Table) -> tuple[str, list[str], list[tuple[int, Callable[[Any], Any]]]]:
    columns = [c.name for c in table.columns]
    sql = _upsert_sql(table, ["?"] * len(columns))
    converted = [(at, f) for at, f in enumerate(_converters(table, writing=True)) if f is not _same]
    return sql, columns, converted


@cache
def _primary_key(table: Table) -> tuple[Column[Any], ...]:
    # Iterating a ColumnCollection builds a list each time: 2 % of a POST /tickets.
    return tuple(table.primary_key.columns)


@cache
def _sqlite_readers(table: Table) -> tuple[list[str], list[Callable[[Any], Any]]]:
    return [c.name for c in table.columns], _converters(table, writing=False)


class RowProjection:
    """Rows of one table folded in memory: ``key`` says which row an event touches (its
    primary key values, or None), ``fold`` returns that row after the event (None deletes
    it). Incremental and rebuilt rows are the same by construction."""

    table: ClassVar[Table]

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        raise NotImplementedError

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        raise NotImplementedError

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        touched = [(k, e) for e in events if (k := self.key(e)) is not None]
        if not touched:
            return
        rows: dict[Any, Row | None] = dict(load_rows(conn, self.table, {k for k, _ in touched}))
        existed = set(rows)
        changed: set[Any] = set()
        for key, event in touched:
            rows[key] = self.fold(rows.get(key), event)
            changed.add(key)
        upsert_rows(conn, self.table, [r for k in changed if (r := rows[k]) is not None])
        delete_rows(conn, self.table, [k for k in changed if rows[k] is None and k in existed])


class EventRowProjection(RowProjection):
    """One row per event of one type, keyed by its event id: a table that copies a
    service's own records (``row`` says which columns)."""

    event_type: ClassVar[str]

    def key(self, event: EventEnvelope) -> tuple[Hashable, ...] | None:
        return (str(event.event_id),) if event.event_type == self.event_type else None

    def fold(self, row: Row | None, event: EventEnvelope) -> Row | None:
        return self.row(event, payload_dict(event))

    def row(self, event: EventEnvelope, payload: dict[str, Any]) -> Row:
        raise NotImplementedError

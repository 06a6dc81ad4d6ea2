"""What a projection is: a named function of event batches that owns some read tables.

A projection receives the *new* events of a batch, in order (the runner has already
dropped duplicates and filled gaps), and writes its tables with a few statements per batch,
never one per event. ``RowProjection`` is the common shape: load the rows a batch touches
with one SELECT, fold every event into them in memory, write them back with one upsert.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

from sqlalchemy import Connection, Table, and_, delete, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from shared.kernel.events.envelope import EventEnvelope

Row = dict[str, Any]


class Projection(Protocol):
    """Must be a deterministic function of the events (no wall clock, no random), so that a
    rebuild from zero gives the same rows as applying the events one batch at a time."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    stream_types: ClassVar[tuple[str, ...]]

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None: ...


class EventByEvent:
    """For projections with little traffic: ``handle`` one event at a time."""

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            self.handle(conn, event)

    def handle(self, conn: Connection, event: EventEnvelope) -> None:
        raise NotImplementedError


_UPSERTS: dict[tuple[str, str], Any] = {}


def upsert_rows(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    """Insert or replace whole rows by primary key: one executemany statement."""
    if not rows:
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
    keys = list(keys)
    if not keys:
        return
    pk = list(table.primary_key.columns)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        if len(pk) == 1:
            where = pk[0].in_([k[0] for k in chunk])
        else:
            where = or_(*(and_(*(c == v for c, v in zip(pk, k, strict=True))) for k in chunk))
        conn.execute(delete(table).where(where))


def load_rows(conn: Connection, table: Table, keys: Iterable[tuple[Any, ...]]) -> dict[Any, Row]:
    """The rows with these primary keys, by key tuple; at most 500 keys per SELECT."""
    keys = list(keys)
    pk = list(table.primary_key.columns)
    found: dict[Any, Row] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        where = pk[0].in_([k[0] for k in chunk]) if len(pk) == 1 else tuple_(*pk).in_(chunk)
        for r in conn.execute(select(table).where(where)).mappings():
            found[tuple(r[c.name] for c in pk)] = dict(r)
    return found


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

"""The database driver under a SQLAlchemy connection, for the hot paths that skip
SQLAlchemy's per-statement work (the ledger's append, projections' batch upserts, a
command's few lookups: ``Statement``). A constraint the driver reports violated is raised
as SQLAlchemy's ``IntegrityError`` on every path, as callers expect from ``conn.execute``."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Column, Connection, Executable, Row, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.util import await_only

T = TypeVar("T")


def sqlite_driver(conn: Connection) -> Any | None:
    """The sqlite3 connection under ``conn`` (its statement cache makes repeated statements
    cheap), or None on other drivers."""
    if conn.dialect.driver != "pysqlite":
        return None
    return conn.connection.driver_connection


def sqlite_time(value: datetime) -> str:
    """What SQLAlchemy's SQLite DateTime stores (UTC, no offset, microseconds)."""
    if value.tzinfo is UTC:  # the usual case: one C call, the offset cut off
        return value.isoformat(" ", "microseconds")[:-6]
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class DamagedText(str):
    """A stored text whose bytes are not UTF-8 (a hand edit of the file, damage): read as
    text with the bad bytes escaped (``surrogateescape``), so the row can be named rather
    than the whole read fail. PostgreSQL refuses such text on the way in."""


def _text_or_damaged(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return DamagedText(value.decode("utf-8", "surrogateescape"))


def is_undecodable(exc: BaseException) -> bool:
    """sqlite3's refusal of a text column that is not UTF-8 (raised for the whole read)."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and "Could not decode to UTF-8" in str(orig)


@contextlib.contextmanager
def damaged_text_read(conn: Connection) -> Iterator[None]:
    """Reads of the ledger's rows, where one not in UTF-8 is read as ``DamagedText``
    instead of failing the read: only for a read that met one (``is_undecodable``) —
    sqlite3 decodes in C with its default, several times faster."""
    raw = sqlite_driver(conn)
    if raw is None:
        yield
        return
    raw.text_factory = _text_or_damaged
    try:
        yield
    finally:
        raw.text_factory = str


def read_tolerating_damage(conn: Connection, read: Callable[[], T]) -> T:
    """``read()``, once more with damaged text readable when a row's text is not UTF-8:
    the row is then the one reported (``UnreadableEvent``, ``ticketline verify``)."""
    try:
        return read()
    except Exception as exc:
        if not is_undecodable(exc):
            raise
    with damaged_text_read(conn):
        return read()


def rows_tolerating_damage(conn: Connection, statement: Executable) -> Sequence[Row[Any]]:
    """``conn.execute(statement).all()`` through :func:`read_tolerating_damage`: the rows
    of a SQLAlchemy read of the ledger."""
    return read_tolerating_damage(conn, lambda: conn.execute(statement).all())


def asyncpg_driver(conn: Connection) -> Any | None:
    """The asyncpg connection under ``conn`` inside a unit of work (so in our transaction),
    or None on other drivers and when SQLAlchemy manages the transaction."""
    if conn.dialect.driver != "asyncpg":
        return None
    if not getattr(conn.connection.dbapi_connection, "autocommit", False):
        return None  # the legacy API's transaction: go through SQLAlchemy
    return conn.connection.driver_connection


@contextlib.contextmanager
def integrity_errors(statement: str) -> Iterator[None]:
    """A driver's constraint violation (unique, check, not null, foreign key) raised as
    SQLAlchemy's ``IntegrityError``."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(statement, None, exc) from exc
    except Exception as exc:
        asyncpg = sys.modules.get("asyncpg")  # never imported: not an asyncpg error
        if asyncpg is not None and isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            raise IntegrityError(statement, None, exc) from exc
        raise


# --- statements on the driver: the few on a command's hot path (a new customer's key, a
# phone's blind index, a ticket number, the duplicate check, the idempotency record).


@dataclass(frozen=True)
class Statement:
    """One statement with ``:name`` parameters, given positionally in ``names`` order."""

    sql: str
    names: tuple[str, ...] = field(init=False)
    qmark: str = field(init=False)
    dollar: str = field(init=False)
    clause: TextClause = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(re.findall(r"(?<!:):(\w+)", self.sql))
        counter = iter(range(1, len(names) + 1))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "qmark", re.sub(r"(?<!:):(\w+)", "?", self.sql))
        dollar = re.sub(r"(?<!:):(\w+)", lambda _m: f"${next(counter)}", self.sql)
        object.__setattr__(self, "dollar", dollar)
        object.__setattr__(self, "clause", text(self.sql))

    def execute(self, conn: Connection, *args: Any) -> int:
        """Run it; the rows it changed."""
        raw = sqlite_driver(conn)
        if raw is not None:
            with integrity_errors(self.sql):
                return int(raw.execute(self.qmark, _sqlite_values(args)).rowcount)
        pg = asyncpg_driver(conn)
        if pg is not None:
            with integrity_errors(self.sql):
                status = await_only(pg.execute(self.dollar, *args))
            return int(str(status).rsplit(" ", 1)[-1])
        return int(conn.execute(self.clause, dict(zip(self.names, args, strict=True))).rowcount)

    def rows(self, conn: Connection, *args: Any) -> list[tuple[Any, ...]]:
        """Every row, as tuples; times as the driver gives them."""
        raw = sqlite_driver(conn)
        if raw is not None:
            with integrity_errors(self.sql):
                return [tuple(r) for r in raw.execute(self.qmark, _sqlite_values(args))]
        pg = asyncpg_driver(conn)
        if pg is not None:
            with integrity_errors(self.sql):
                return [tuple(r) for r in await_only(pg.fetch(self.dollar, *args))]
        result = conn.execute(self.clause, dict(zip(self.names, args, strict=True)))
        return [tuple(r) for r in result]

    def scalar(self, conn: Connection, *args: Any) -> Any:
        """The first column of the first row (None without rows)."""
        row = self.first(conn, *args)
        return None if row is None else row[0]

    def first(self, conn: Connection, *args: Any) -> tuple[Any, ...] | None:
        """The first row as a tuple (None without rows); times as the driver gives them."""
        raw = sqlite_driver(conn)
        if raw is not None:
            with integrity_errors(self.sql):
                row = raw.execute(self.qmark, _sqlite_values(args)).fetchone()
            return None if row is None else tuple(row)
        pg = asyncpg_driver(conn)
        if pg is not None:
            with integrity_errors(self.sql):
                found = await_only(pg.fetchrow(self.dollar, *args))
            return None if found is None else tuple(found)
        result = conn.execute(self.clause, dict(zip(self.names, args, strict=True))).first()
        return None if result is None else tuple(result)


def _sqlite_values(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(sqlite_time(a) if isinstance(a, datetime) else a for a in args)


_PG_DIALECT = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]


@cache
def pg_array_of(column: Column[Any]) -> str:
    """The array type of a parameter holding values of ``column`` (``VARCHAR(64)[]``).

    On PostgreSQL, rows are found by a list of keys by joining ``unnest`` of one such
    array: a plan linear in rows and keys whatever the table's statistics. ``IN (…500
    values…)`` on a table not analysed yet (a rebuild or a burst into a new database) was
    planned as a scan testing every row against the whole list: 115 ms a batch at 7,500
    rows, growing with the table until autovacuum's first ANALYZE."""
    return f"{column.type.compile(dialect=_PG_DIALECT)}[]"

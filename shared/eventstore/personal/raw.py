"""The few statements on a command's hot path (a new customer's key, a phone's blind index,
the lookup; a ticket number, the duplicate check, the idempotency record), run on the
driver directly as the ledger's append does: SQLAlchemy's per-statement work would cost
more than the statement itself. Other drivers go through SQLAlchemy. A unique violation
is SQLAlchemy's ``IntegrityError`` on every path, as callers expect from ``conn.execute``."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, TextClause, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.util import await_only


def _sqlite_time(value: datetime) -> str:
    """What SQLAlchemy's SQLite DateTime stores (UTC, no offset, microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


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
        driver = conn.dialect.driver
        if driver == "pysqlite":
            raw = conn.connection.driver_connection
            values = _sqlite_values(args)
            cursor = self._unique(lambda: raw.execute(self.qmark, values))  # type: ignore[union-attr]
            return int(cursor.rowcount)
        pg = _asyncpg(conn)
        if pg is not None:
            status = self._unique(lambda: await_only(pg.execute(self.dollar, *args)))
            return int(str(status).rsplit(" ", 1)[-1])
        return int(conn.execute(self.clause, dict(zip(self.names, args, strict=True))).rowcount)

    def scalar(self, conn: Connection, *args: Any) -> Any:
        """The first column of the first row (None without rows)."""
        row = self.first(conn, *args)
        return None if row is None else row[0]

    def first(self, conn: Connection, *args: Any) -> tuple[Any, ...] | None:
        """The first row as a tuple (None without rows); times as the driver gives them."""
        driver = conn.dialect.driver
        if driver == "pysqlite":
            raw = conn.connection.driver_connection
            values = _sqlite_values(args)
            row = self._unique(lambda: raw.execute(self.qmark, values).fetchone())  # type: ignore[union-attr]
            return None if row is None else tuple(row)
        pg = _asyncpg(conn)
        if pg is not None:
            found = self._unique(lambda: await_only(pg.fetchrow(self.dollar, *args)))
            return None if found is None else tuple(found)
        result = conn.execute(self.clause, dict(zip(self.names, args, strict=True))).first()
        return None if result is None else tuple(result)

    def _unique(self, run: Callable[[], Any]) -> Any:
        """``run()``, a driver's unique violation raised as SQLAlchemy's ``IntegrityError``."""
        try:
            return run()
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(self.sql, None, exc) from exc
        except Exception as exc:
            import asyncpg  # only here: SQLite deployments never need it

            if isinstance(exc, asyncpg.UniqueViolationError):
                raise IntegrityError(self.sql, None, exc) from exc
            raise


def _sqlite_values(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_sqlite_time(a) if isinstance(a, datetime) else a for a in args)


def _asyncpg(conn: Connection) -> Any | None:
    """The asyncpg connection under ``conn`` inside a unit of work (our transaction), or
    None when SQLAlchemy manages the transaction."""
    if conn.dialect.driver != "asyncpg":
        return None
    if not getattr(conn.connection.dbapi_connection, "autocommit", False):
        return None
    return conn.connection.driver_connection

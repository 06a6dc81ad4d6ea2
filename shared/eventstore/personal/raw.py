"""The few statements on the append's path (a new customer's key, a phone's blind index,
the lookup), run on the driver directly as the ledger's append does: SQLAlchemy's
per-statement work would cost more than the cipher itself. Other drivers go through
SQLAlchemy."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, TextClause, text
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
            values = tuple(_sqlite_time(a) if isinstance(a, datetime) else a for a in args)
            return int(raw.execute(self.qmark, values).rowcount)  # type: ignore[union-attr]
        pg = _asyncpg(conn)
        if pg is not None:
            status = await_only(pg.execute(self.dollar, *args))
            return int(str(status).rsplit(" ", 1)[-1])
        return int(conn.execute(self.clause, dict(zip(self.names, args, strict=True))).rowcount)

    def scalar(self, conn: Connection, *args: Any) -> Any:
        """The first column of the first row (None without rows)."""
        driver = conn.dialect.driver
        if driver == "pysqlite":
            raw = conn.connection.driver_connection
            row = raw.execute(self.qmark, args).fetchone()  # type: ignore[union-attr]
            return None if row is None else row[0]
        pg = _asyncpg(conn)
        if pg is not None:
            return await_only(pg.fetchval(self.dollar, *args))
        return conn.execute(self.clause, dict(zip(self.names, args, strict=True))).scalar()


def _asyncpg(conn: Connection) -> Any | None:
    """The asyncpg connection under ``conn`` inside a unit of work (our transaction), or
    None when SQLAlchemy manages the transaction."""
    if conn.dialect.driver != "asyncpg":
        return None
    if not getattr(conn.connection.dbapi_connection, "autocommit", False):
        return None
    return conn.connection.driver_connection

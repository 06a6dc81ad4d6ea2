"""Physical limits of this machine, measured in the same run as Ticketline's figures.

Each function does the least work that the matching Ticketline figure cannot avoid (one
row per transaction, one read and one JSON decode per event, …) with the bare driver,
and returns a :class:`bench.measure.Result`. The ratio Ticketline / limit is what the
report shows: on a shared, noisy machine it moves far less than the absolute numbers.

- :func:`sqlite_insert_per_transaction` — bare ``sqlite3``, WAL, one INSERT of an
  ``events``-shaped row per ``BEGIN IMMEDIATE … COMMIT``; from asyncio through one
  dedicated writer thread (one hop per transaction) or directly in one thread.
- :func:`asyncpg_insert_per_transaction` — bare asyncpg, the same row, one INSERT per
  ``conn.transaction()``, prepared statement.
- :func:`sqlite_ledger_statements_per_transaction` and
  :func:`asyncpg_ledger_statements_per_transaction` — the ledger's own statements for one
  event (position counter, event row with its indexes, outbox row) on the bare driver, in
  a database of Ticketline's schema: the floor under the append that no code can go below
  with this schema, beside the one-row limit (what the schema itself costs).
- :func:`raw_read_and_decode` — the ``events`` table of a real Ticketline database in
  pages of 5,000 by position, each payload through ``orjson.loads``.

The HTTP limit (a bare FastAPI endpoint, one aiosqlite INSERT per request) is
``bench/bare_app.py``, started by ``bench.processes.start_bare_endpoint`` and driven by
``bench.loadgen.run_load``, like Ticketline's own ``POST /tickets``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Column, MetaData, Table
from sqlalchemy.dialects.postgresql.asyncpg import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite.pysqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from bench.measure import Deadline, Result
from shared.eventstore.ledger import EVENT_COLUMNS
from shared.eventstore.tables import events

LIMIT_TABLE = "bench_limit_events"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def _limit_ddl(dialect: Dialect) -> str:
    """The ``events`` table's columns under another name (``position`` the INTEGER
    PRIMARY KEY on SQLite). No secondary index or constraint: the limit is the row."""
    copy = Table(
        LIMIT_TABLE,
        MetaData(),
        *(
            Column(
                c.name,
                c.type,
                primary_key=c.primary_key,
                nullable=c.nullable,
                autoincrement=False,
            )
            for c in events.columns
        ),
    )
    return str(CreateTable(copy).compile(dialect=dialect))


def received_payload_template() -> str:
    """The canonical JSON of a TicketReceived payload (what the ledger stores), made the
    way the tests make one: factories ``received(n)`` → ``canonical_json``."""
    from shared.kernel.events.envelope import canonical_json
    from tests.support.factories import received

    return canonical_json(received(1).model_dump(mode="json"))


def event_rows(count: int, *, sqlite: bool) -> list[tuple[Any, ...]]:
    """``count`` rows shaped like ``events`` (one new ticket each, version 1), positions
    1..count. Made before the clock starts: the limit measures the database, not Python
    building tuples. SQLite gets timestamps as SQLAlchemy stores them (text), PostgreSQL
    timezone-aware datetimes."""
    template = received_payload_template()
    marker = "TL-20261102-000001"
    now = datetime.now(UTC)
    stamp: Any = now.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    if not sqlite:
        stamp = now
    rows = []
    for i in range(1, count + 1):
        rows.append(
            (
                i,
                str(uuid.uuid4()),
                "ticket",
                str(uuid.uuid4()),
                1,
                "TicketReceived",
                1,
                stamp,
                stamp,
                "bench",
                "call_center_agent",
                "intake",
                str(uuid.uuid4()),
                None,
                "east",
                template.replace(marker, f"TL-20261102-{i % 1_000_000:06d}"),
                "0" * 64,
                f"{i:064x}",
            )
        )
    return rows


def _insert_sql(placeholder: Callable[[int], str]) -> str:
    values = ", ".join(placeholder(i) for i in range(1, len(EVENT_COLUMNS) + 1))
    return f"INSERT INTO {LIMIT_TABLE} ({', '.join(EVENT_COLUMNS)}) VALUES ({values})"


def _wal_connection(path: str | Path, synchronous: str) -> sqlite3.Connection:
    if synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
    # isolation_level=None: the driver issues no BEGIN of its own; we say BEGIN IMMEDIATE.
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    return conn


def _open_sqlite(path: str | Path, synchronous: str) -> sqlite3.Connection:
    conn = _wal_connection(path, synchronous)
    conn.execute(f"DROP TABLE IF EXISTS {LIMIT_TABLE}")
    conn.execute(_limit_ddl(sqlite_dialect()))
    return conn


async def sqlite_insert_per_transaction(
    path: str | Path,
    n: int,
    *,
    synchronous: str = "NORMAL",
    via_thread_hop: bool = True,
    concurrency: int = 1,
    max_seconds: float = 30.0,
) -> Result:
    """Up to ``n`` transactions (stopping after ``max_seconds``), each ``BEGIN IMMEDIATE;
    INSERT one events-shaped row; COMMIT`` on a WAL database at ``path`` (its table
    ``bench_limit_events`` is dropped and recreated).

    ``via_thread_hop=True``: called from asyncio, each transaction is handed to one
    dedicated writer thread and awaited — one hop there and back per transaction, what an
    asyncio application must pay at least (aiosqlite does the same, with more hops per
    transaction). ``concurrency`` tasks submit at once (still one transaction at a time
    on the writer thread). ``via_thread_hop=False``: the whole loop runs in one thread,
    no hop per transaction (``concurrency`` must be 1). Latencies are per transaction,
    as the caller sees them."""
    insert = _insert_sql(lambda _: "?")
    result = await _sqlite_transactions(
        lambda: _open_sqlite(path, synchronous),
        lambda conn, row: conn.execute(insert, row),
        event_rows(n, sqlite=True),
        via_thread_hop=via_thread_hop,
        concurrency=concurrency,
        max_seconds=max_seconds,
    )
    result.detail["synchronous"] = synchronous.upper()
    return result


async def sqlite_ledger_statements_per_transaction(
    url: str, n: int, *, max_seconds: float = 30.0
) -> Result:
    """Up to ``n`` transactions on the Ticketline database at ``url`` (SQLite, migrated),
    each the ledger's statements for one event — ``BEGIN IMMEDIATE``, the counter's
    UPDATE … RETURNING, the events INSERT, the outbox INSERT, ``COMMIT`` — through one
    writer thread, one hop per transaction, as the platform's writer does. The rows are
    made before the clock starts (no hashing, no JSON): what is left is the database."""
    from shared.eventstore.ledger import (
        _SQLITE_INSERT_EVENT,
        _SQLITE_INSERT_OUTBOX,
        _SQLITE_TAKE_POSITIONS,
    )

    def statements(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        (position,) = conn.execute(_SQLITE_TAKE_POSITIONS, (1,)).fetchone()
        conn.execute(_SQLITE_INSERT_EVENT, (position, *row[1:]))
        conn.execute(_SQLITE_INSERT_OUTBOX, (position,))

    return await _sqlite_transactions(
        lambda: _wal_connection(sqlite_path(url), "NORMAL"),
        statements,
        event_rows(n, sqlite=True),
        max_seconds=max_seconds,
    )


async def _sqlite_transactions(
    open_: Callable[[], sqlite3.Connection],
    statements: Callable[[sqlite3.Connection, tuple[Any, ...]], Any],
    rows: list[tuple[Any, ...]],
    *,
    via_thread_hop: bool = True,
    concurrency: int = 1,
    max_seconds: float,
) -> Result:
    """``statements`` for each row in ``BEGIN IMMEDIATE … COMMIT`` on a connection of its
    own writer thread (see ``sqlite_insert_per_transaction`` for the hop and callers)."""
    if not via_thread_hop and concurrency != 1:
        raise ValueError("the direct variant has one caller")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-sqlite-writer")
    loop = asyncio.get_running_loop()
    conn = await loop.run_in_executor(writer, open_)

    def transaction(row: tuple[Any, ...]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            statements(conn, row)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    detail: dict[str, Any] = {"via_thread_hop": via_thread_hop}
    try:
        if via_thread_hop:

            async def hop(row: tuple[Any, ...]) -> None:
                await loop.run_in_executor(writer, transaction, row)

            result = await _timed_callers([hop] * concurrency, iter(rows), max_seconds)
            detail["concurrency"] = concurrency
        else:
            result = await loop.run_in_executor(writer, _timed_loop, transaction, rows, max_seconds)
        result.detail = detail
        return result
    finally:
        await loop.run_in_executor(writer, conn.close)
        writer.shutdown(wait=True)


async def asyncpg_ledger_statements_per_transaction(
    url: str, n: int, *, max_seconds: float = 30.0
) -> Result:
    """Up to ``n`` transactions on the Ticketline database at ``url`` (PostgreSQL,
    migrated), each ``BEGIN``, the ledger's one-statement append of one event (counter,
    event row with its server-side hash, outbox row; prepared), ``COMMIT``: the round trips
    the platform's writer makes, without Python around them."""
    import asyncpg

    from shared.eventstore.ledger import _PG_APPEND_ONE

    rows = event_rows(n, sqlite=False)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    statement = await conn.prepare(_PG_APPEND_ONE)

    async def transaction(row: tuple[Any, ...]) -> None:
        await conn.execute("BEGIN")
        # event_id … payload, prev_hash, the hashed text around the position.
        await statement.fetchrow(*row[1:16], row[16], '{"position":', "}")
        await conn.execute("COMMIT")

    try:
        return await _timed_callers([transaction], iter(rows), max_seconds)
    finally:
        await conn.close()


def _timed_loop(
    transaction: Callable[[tuple[Any, ...]], None], rows: list[tuple[Any, ...]], max_seconds: float
) -> Result:
    """Transactions one after the other in this thread, until the rows or the time run out."""
    latencies: list[float] = []
    deadline = Deadline(max_seconds)
    started = time.perf_counter()
    for row in rows:
        if deadline.expired():
            break
        t0 = time.perf_counter()
        transaction(row)
        latencies.append(time.perf_counter() - t0)
    return Result(len(latencies), time.perf_counter() - started, latencies)


async def _timed_callers(
    callers: Sequence[Callable[[tuple[Any, ...]], Awaitable[Any]]],
    source: Iterator[tuple[Any, ...]],
    max_seconds: float,
) -> Result:
    """One task per caller, each awaiting one transaction at a time, sharing the rows."""
    deadline = Deadline(max_seconds)
    latencies: list[float] = []

    async def run(transaction: Callable[[tuple[Any, ...]], Awaitable[Any]]) -> None:
        for row in source:
            if deadline.expired():
                return
            t0 = time.perf_counter()
            await transaction(row)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in callers))
    return Result(len(latencies), time.perf_counter() - started, latencies)


def asyncpg_dsn(url: str) -> str:
    """A libpq DSN from a SQLAlchemy URL (``postgresql+asyncpg://`` → ``postgresql://``)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def sqlite_path(url: str) -> str:
    """The file of a SQLAlchemy SQLite URL (``sqlite+aiosqlite:///path``)."""
    if url.startswith("sqlite"):
        return url.split(":///", 1)[1]
    return url


async def asyncpg_insert_per_transaction(
    dsn: str, n: int, *, concurrency: int = 1, max_seconds: float = 30.0
) -> Result:
    """Up to ``n`` transactions (stopping after ``max_seconds``), each ``async with
    conn.transaction()`` around one prepared INSERT of an events-shaped row, from
    ``concurrency`` connections at once (one caller per connection). The table
    ``bench_limit_events`` in the DSN's database is dropped and recreated."""
    import asyncpg

    dsn = asyncpg_dsn(dsn)
    rows = event_rows(n, sqlite=False)
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(f"DROP TABLE IF EXISTS {LIMIT_TABLE}")
        await setup.execute(_limit_ddl(postgresql_dialect()))
    finally:
        await setup.close()
    connections = [await asyncpg.connect(dsn) for _ in range(concurrency)]
    insert = _insert_sql(lambda i: f"${i}")

    def caller(conn: Any, statement: Any) -> Callable[[tuple[Any, ...]], Awaitable[None]]:
        async def transaction(row: tuple[Any, ...]) -> None:
            async with conn.transaction():
                await statement.fetchval(*row)

        return transaction

    try:
        callers = [caller(c, await c.prepare(insert)) for c in connections]
        result = await _timed_callers(callers, iter(rows), max_seconds)
    finally:
        for conn in connections:
            await conn.close()
    result.detail = {"concurrency": concurrency}
    return result


async def raw_read_and_decode(
    url: str, *, page_size: int = 5000, max_events: int | None = None, max_seconds: float = 120.0
) -> Result:
    """Every row of a Ticketline database's ``events`` table (a SQLAlchemy URL: SQLite
    through ``sqlite3``, PostgreSQL through asyncpg), in pages of ``page_size`` ordered
    by position, each payload decoded with ``orjson.loads``: the floor under any
    projection rebuild. Stops after ``max_events`` or ``max_seconds``."""
    limit = max_events if max_events is not None else 1 << 62
    if url.startswith("postgresql"):
        return await _read_pg(asyncpg_dsn(url), page_size, limit, max_seconds)
    return await asyncio.to_thread(_read_sqlite, sqlite_path(url), page_size, limit, max_seconds)


def _read_sqlite(path: str, page_size: int, limit: int, max_seconds: float) -> Result:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        query = "SELECT * FROM events WHERE position > ? ORDER BY position LIMIT ?"
        payload_at = [d[0] for d in conn.execute(query, (0, 0)).description].index("payload")
        deadline = Deadline(max_seconds)
        count, after = 0, 0
        started = time.perf_counter()
        while count < limit and not deadline.expired():
            page = conn.execute(query, (after, min(page_size, limit - count))).fetchall()
            if not page:
                break
            for row in page:
                orjson.loads(row[payload_at])
            count += len(page)
            after = page[-1][0]
        return Result(count, time.perf_counter() - started, detail={"page_size": page_size})
    finally:
        conn.close()


async def _read_pg(dsn: str, page_size: int, limit: int, max_seconds: float) -> Result:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(
            "SELECT * FROM events WHERE position > $1 ORDER BY position LIMIT $2"
        )
        deadline = Deadline(max_seconds)
        count, after = 0, 0
        started = time.perf_counter()
        while count < limit and not deadline.expired():
            page = await statement.fetch(after, min(page_size, limit - count))
            if not page:
                break
            for row in page:
                orjson.loads(row["payload"])
            count += len(page)
            after = page[-1]["position"]
        return Result(count, time.perf_counter() - started, detail={"page_size": page_size})
    finally:
        await conn.close()


async def postgres_server_version(dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def split(n: int, parts: int = 2) -> list[int]:
    """``n`` as ``parts`` near-equal counts (halves measured before and after a figure)."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]

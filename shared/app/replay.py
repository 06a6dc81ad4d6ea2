"""Auditor replay: rebuild projections from the first event in a scratch database, then
compare them with the live read tables (or, with ``until``, keep the state as of a time).

The live tables are never touched. The scratch database is a SQLite file migrated like
any other, holding a copy of the ledger up to ``until`` (the source of gap fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection, Select, Table, func, select, update
from sqlalchemy.sql.base import Executable

from shared.app.config import CommandRefused, Settings
from shared.app.files import draft_prefix, new_sibling, place_new, sweep_abandoned
from shared.app.platform import Platform
from shared.eventstore.db import Database
from shared.eventstore.ledger import insert_stored_rows, stored_rows
from shared.eventstore.migrations import upgrade
from shared.eventstore.progress import projection_lag
from shared.eventstore.projection import Projection
from shared.eventstore.runner import Batch, EventSource, KafkaLogSnapshot
from shared.eventstore.tables import event_sequence, events


@dataclass
class ReplayResult:
    projection: str
    events: int
    seconds: float
    differences: list[str] = field(default_factory=list)
    compared: bool = True  # False for a state as of a past time: nothing to compare with

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "identical_to_live": not self.differences if self.compared else None,
            "differences": self.differences[:20] if self.compared else None,
        }


class ProgressSource:
    """Wraps a source and reports progress after every batch."""

    def __init__(self, inner: EventSource, total: int, report: Callable[[int, int], None]) -> None:
        self.inner = inner
        self.total = total
        self.report = report
        self.read = False  # a rebuild folded in the database reads no batch

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        self.read = True
        done = 0
        async for batch in self.inner.batches(projection):
            yield batch
            # Counted once applied: a ledger page is read in the transaction applying it.
            done += len(batch.events)
            self.report(min(done, self.total), self.total)


def progress_bar(
    name: str, stream: TextIO | None = None, unit: str = "events"
) -> Callable[[int, int], None]:
    """Progress with rate and ETA: a bar redrawn in place on a terminal, otherwise a plain
    line at most every few seconds (logs and CI stay readable)."""
    out = stream or sys.stderr
    interactive = out.isatty()
    started = time.perf_counter()
    last_line = 0.0
    ended = False

    def report(done: int, total: int) -> None:
        nonlocal last_line, ended
        finished = done >= total
        if ended and finished:  # said once (a source may end with empty batches)
            return
        ended = finished
        elapsed = time.perf_counter() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        figures = f"{done}/{total} {unit}, {rate:,.0f} {unit}/s, ETA {eta:,.0f} s"
        if interactive:
            width = 30
            filled = width * done // total if total else width
            out.write(f"\r{name:<20} [{'#' * filled}{'.' * (width - filled)}] {figures}")
            if finished:
                out.write("\n")
        elif finished or elapsed - last_line >= 5.0:
            last_line = elapsed
            out.write(f"{name}: {figures}\n")
        out.flush()

    return report


async def copy_ledger(
    source: Database, target: Database, until: datetime | None, batch: int = 5000
) -> int:
    """Copy the ledger (up to ``until``) page by page, rows as stored: flat memory
    whatever its size. The next page is read while the last one is written."""
    position = copied = 0

    def page(after: int) -> asyncio.Future[list[tuple[Any, ...]]]:
        read = partial(stored_rows, after_position=after, limit=batch, recorded_until=until)
        return asyncio.ensure_future(source.read(read))

    reading = page(0)
    try:
        while rows := await reading:
            position = rows[-1][0]
            reading = page(position)
            await target.write(partial(insert_stored_rows, rows=rows))
            copied += len(rows)
    finally:
        reading.cancel()  # a write that failed leaves a read nobody waits for
    await target.write(partial(_execute, update(event_sequence).values(last_position=position)))
    return copied


def _execute(statement: Executable, conn: Connection) -> None:
    conn.execute(statement)


def _scalar(statement: Select[Any], conn: Connection) -> int:
    return int(conn.execute(statement).scalar_one())


def table_rows(conn: Connection, projection: Projection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the projection's tables (``rows_of``), by table name."""
    return {table.name: rows_of(conn, table) for table in projection.tables}


def rows_of(conn: Connection, table: Table, *, stored: bool = False) -> list[tuple[Any, ...]]:
    """Every row of ``table``, by primary key; ``stored``: as the database holds them, on
    the driver (no type processing: a third of the time on SQLite)."""
    keys = list(table.primary_key.columns) or list(table.columns)
    query = select(table).order_by(*keys)
    if stored:
        return [tuple(r) for r in conn.exec_driver_sql(str(query.compile(dialect=conn.dialect)))]
    return [tuple(r) for r in conn.execute(query).all()]


async def compare_with_live(live: Database, rebuilt: Database, projection: Projection) -> list[str]:
    """``diff_tables`` of the live and rebuilt tables, one table at a time (the rows of one
    table in memory). A SQLite ledger's read models are first compared as stored, which
    settles the usual case; where they differ, the typed values tell a real difference
    from another text of the same value (an older form)."""
    differences: list[str] = []
    for table in projection.tables:
        if live.is_sqlite:
            stored = partial(rows_of, table=table, stored=True)
            if await live.read(stored) == await rebuilt.read(stored):
                continue
        typed = partial(rows_of, table=table)
        found = {table.name: await live.read(typed)}, {table.name: await rebuilt.read(typed)}
        differences += diff_tables(*found, {table.name: table})
    return differences


def diff_tables(
    live: dict[str, list[tuple[Any, ...]]],
    rebuilt: dict[str, list[tuple[Any, ...]]],
    tables: Mapping[str, Table] | None = None,
) -> list[str]:
    """What differs, table by table: counts, then a few rows — a row both hold under one
    key by the columns that differ (``tables``: their columns and keys), the others whole."""
    differences = []
    for name in live:
        a, b = live[name], rebuilt[name]
        if a == b or Counter(a) == Counter(b):  # the same rows, maybe in another order:
            continue  # PostgreSQL's collation may sort text keys unlike SQLite's bytes
        only_live = set(a) - set(b)
        only_rebuilt = set(b) - set(a)
        differences.append(
            f"{name}: {len(a)} live rows, {len(b)} rebuilt; {len(only_live)} only live, "
            f"{len(only_rebuilt)} only rebuilt"
        )
        table = (tables or {}).get(name)
        if table is not None:
            differences += _changed_rows(table, only_live, only_rebuilt)
            continue
        for row in sorted(only_live, key=repr)[:3]:
            differences.append(f"  live only: {row!r}")
        for row in sorted(only_rebuilt, key=repr)[:3]:
            differences.append(f"  rebuilt only: {row!r}")
    return differences


def _changed_rows(
    table: Table, only_live: set[tuple[Any, ...]], only_rebuilt: set[tuple[Any, ...]]
) -> list[str]:
    names = [c.name for c in table.columns]
    keys = [names.index(c.name) for c in table.primary_key.columns] or list(range(len(names)))

    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(row[i] for i in keys)

    def named(row: tuple[Any, ...]) -> str:
        return ", ".join(f"{n}={v!r}" for n, v in zip(names, row, strict=True))

    rebuilt_by_key = {key(r): r for r in only_rebuilt}
    shown = []
    for row in sorted(only_live, key=repr)[:3]:
        other = rebuilt_by_key.pop(key(row), None)
        if other is None:
            shown.append(f"  live only: {named(row)}")
            continue
        changed = [
            f"{n}: live {x!r}, rebuilt {y!r}"
            for n, x, y in zip(names, row, other, strict=True)
            if x != y
        ]
        where = ", ".join(f"{names[i]}={row[i]!r}" for i in keys)
        shown.append(f"  {where}: {'; '.join(changed)}")
    for row in sorted(rebuilt_by_key.values(), key=repr)[:3]:
        shown.append(f"  rebuilt only: {named(row)}")
    return shown


def refuse_existing(into: Path) -> None:
    """``--into`` writes a new database: never over a file (the live database given by
    mistake was emptied), and in a directory that is there (a mistyped path is refused,
    as ``export --out``'s is, not made)."""
    if into.exists() or Path(f"{into}-wal").exists():
        raise CommandRefused(
            f"--into {into} exists: the replay writes a new database; give a path that does "
            "not exist (remove an earlier replay's file first)"
        )
    if not into.parent.is_dir():
        raise CommandRefused(f"--into {into}: no directory {into.parent}")


async def differences_from_live(
    live: Platform, scratch: Platform, projection: Projection
) -> list[str]:
    """What the live read model holds otherwise than the rebuild; first, when its live
    projector is behind the ledger, a line saying so (that is no drift: just after a
    migration, say, it has not applied the newest events yet)."""
    differences = await compare_with_live(live.db, scratch.db, projection)
    if not differences:
        return differences
    _, behind = await live.db.read(
        partial(projection_lag, name=projection.name, stream_types=projection.stream_types)
    )
    if behind:
        differences.insert(
            0,
            f"live {projection.name} is {behind} ledger positions behind (its projector has "
            "not applied them yet): compare again once its lag is 0",
        )
    copied = await scratch.db.read(lambda c: int(scratch.store.last_position(c)))
    now = await live.db.read(lambda c: int(live.store.last_position(c)))
    if now > copied:
        differences.insert(
            0,
            f"the live ledger moved on by {now - copied} event(s) since the replay copied it "
            "(a command or a job — an SLA breach, a checkpoint — wrote meanwhile): the live "
            "rows may hold them; compare again on a quiet system",
        )
    return differences


async def replay(
    settings: Settings,
    projections: Sequence[Projection],
    *,
    source: str = "ledger",
    until: datetime | None = None,
    into: Path | None = None,
    show_progress: bool = False,
) -> list[ReplayResult]:
    if into is not None:
        refuse_existing(into)
        sweep_abandoned(into.parent, draft_prefix(into))  # drafts of killed runs
        # Built beside it and moved there once whole: an interrupted replay leaves no file
        # that looks finished, and two replays into one path never share a file.
        building = new_sibling(into)
        try:
            results = await _replay(settings, projections, source, until, building, show_progress)
            _move_into_place(building, into)
        finally:
            for leftover in (building, Path(f"{building}-wal"), Path(f"{building}-shm")):
                leftover.unlink(missing_ok=True)
        return results
    return await _replay(settings, projections, source, until, None, show_progress)


def _move_into_place(built: Path, into: Path) -> None:
    """``built`` at ``into`` as one file (its write-ahead log folded in), unless a file got
    there meanwhile (never overwritten)."""
    with contextlib.closing(sqlite3.connect(built)) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode=DELETE").fetchone()
    if str(mode).lower() != "delete":  # its log would stay beside it, and be deleted
        raise RuntimeError(f"{built}: the write-ahead log could not be folded in ({mode})")
    if not place_new(built, into):
        refuse_existing(into)


# The scratch directories of replays: named with their process id, swept once it is gone.
SCRATCH_PREFIX = "ticketline-replay-"


async def _replay(
    settings: Settings,
    projections: Sequence[Projection],
    source: str,
    until: datetime | None,
    into: Path | None,
    show_progress: bool,
) -> list[ReplayResult]:
    live = Platform.from_settings(settings)
    sweep_abandoned(Path(tempfile.gettempdir()), SCRATCH_PREFIX)  # killed runs' scratch
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as tmp:
        path = into or Path(tmp) / "replay.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        scratch = Platform.from_settings(Settings(database_url=url, data_dir=settings.data_dir))
        results = []
        try:
            await copy_ledger(live.db, scratch.db, until)
            for projection in projections:
                inner: EventSource
                if source == "kafka":
                    if until is not None:
                        raise ValueError("--until replays from the ledger only")
                    assert settings.kafka_bootstrap_servers
                    inner = KafkaLogSnapshot(
                        settings.kafka_bootstrap_servers, topic_prefix=settings.kafka_topic_prefix
                    )
                else:
                    inner = scratch.runner.rebuild_source(projection)
                count = select(func.count()).where(
                    events.c.stream_type.in_(list(projection.stream_types))
                )
                relevant = await scratch.db.read(partial(_scalar, count))
                chosen: EventSource = (
                    ProgressSource(inner, relevant, progress_bar(projection.name))
                    if show_progress
                    else inner
                )
                started = time.perf_counter()
                stats = await scratch.runner.rebuild(
                    projection, chosen, in_database=source == "ledger"
                )
                if isinstance(chosen, ProgressSource) and not chosen.read:
                    chosen.report(relevant, relevant)  # folded in the database: done at once
                result = ReplayResult(projection.name, stats.applied, time.perf_counter() - started)
                result.compared = until is None
                if result.compared:
                    result.differences = await differences_from_live(live, scratch, projection)
                results.append(result)
        finally:
            await scratch.close()
            await live.close()
    return results

"""The database: one transaction = one call, the same code on SQLite and PostgreSQL.

Work on the database is a plain function of a SQLAlchemy ``Connection`` — a *unit of
work*. ``await db.write(work)`` runs it in one write transaction and ``await db.read(work)``
in one read-only snapshot, so a command (idempotency check, load, decide, append, inline
read models, idempotency record) costs one hop to the database, not one per statement:

- SQLite: every write of the process goes to one writer thread that owns one connection
  (a single writer per database is what SQLite allows anyway). Units of work that queue up
  while a transaction runs are committed together (group commit), each inside its own
  savepoint, so one failing never takes the others with it. Reads run on a small pool of
  reader threads, each with its own connection (WAL: readers never block the writer).
- PostgreSQL: the unit of work runs on an asyncpg connection through SQLAlchemy's
  greenlet bridge (``AsyncConnection.run_sync``). Concurrent commits share WAL flushes in
  the server (its own group commit). Reads use autocommit connections (no BEGIN/COMMIT
  round trips). A connection found dead before the work committed is replaced and the
  work retried once; an outage is :class:`DatabaseUnavailable` (HTTP 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from shared.eventstore.metrics import Committed, appended_here, count_appended, take_appended

T = TypeVar("T")
log = logging.getLogger("ticketline.db")
Work = Callable[[Connection], T]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class LockOrderConflict(Exception):
    """A transaction that holds something already (the position counter, locks, an
    earlier unit's locks) found a lock it needs taken (see :func:`take_locks`); it is
    rolled back and runs again with those locks taken first."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"{len(keys)} lock(s) taken by another transaction")
        self.keys = keys


_LOCK_IN_ORDER = text(
    "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) "
    "AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) AS ordered"
)
_TRY_LOCKS = text(
    "SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
    "WHERE NOT pg_try_advisory_xact_lock(hashtextextended(k, 0))"
)


# Keys in the connection's info dict, cleared when a transaction starts: a unit of work
# after the first of its group runs (the transaction holds what the earlier ones took);
# the transaction took locks already.
_LATER_UNIT = "ticketline.later_unit"
_LOCKS_HELD = "ticketline.locks_held"


def take_locks(conn: Connection, keys: Iterable[str]) -> None:
    """PostgreSQL: transaction-scoped locks on ``keys`` (held until commit), taken in one
    order (by key hash) so that takers never wait on each other in a cycle; SQLite has a
    single writer, nothing to do.

    A transaction takes its locks before the position counter (its append), and all at
    once. One that holds something already could close a cycle by waiting — with a holder
    of the lock waiting for what it holds (a deadlock: a second of waiting, then an
    abort): one that appended holds the counter (a reactor's batch appending for one
    ticket and then locking the next, units of work committed together); one that locked
    before holds those locks (a projector's batch locking its streams, then its reactor
    the tickets it appends to); a later unit of a group committed together holds what the
    earlier units took (two projections' batches, in another order in another process).
    Those only try: a taken lock raises :class:`LockOrderConflict`, and the unit of work
    runs again with those locks taken first."""
    if conn.dialect.name != "postgresql":
        return
    wanted = sorted(set(keys))
    if not wanted:
        return
    info = conn.info
    if not (appended_here(info) or info.get(_LATER_UNIT) or info.get(_LOCKS_HELD)):
        conn.execute(_LOCK_IN_ORDER, {"keys": wanted})
        info[_LOCKS_HELD] = True
        return
    taken = list(conn.execute(_TRY_LOCKS, {"keys": wanted}).scalars())
    if taken:
        raise LockOrderConflict(taken)


class ReadChangedMeanwhile(Exception):
    """Work that read a row another transaction changed before it could act on what it
    read (PostgreSQL, read committed): nothing was wrong with it; it runs again."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached or went away mid-transaction (HTTP 503: retry)."""


class LedgerBehind(DatabaseUnavailable):
    """A position the counter handed out is in the ledger already: the database is not the
    one this process wrote to (a backup copied over the live file in place) or its counter
    row was edited. Writes stop (503) until a restart opens a consistent file."""


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both back ends (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_from_stored(value: str | datetime) -> datetime:
    """A stored time as the instant it is (``UtcDateTime``'s reading, for the readers on
    the bare drivers): the driver's datetime, or SQLite's text — without an offset, UTC;
    with one (never what a write stores), that instant, not the same wall time in UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo is UTC else value.astimezone(UTC)
    try:
        # Stored without an offset: parsing it with one is several times cheaper than
        # datetime.replace(tzinfo=...), and gives the UTC singleton.
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1] if ":///" in url else ""


def ensure_sqlite_dir(url: str) -> None:
    path = sqlite_path(url)
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_engine(path: str, synchronous: str, busy_seconds: float = 30.0) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}", poolclass=NullPool, connect_args={"check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are ours: BEGIN (IMMEDIATE for the writer) and COMMIT are issued on
        # the driver connection, one statement each, around every unit of work.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The busy timeout first: setting WAL mode takes a lock too, and without one a
        # writer in another connection failed it at once ("database is locked").
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


@contextmanager
def savepoint(conn: Connection, name: str = "part") -> Iterator[None]:
    """Part of a unit of work that fails alone: rolled back to its start on an exception
    (which is raised on), kept otherwise. SQLite and PostgreSQL alike."""
    conn.exec_driver_sql(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
        conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
        raise
    conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")


def _open(engine: Engine) -> tuple[Connection, Any]:
    """A connection whose transactions SQLAlchemy leaves alone (AUTOCOMMIT: it never
    sends BEGIN/COMMIT itself), and the sqlite3 connection under it."""
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return conn, conn.connection.driver_connection


def _finish(conn: Connection, raw: Any, commit: bool) -> None:
    if raw.in_transaction:
        raw.execute("COMMIT" if commit else "ROLLBACK")
    if conn.in_transaction():
        conn.rollback()  # SQLAlchemy's own bookkeeping only: nothing reaches the driver


@dataclass
class _Job:
    work: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle_job(job: _Job, result: Any, error: BaseException | None) -> None:
    if job.future.done():  # cancelled, or settled by the writer's last resort (_run)
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)


def _deliver(job: _Job, result: Any, error: BaseException | None) -> None:
    job.loop.call_soon_threadsafe(_settle_job, job, result, error)


def _deliver_all(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """A group's outcomes in one call per event loop: one wake-up of the loop, not one
    per unit of work."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, result, error in outcomes:
        _settle_job(job, result, error)


class _FileIdentity:
    """The SQLite file the process opened, found again at its path before each write: a
    file deleted (its data directory removed) or replaced while open would take writes
    that vanish with the process (and the next start would open an empty database)."""

    def __init__(self, path: str) -> None:
        self.path = path if path and path != ":memory:" else None
        self._opened: tuple[int, int] | None = None
        self._reported = False
        self._behind: str | None = None  # a write found the ledger behind (LedgerBehind)

    def opened(self) -> None:
        if self.path is not None:
            found = os.stat(self.path)
            self._opened = (found.st_dev, found.st_ino)

    def problem(self) -> str | None:
        """Why the file at the path is no longer the one opened (None: it is)."""
        if self._behind is not None:
            return self._behind
        if self.path is None or self._opened is None:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return f"the database file {self.path} was removed while open"
        if (found.st_dev, found.st_ino) != self._opened:
            return f"the database file {self.path} was replaced while open"
        return None

    def behind(self, problem: str) -> None:
        """From now on the file's problem (readiness, the gauge, every write's 503)."""
        self._behind = problem
        self.report(problem)

    def report(self, problem: str) -> None:
        if not self._reported:  # once: every write says it again in its 503
            self._reported = True
            log.error("%s: refusing writes; restart to open the file that is there", problem)


class _SqliteWriter:
    """The process's one SQLite writer: a thread owning a connection, fed by a queue.

    Takes the write lock up front (BEGIN IMMEDIATE), which avoids lock-upgrade deadlocks
    with other processes sharing the file. Jobs that arrive while a transaction runs are
    committed with the next group, each in a savepoint."""

    def __init__(self, engine: Engine, file: _FileIdentity, max_group: int = 64) -> None:
        self.engine = engine
        self.file = file
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(work, future, loop))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _next_group(self, first: _Job) -> tuple[list[_Job], bool]:
        group, stop = [first], False
        while len(group) < self.max_group:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            group.append(job)
        return group, stop

    def _run(self) -> None:
        opened: tuple[Connection, Any] | None = None
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                group, stop = self._next_group(job)
                try:
                    # Opened with the first work (and again after a failed opening): a
                    # file locked meanwhile fails those callers, never the thread.
                    if opened is None:
                        opened = _open(self.engine)
                        self.file.opened()
                    conn, raw = opened
                    if gone := self.file.problem():
                        # Nothing is written where it would be lost: 503s, retried once a
                        # restart opens the file that is there.
                        _deliver_all([(w, None, DatabaseUnavailable(gone)) for w in group])
                        self.file.report(gone)
                    elif len(group) == 1:
                        self._note_behind(self._run_one(conn, raw, job))
                    else:
                        self._note_behind(self._run_group(conn, raw, group))
                except Exception as exc:
                    # The writer outlives any one group: a failure past the units' own
                    # handling (a ROLLBACK refused, a loop gone) fails that group's callers
                    # rather than leaving them, and every later caller, waiting forever.
                    log.exception("sqlite writer: a group failed past its own handling")
                    if opened is not None:
                        _abandon(opened[1])
                    failed = _outage_as_unavailable(exc)
                    for waiting in group:
                        with contextlib.suppress(RuntimeError):  # its loop is closed
                            _deliver(waiting, None, failed)
                if stop:
                    return
        finally:
            if opened is not None:
                opened[0].close()

    def _note_behind(self, failed: BaseException | None) -> None:
        if isinstance(failed, LedgerBehind):
            self.file.behind(str(failed))

    @staticmethod
    def _run_one(conn: Connection, raw: Any, job: _Job) -> BaseException | None:
        """The unit in its transaction; returns what failed it (None: committed)."""
        take_appended(conn.info)
        try:
            raw.execute("BEGIN IMMEDIATE")
            result = job.work(conn)
            _finish(conn, raw, commit=True)
        except BaseException as exc:
            _finish(conn, raw, commit=False)
            take_appended(conn.info)
            failed = _outage_as_unavailable(exc)
            _deliver(job, None, failed)
            return failed
        count_appended(take_appended(conn.info))
        _deliver(job, result, None)
        return None

    @staticmethod
    def _run_group(conn: Connection, raw: Any, group: list[_Job]) -> BaseException | None:
        outcomes: list[tuple[Any, BaseException | None, list[Committed]]] = []
        take_appended(conn.info)
        try:
            raw.execute("BEGIN IMMEDIATE")
            for job in group:
                raw.execute("SAVEPOINT unit")
                try:
                    result = job.work(conn)
                except Exception as exc:
                    raw.execute("ROLLBACK TO unit")
                    raw.execute("RELEASE unit")
                    take_appended(conn.info)
                    outcomes.append((None, _outage_as_unavailable(exc), []))
                    continue
                raw.execute("RELEASE unit")
                outcomes.append((result, None, take_appended(conn.info)))
            _finish(conn, raw, commit=True)
        except BaseException as exc:  # the commit failed: nothing of the group is durable
            _finish(conn, raw, commit=False)
            failed = _outage_as_unavailable(exc)
            _deliver_all([(job, None, failed) for job in group])
            return failed
        for _, _, appended in outcomes:
            count_appended(appended)
        _deliver_all(
            [(job, result, error) for job, (result, error, _) in zip(group, outcomes, strict=True)]
        )
        return next((e for _, e, _ in outcomes if isinstance(e, LedgerBehind)), None)


def _abandon(raw: Any) -> None:
    """Whatever transaction a failed group left open, rolled back (best effort)."""
    with contextlib.suppress(Exception):
        if raw.in_transaction:
            raw.execute("ROLLBACK")


class _SqliteReaders:
    """Reader threads, each with its own connection, reading a snapshot per unit of work."""

    def __init__(self, engine: Engine, threads: int) -> None:
        self.engine = engine
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sqlite-reader")

    def _connection(self) -> tuple[Connection, Any]:
        found: tuple[Connection, Any] | None = getattr(self._local, "conn", None)
        if found is None:
            found = self._local.conn = _open(self.engine)
            with self._lock:
                self._connections.append(found[0])
        return found

    def _read(self, work: Callable[[Connection], T]) -> T:
        conn, raw = self._connection()
        raw.execute("BEGIN")  # one snapshot for the whole unit of work
        try:
            return work(conn)
        finally:
            _finish(conn, raw, commit=True)

    async def read(self, work: Callable[[Connection], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._read, work)
        except Exception as exc:
            unavailable = _outage_as_unavailable(exc)
            if unavailable is exc:
                raise
            raise unavailable from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


try:  # the driver's own errors, raised by statements issued on it directly
    import asyncpg

    _CONNECTION_LOST: tuple[type[BaseException], ...] = (
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.AdminShutdownError,
        # The protocol left mid-operation (a server gone during a query, seen once under
        # load): the connection cannot serve another statement.
        asyncpg.exceptions.InternalClientError,
    )
    _DRIVER_ERRORS: tuple[type[BaseException], ...] = _CONNECTION_LOST
except ImportError:  # pragma: no cover - asyncpg is a dependency
    _CONNECTION_LOST = _DRIVER_ERRORS = ()


class _PgWriter:
    """Group commit on PostgreSQL: units of work that queue up while a transaction runs
    commit together in the next one — one lock on the position counter and one commit for
    the lot, so concurrent appenders scale. If any of a group fails, the group is rolled
    back and each runs alone, so one failure never takes the others with it (units of work
    have no effect outside the database and can run again). The writer keeps its
    connection between transactions (``_Held``): no pool checkout and return per unit.

    A unit submitted while the writer is idle runs at once in its caller's task (the
    queue's hand-over costs two task switches, ~5 % of a one-event append); a caller
    cancelled meanwhile rolls it back. Units that arrive while one runs queue up."""

    def __init__(
        self,
        run_group: Callable[[list[Callable[[Connection], Any]], _Held], Any],
        max_group: int = 32,
    ) -> None:
        self.run_group = run_group
        self.max_group = max_group
        self.held = _Held()
        self._queue: asyncio.Queue[tuple[Callable[[Connection], Any], asyncio.Future[Any]]]
        self._task: asyncio.Task[None] | None = None
        self._turn = asyncio.Lock()  # the held connection, for one transaction at a time
        self._queued = 0  # units submitted to the queue, not settled yet

    async def submit(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            if self._task is not None and self._task.get_loop() is not loop:
                self.held = _Held()  # the old loop's connection cannot serve this one
            self._queue = asyncio.Queue()
            self._turn, self._queued = asyncio.Lock(), 0
            self._task = loop.create_task(self._drain(), name="postgres-writer")
        if not self._turn.locked() and not self._queued:
            async with self._turn:
                (result,) = await self.run_group([work], self.held)
                return cast(T, result)
        future: asyncio.Future[T] = loop.create_future()
        self._queued += 1
        self._queue.put_nowait((work, future))
        return await future

    async def _drain(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                async with self._turn:
                    await self._run(group)
            finally:
                self._queued -= len(group)

    async def _run(
        self, group: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]]
    ) -> None:
        group = [(w, f) for w, f in group if not f.cancelled()]
        if len(group) > 1:
            try:
                results = await self.run_group([w for w, _ in group], self.held)
            except Exception:
                pass  # someone in the group failed: run each alone, below
            else:
                for (_, future), result in zip(group, results, strict=True):
                    _settle(future, result, None)
                return
        for work, future in group:
            try:
                (result,) = await self.run_group([work], self.held)
            except Exception as exc:
                _settle(future, None, exc)
            else:
                _settle(future, result, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
        await self.held.release()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_RETRIED_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, OSError, *_DRIVER_ERRORS)


# SQLSTATEs of a transaction PostgreSQL rolled back to break a cycle or a conflict.
_RACE_STATES = frozenset({"40P01", "40001"})


def lost_a_race(exc: BaseException) -> bool:
    """The transaction was rolled back to break a cycle or a conflict, or gave way
    (:class:`LockOrderConflict`, :class:`ReadChangedMeanwhile`): nothing was wrong with
    its work, which runs again."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) in _RACE_STATES:
            return True
        if isinstance(current, (LockOrderConflict, ReadChangedMeanwhile)):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def _is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# SQLSTATEs of a server that is away: connection exceptions (08…), and a server shutting
# down, crashed or starting up (57P01-57P03).
_AWAY_STATES = ("57P01", "57P02", "57P03")


def _causes(exc: BaseException) -> list[BaseException]:
    """The error and what it wraps (SQLAlchemy's ``orig``, the driver's ``__cause__``)."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 6:
        found.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return found


def _connection_lost(exc: BaseException) -> bool:
    """The connection or the server went away (or was never reached, or has no room left),
    whatever wrapped the driver's error on its way up."""
    if _is_disconnect(exc):
        return True
    for cause in _causes(exc):
        if isinstance(cause, (OSError, *_CONNECTION_LOST)):
            return True
        state = str(getattr(cause, "sqlstate", "") or "")
        # 08: connection; no room: disk full, too many connections (not 53200/53400: out
        # of memory or a temp file limit can be one piece of work's, every time).
        if state.startswith("08") or state in _AWAY_STATES or state in ("53100", "53300"):
            return True
    return False


_SQLITE_TRANSIENT = (
    "database is locked",
    "disk i/o error",
    "unable to open database",
    "database or disk is full",
    # The file itself damaged (or replaced in place under the process): no piece of
    # work's fault, and none would succeed again until the file is restored.
    "database disk image is malformed",
    "file is not a database",
)


def _sqlite_outage(exc: BaseException) -> str | None:
    """SQLite's words when the file, not the work, failed (locked past the busy timeout,
    unreadable or damaged, its disk full); None for any other error."""
    import sqlite3

    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.DatabaseError) or isinstance(orig, sqlite3.IntegrityError):
        return None
    reason = str(orig).lower()
    return reason if any(marker in reason for marker in _SQLITE_TRANSIENT) else None


def is_outage(exc: BaseException) -> bool:
    """The database, not the work, failed: unreachable, restarting, a lost connection, a
    locked or unreadable SQLite file. Such a failure says nothing about the events being
    applied (a projector retries later; it never parks an event for it)."""
    if isinstance(exc, DatabaseUnavailable) or _connection_lost(exc):
        return True
    return _sqlite_outage(exc) is not None


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"the database is unavailable: {type(exc).__name__}")


def _outage_as_unavailable(exc: BaseException) -> BaseException:
    """A SQLite file still locked after the busy timeout (another process writing), or
    unreadable: :class:`DatabaseUnavailable` (503 with ``Retry-After``) saying SQLite's
    words, the driver's error its cause; any other error (an OSError of the work's own
    among them) as it is."""
    reason = _sqlite_outage(exc)
    if reason is None:
        return exc
    unavailable = DatabaseUnavailable(f"the database is unavailable: {reason}")
    unavailable.__cause__ = exc
    return unavailable


class _Held:
    """The PostgreSQL writer's own connection, kept from one transaction to the next
    (checked out of the pool once); dropped when it failed or its server went away."""

    def __init__(self) -> None:
        self.conn: AsyncConnection | None = None
        self.raw: Any = None

    async def take(self, engine: AsyncEngine) -> tuple[AsyncConnection, Any]:
        if self.conn is not None and (self.conn.invalidated or self.raw.is_closed()):
            await self.release()
        if self.conn is None:
            self.conn = await engine.connect()
            self.raw = (await self.conn.get_raw_connection()).driver_connection
        return self.conn, self.raw

    async def release(self) -> None:
        conn, self.conn, self.raw = self.conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


async def _pg_once(
    engine: AsyncEngine,
    work: Callable[[Connection], T],
    transactional: bool,
    state: dict[str, bool],
    held: _Held | None = None,
) -> tuple[T, list[Committed]]:
    """One attempt, on the writer's held connection or one from the pool. A connection
    that failed (lost, or left mid-statement by a cancellation) is invalidated, never
    used again."""
    if held is None:
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            return await _pg_attempt(conn, raw, work, transactional, state)
    conn, raw = await held.take(engine)
    try:
        return await _pg_attempt(conn, raw, work, transactional, state)
    finally:
        if conn.invalidated:
            await held.release()


async def _pg_attempt(
    conn: AsyncConnection,
    raw: Any,
    work: Callable[[Connection], T],
    transactional: bool,
    state: dict[str, bool],
) -> tuple[T, list[Committed]]:
    try:
        take_appended(conn.info)
        conn.info.pop(_LATER_UNIT, None)
        conn.info.pop(_LOCKS_HELD, None)
        if not transactional:
            return await conn.run_sync(work), []
        # BEGIN and COMMIT on the driver, one round trip each (SQLAlchemy is in
        # autocommit: it sends neither).
        await raw.execute("BEGIN")
        try:
            result = await conn.run_sync(work)
        except asyncio.CancelledError:
            raise  # mid-statement: no ROLLBACK on it; closed below, the server rolls back
        except BaseException:
            await raw.execute("ROLLBACK")
            raise
        state["committing"] = True
        await raw.execute("COMMIT")
        return result, take_appended(conn.info)
    except BaseException as exc:
        if not isinstance(exc, Exception) or _connection_lost(exc):
            with contextlib.suppress(Exception):
                await conn.invalidate()
        raise
    finally:
        sync = conn.sync_connection
        if sync is not None and sync.in_transaction() and not conn.invalidated:
            sync.rollback()  # SQLAlchemy's own bookkeeping only (autocommit: no SQL)


def async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """``create_async_engine`` where a server that accepts the connection and never answers
    is an outage like one that refuses it (:class:`DatabaseUnavailable`: 503, the CLI's
    exit 3) — asyncpg says only ``TimeoutError``, which elsewhere is the work's own."""
    engine = create_async_engine(url, **kwargs)
    if not url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "do_connect")
        def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
            try:
                return dialect.connect(*cargs, **cparams)
            except TimeoutError as exc:
                raise DatabaseUnavailable(
                    "the database is unavailable: it did not answer the connection in time"
                ) from exc

    return engine


def _pg_engine(url: str, echo: bool) -> AsyncEngine:
    """Autocommit for SQLAlchemy: the transaction is ours (begun and ended around the unit
    of work on the driver), so statements issued on the driver directly (the append) and
    through SQLAlchemy share it. A pooled connection whose server went away (closed socket:
    a restart, a crash) is replaced at checkout, at no cost to a healthy one (no ping)."""
    engine = async_engine(
        url,
        echo=echo,
        pool_size=10,
        max_overflow=20,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,  # autocommit: no transaction is ever left open
    )

    @event.listens_for(engine.sync_engine, "checkout")
    def _alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is None or driver.is_closed():
            raise DisconnectionError("the server closed this connection")

    return engine


class Database:
    """Owns the connections. ``write``/``read`` take a unit of work (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        sqlite_synchronous: str = "NORMAL",
        read_threads: int = 4,
        sqlite_busy_seconds: float = 30.0,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.echo = echo
        if self.is_sqlite:
            if sqlite_synchronous.upper() not in SQLITE_SYNCHRONOUS:
                raise ValueError(f"synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
            ensure_sqlite_dir(url)
            path = sqlite_path(url)
            engine = _sqlite_engine(path, sqlite_synchronous, sqlite_busy_seconds)
            self.file = _FileIdentity(path)
            self._writer = _SqliteWriter(engine, self.file)
            self._readers = _SqliteReaders(engine, read_threads)
        else:
            self._pg_write = _pg_engine(url, echo)
            self._pg_writer = _PgWriter(self._pg_group)
            self._pg_read = _pg_engine(url, echo)

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    def file_problem(self) -> str | None:
        """SQLite: why the file at the database's path is not the one this process writes
        to (removed or replaced while open); None otherwise (and on PostgreSQL)."""
        return self.file.problem() if self.is_sqlite else None

    @property
    def sqlite_engine(self) -> Engine:
        """The engine of the SQLite connections (for instrumentation: event listeners)."""
        assert self.is_sqlite, "SQLite only"
        return self._readers.engine

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction: committed when it returns, rolled back
        (and the exception raised) when it raises."""
        if self.is_sqlite:
            return await self._writer.submit(work)
        return await self._pg_writer.submit(work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a read-only connection (a snapshot on SQLite)."""
        if self.is_sqlite:
            return await self._readers.read(work)
        return await self._pg_run(self._pg_read, work, transactional=False)

    async def _pg_group(self, works: list[Callable[[Connection], Any]], held: _Held) -> list[Any]:
        """Several units of work in one transaction, in order (group commit). A transaction
        that lost a deadlock (or a serialization check) committed nothing: it runs again;
        one that gave way on a lock (:func:`take_locks`) runs again with it taken first."""
        first: set[str] = set()

        def group(conn: Connection) -> list[Any]:
            take_locks(conn, first)
            results = []
            for n, work in enumerate(works):
                conn.info[_LATER_UNIT] = n > 0  # cleared by the next attempt's start
                results.append(work(conn))
            return results

        attempts = 8  # each gave-way adds its locks to those taken first: few are needed
        for attempt in range(1, attempts + 1):
            try:
                return await self._pg_run(self._pg_write, group, transactional=True, held=held)
            except Exception as exc:
                if not lost_a_race(exc):
                    raise
                if attempt == attempts:
                    raise DatabaseUnavailable("the database is busy: try again") from exc
                if isinstance(exc, LockOrderConflict):
                    first.update(exc.keys)
                    continue
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def _pg_run(
        self,
        engine: AsyncEngine,
        work: Callable[[Connection], T],
        *,
        transactional: bool,
        held: _Held | None = None,
    ) -> T:
        for attempt in (1, 2):
            state = {"committing": False}
            try:
                result, appended = await _pg_once(engine, work, transactional, state, held)
            except _RETRIED_ERRORS as exc:
                # A pooled connection that died is replaced and the work, which never
                # committed, runs once more; an outage or an unknown commit outcome is 503.
                lost = _connection_lost(exc)
                if not state["committing"] and attempt == 1 and lost:
                    continue
                if lost or isinstance(exc, (OperationalError, OSError)):
                    raise _unavailable(exc) from exc
                raise
            count_appended(appended)
            return result
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        if self.is_sqlite:
            await asyncio.to_thread(self._writer.close)
            await asyncio.to_thread(self._readers.close)
        else:
            await self._pg_writer.close()
            await self._pg_write.dispose()
            await self._pg_read.dispose()

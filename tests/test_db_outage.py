"""A database restart during requests: 503 problems with Retry-After while it is away,
readiness false then true again, no 500 at any time, and everything answered once it is
back (PostgreSQL: the scaled mode's database)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection, text

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from shared.eventstore.applied import raise_checkpoint, read_checkpoint
from shared.eventstore.db import Database, LockOrderConflict, take_locks
from shared.eventstore.ledger import EventStore, StreamAppend, StreamHead
from shared.eventstore.runner import ProjectionRunner
from shared.kernel.events.envelope import Actor, CommandContext
from tests.support.factories import received
from tests.support.postgres import PostgresCluster

CONTEXT = CommandContext(actor=Actor(subject="test", role="system"), service="test")


def ticket_body(n: int) -> dict:  # type: ignore[type-arg]
    body = copy.deepcopy(RECEIVE_EXAMPLE)
    body["product"]["serial_number"] = f"SN-OUT-{n:05d}"
    return body


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_database_restart_answers_503_then_recovers(
    platform: Platform, intake: httpx.AsyncClient, pg_cluster: PostgresCluster, mode: str
) -> None:
    statuses: Counter[int] = Counter()
    ready: list[tuple[float, int]] = []
    problems: list[str] = []
    stop, written = asyncio.Event(), asyncio.Event()

    def note(response: httpx.Response) -> None:
        statuses[response.status_code] += 1
        if response.status_code == 201:
            written.set()
        if response.status_code >= 500:
            kind = response.headers.get("content-type", "")
            if response.status_code != 503 or not kind.startswith("application/problem+json"):
                problems.append(f"{response.status_code} {kind}: {response.text[:200]}")
            elif "retry-after" not in response.headers:
                problems.append("503 without Retry-After")

    async def writer(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            note(
                await intake.post(
                    "/tickets",
                    json=ticket_body(worker * 10_000 + n),
                    headers={"Idempotency-Key": f"outage-{mode}-{worker}-{n}"},
                )
            )
            await asyncio.sleep(0.02)

    scrapes: list[tuple[float, int, str]] = []

    async def reader() -> None:
        while not stop.is_set():
            note(await intake.get("/tickets", params={"limit": 5}))
            probe = await intake.get("/health/ready")
            ready.append((time.monotonic(), probe.status_code))
            metrics = await intake.get("/metrics")
            scrapes.append((time.monotonic(), metrics.status_code, metrics.text))
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(writer(w)) for w in range(4)] + [asyncio.create_task(reader())]
    try:
        # Writes under way before the restart: on a loaded machine the first ones (a new
        # database's keys among them) can take longer than the second this used to wait.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(written.wait(), 30)
        await asyncio.sleep(0.5)
        before = statuses[201]
        down_at = time.monotonic()
        await asyncio.to_thread(pg_cluster.restart, mode=mode, down_seconds=1.5)
        up_at = time.monotonic()
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert problems == [], problems[:5]
    assert statuses[500] == 0
    assert statuses[503] > 0, statuses  # requests during the outage were told to retry
    assert before > 0 and statuses[201] > before, statuses  # writes resumed
    during = [code for at, code in ready if down_at + 0.2 < at < up_at - 0.2]
    after = [code for at, code in ready if at > up_at + 1.0]
    assert 503 in during and set(after) == {200}, (during, after)
    # Metrics are scraped through the outage: the request counts go on, the database's
    # figures are left out while it is away.
    assert {code for _, code, _ in scrapes} == {200}
    away = [text for at, _, text in scrapes if down_at + 0.2 < at < up_at - 0.2]
    assert any("ticketline_database_up 0.0" in text for text in away)
    assert all("ticketline_outbox_backlog" not in t for t in away if "database_up 0.0" in t)
    assert "ticketline_database_up 1.0" in scrapes[-1][2]
    # Every answer once it is back is a success.
    recovered = await intake.post("/tickets", json=ticket_body(99_999))
    assert recovered.status_code == 201


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_deadlock_victim_runs_again(database_url: str) -> None:
    """Two writers (two processes) taking two locks in opposite orders: the server aborts
    one to break the deadlock; its unit of work never committed and runs again."""
    first, second = Database(database_url), Database(database_url)
    attempts: list[str] = []

    def locking(name: str, a: int, b: int) -> Callable[[Connection], str]:
        def work(conn: Connection) -> str:
            attempts.append(name)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": a})
            conn.execute(text("SELECT pg_sleep(0.3)"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": b})
            return name

        return work

    try:
        done = await asyncio.gather(
            first.write(locking("a", 1, 2)), second.write(locking("b", 2, 1))
        )
    finally:
        await first.dispose()
        await second.dispose()
    assert done == ["a", "b"]
    assert len(attempts) == 3  # one of them twice


async def deadlocks_of(db: Database) -> int:
    """The deadlocks the server broke in this database so far."""
    return int(
        await db.read(
            lambda c: c.execute(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )
    )


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_writer_holding_the_position_counter_gives_way_on_a_lock(
    database_url: str, store: EventStore
) -> None:
    """Two processes: one takes a stream lock and then appends (the order every writer
    keeps); the other appends first and then wants that lock (a reactor's batch moving on
    to its next ticket, units committed together). Waiting would close a cycle: the
    server's deadlock check after a second of every writer waiting, then an abort. The
    second gives way at once instead and runs again with the lock taken first."""
    first, second = Database(database_url), Database(database_url)
    gave_way: list[list[str]] = []
    runs: list[str] = []

    def append(conn: Connection) -> None:
        one = StreamAppend(str(uuid.uuid4()), [received(len(runs))], StreamHead(), "east")
        store.append(conn, [one], CONTEXT)

    def lock_then_append(conn: Connection) -> str:
        runs.append("a")
        ProjectionRunner.lock_all(conn, [("p", "ticket-x")])
        conn.execute(text("SELECT pg_sleep(0.4)"))
        append(conn)
        return "a"

    def append_then_lock(conn: Connection) -> str:
        runs.append("b")
        append(conn)
        try:
            ProjectionRunner.lock_all(conn, [("p", "ticket-x")])
        except LockOrderConflict as exc:
            gave_way.append(exc.keys)
            raise
        return "b"

    async def later() -> str:
        await asyncio.sleep(0.15)  # "a" holds the lock and sleeps
        return await second.write(append_then_lock)

    try:
        done = await asyncio.gather(first.write(lock_then_append), later())
        deadlocks = await deadlocks_of(first)
    finally:
        await first.dispose()
        await second.dispose()
    assert done == ["a", "b"]
    assert gave_way == [["projection:p:ticket-x"]] and runs.count("b") == 2
    assert deadlocks == 0


@pytest.mark.parametrize("backend", ["postgres"])
async def test_units_committed_together_give_way_on_locks_another_group_took_first(
    database_url: str,
) -> None:
    """Two processes each commit two units together (group commit: two projections'
    batches), taking the same two locks in opposite orders. The second unit of a group
    only tries its lock (its transaction holds the first unit's): one gives way and runs
    again with that lock taken first, instead of a deadlock."""
    first, second = Database(database_url), Database(database_url)
    gave_way: list[str] = []

    def lock(key: str, then_sleep: float = 0.0) -> Callable[[Connection], str]:
        def work(conn: Connection) -> str:
            try:
                take_locks(conn, [key])
            except LockOrderConflict:
                gave_way.append(key)
                raise
            if then_sleep:
                conn.execute(text("SELECT pg_sleep(:s)"), {"s": then_sleep})
            return key

        return work

    async def group(db: Database, one: str, two: str) -> list[str]:
        return await db._pg_group([lock(one, 0.3), lock(two)], db._pg_writer.held)

    try:
        done = await asyncio.gather(group(first, "a", "b"), group(second, "b", "a"))
        deadlocks = await deadlocks_of(first)
    finally:
        await first.dispose()
        await second.dispose()
    assert done == [["a", "b"], ["b", "a"]]
    assert gave_way and deadlocks == 0


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_unit_that_locks_twice_gives_way_on_its_second_locks(database_url: str) -> None:
    """A projector's batch locks its streams, then its reactor the tickets it appends to:
    two such units in two processes, in opposite orders, only try their second locks and
    run again with them taken first — no deadlock."""
    first, second = Database(database_url), Database(database_url)
    gave_way: list[list[str]] = []

    def locking(one: str, two: str) -> Callable[[Connection], str]:
        def work(conn: Connection) -> str:
            take_locks(conn, [one])
            conn.execute(text("SELECT pg_sleep(0.3)"))
            try:
                take_locks(conn, [two])
            except LockOrderConflict as exc:
                gave_way.append(exc.keys)
                raise
            return one + two

        return work

    try:
        done = await asyncio.gather(first.write(locking("a", "b")), second.write(locking("b", "a")))
        deadlocks = await deadlocks_of(first)
    finally:
        await first.dispose()
        await second.dispose()
    assert done == ["ab", "ba"]
    assert gave_way and deadlocks == 0


@pytest.mark.parametrize("backend", ["postgres"])
async def test_checkpoint_raises_committed_together_never_wait_in_a_cycle(
    database_url: str,
) -> None:
    """Two instances' guards each raise two projections' checkpoints in one group commit,
    in opposite orders (the deadlock the outage bench met): a row another transaction
    holds is left to it, so neither waits; each checkpoint ends raised, none moves back."""
    first, second = Database(database_url), Database(database_url)
    at = datetime(2026, 11, 27, tzinfo=UTC)
    await first.write(lambda c: [raise_checkpoint(c, n, 1, at) for n in ("p1", "p2")])

    def raising(name: str, position: int, then_sleep: float = 0.0) -> Callable[[Connection], None]:
        def work(conn: Connection) -> None:
            raise_checkpoint(conn, name, position, at)
            if then_sleep:
                conn.execute(text("SELECT pg_sleep(:s)"), {"s": then_sleep})

        return work

    async def group(db: Database, one: str, two: str, position: int, delay: float) -> None:
        await asyncio.sleep(delay)
        units = [raising(one, position, 0.4), raising(two, position)]
        await db._pg_group(units, db._pg_writer.held)

    try:
        started = time.monotonic()
        await asyncio.gather(group(first, "p1", "p2", 10, 0.0), group(second, "p2", "p1", 20, 0.1))
        elapsed = time.monotonic() - started
        deadlocks = await deadlocks_of(first)
        stored = await first.read(lambda c: {n: read_checkpoint(c, n) for n in ("p1", "p2")})
    finally:
        await first.dispose()
        await second.dispose()
    assert deadlocks == 0 and elapsed < 0.9  # the server's deadlock check waits 1 s
    assert stored == {"p1": 20, "p2": 20}


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_sqlite_file_another_process_keeps_locked_is_a_503(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Still locked after the busy timeout (a CLI import writing, a hand-held lock): the
    command is a 503 problem with Retry-After, never a 500, and the log says the driver's
    cause; once the lock is gone it is answered as usual."""
    import logging
    import sqlite3

    caplog.set_level(logging.WARNING, logger="ticketline.http")

    from shared.app.config import Settings
    from shared.eventstore.db import sqlite_path
    from tests.support.auth import TEST_AUTH
    from tests.support.clients import service_client

    settings = Settings(
        database_url=database_url, data_dir=tmp_path, auth=TEST_AUTH, sqlite_busy_seconds=0.2
    )
    platform = Platform.from_settings(settings)
    try:
        async with service_client("intake", platform) as intake:
            assert (await intake.post("/tickets", json=ticket_body(1))).status_code == 201
            holder = sqlite3.connect(sqlite_path(database_url), isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                refused = await intake.post("/tickets", json=ticket_body(2))
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert refused.status_code == 503, refused.text
            warned = [r.getMessage() for r in caplog.records if r.name == "ticketline.http"]
            assert any("database is locked" in m for m in warned), warned
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert "retry-after" in refused.headers
            assert (await intake.post("/tickets", json=ticket_body(2))).status_code == 201
    finally:
        await platform.close()


@pytest.mark.parametrize("backend", ["sqlite"])
@contextlib.asynccontextmanager
async def sqlite_intake(data: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Intake on a migrated SQLite file in ``data``, one ticket opened."""
    from shared.app.config import Settings
    from shared.eventstore.migrations import upgrade
    from tests.support.auth import TEST_AUTH
    from tests.support.clients import service_client

    url = f"sqlite+aiosqlite:///{data}/ticketline.db"
    upgrade(url)
    platform = Platform.from_settings(Settings(database_url=url, data_dir=data, auth=TEST_AUTH))
    try:
        async with service_client("intake", platform) as intake:
            assert (await intake.post("/tickets", json=ticket_body(1))).status_code == 201
            yield intake
    finally:
        await platform.close()


async def assert_writes_stop(intake: httpx.AsyncClient, said: str) -> None:
    """Writes 503 (each of them: none luckier later), readiness 503 saying why, gauge 0."""
    for n in (2, 3):
        refused = await intake.post("/tickets", json=ticket_body(n))
        assert refused.status_code == 503, refused.text
        assert "retry-after" in refused.headers
    ready = await intake.get("/health/ready")
    assert ready.status_code == 503 and said in ready.json()["detail"]
    assert "ticketline_database_up 0.0" in (await intake.get("/metrics")).text


async def test_a_database_file_removed_while_open_takes_no_write_and_is_not_ready(
    database_url: str, tmp_path: Path
) -> None:
    """Its data directory deleted under a running process: a write would land in a file
    nobody can open again (and the next start would find an empty database). Writes are
    503s, readiness and the database gauge say so."""
    import shutil

    async with sqlite_intake(tmp_path / "data") as intake:
        shutil.rmtree(tmp_path / "data")
        await assert_writes_stop(intake, "removed while open")


async def test_a_position_counter_behind_the_ledger_stops_writes_and_is_not_ready(
    database_url: str, tmp_path: Path
) -> None:
    """The counter handing out a position the ledger holds (a backup copied over the live
    file in place, a counter row edited): never a version conflict a client would take as
    final — writes are 503s, readiness and the gauge say so, until a restart."""
    import sqlite3

    async with sqlite_intake(tmp_path / "data") as intake:
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / "ticketline.db")) as other:
            other.execute("UPDATE event_sequence SET last_position = last_position - 1")
            other.commit()
        await assert_writes_stop(intake, "behind the ledger")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_sqlite_writer_outlives_a_failure_past_a_units_handling(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure the unit's own handling cannot absorb (here: ending the transaction
    fails) fails that caller; the writer thread lives on for the next ones (it died, and
    every later write waited forever)."""
    import shared.eventstore.db as db_module

    database = Database(database_url)
    try:
        finish = db_module._finish

        def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("the transaction cannot end")

        monkeypatch.setattr(db_module, "_finish", broken)
        with pytest.raises(RuntimeError, match="cannot end"):
            await asyncio.wait_for(database.write(lambda c: c.exec_driver_sql("SELECT 1")), 5)
        monkeypatch.setattr(db_module, "_finish", finish)
        answer = await asyncio.wait_for(
            database.write(lambda c: c.exec_driver_sql("SELECT 2").scalar()), 5
        )
        assert answer == 2
    finally:
        await database.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_writer_whose_file_is_locked_when_it_first_connects_lives_on(
    database_url: str,
) -> None:
    """Its connection opened while another process wrote: those callers get the 503, the
    next ones are served (the thread died on opening, and every write waited forever)."""
    import sqlite3

    from shared.eventstore.db import DatabaseUnavailable, sqlite_path

    holder = sqlite3.connect(sqlite_path(database_url), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    database = Database(database_url, sqlite_busy_seconds=0.2)
    try:
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(database.write(lambda c: c.exec_driver_sql("SELECT 1")), 5)
        holder.execute("ROLLBACK")
        answer = await asyncio.wait_for(
            database.write(lambda c: c.exec_driver_sql("SELECT 2").scalar()), 5
        )
        assert answer == 2
    finally:
        holder.close()
        await database.dispose()


def test_a_new_database_beside_an_old_master_key_is_said_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A data directory whose database is gone but whose master key is there: the start
    makes a new, empty database, and says so (the ledger may have been lost)."""
    import logging

    from shared.app.config import Settings
    from shared.app.personal import MASTER_KEY_FILE
    from shared.app.runtime import warn_of_a_lost_database

    caplog.set_level(logging.WARNING, logger="ticketline")
    settings = Settings(data_dir=tmp_path)
    warn_of_a_lost_database(settings)  # a first start: nothing to say
    (tmp_path / MASTER_KEY_FILE).write_text("00" * 32 + "\n")
    warn_of_a_lost_database(settings)
    (warned,) = [r.getMessage() for r in caplog.records if r.name == "ticketline"]
    assert "starting a new, empty database" in warned and MASTER_KEY_FILE in warned

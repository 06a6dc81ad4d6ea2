"""Projection runner on SQLite and PostgreSQL: idempotence, checkpoints, rebuild."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from shared.eventstore.applied import stream_versions
from shared.eventstore.db import Database, take_locks
from shared.eventstore.ledger import NO_STREAM, EventStore
from shared.eventstore.projection import delete_where_in, load_rows, upsert_rows
from shared.eventstore.runner import Batch, ProjectionRunner, read_checkpoint
from shared.eventstore.tables import projection_checkpoints, projection_stream_versions
from shared.kernel.events.tickets import TicketClosed, TicketDispatched
from shared.readmodels.ticket_state import TicketStateProjection, ticket_state
from tests.support.factories import context, diagnosed, new_ticket_id, received


def dispatched() -> TicketDispatched:
    return TicketDispatched(
        region="east",
        service_point_id="sp-1",
        technician_id="tech-1",
        appointment_start=datetime(2026, 11, 3, 9, tzinfo=UTC),
        appointment_end=datetime(2026, 11, 3, 11, tzinfo=UTC),
        reason="named by dispatcher",
    )


async def seed(db: Database, store: EventStore, tickets: int = 5) -> list[str]:
    ids = []
    for n in range(tickets):
        tid = new_ticket_id()
        ids.append(tid)
        await db.write(
            lambda c, tid=tid, n=n: store.append_to_stream(
                c, tid, NO_STREAM, [received(n)], context()
            )
        )
        await db.write(
            lambda c, tid=tid: store.append_to_stream(
                c, tid, 1, [diagnosed(), dispatched()], context()
            )
        )
    return ids


async def dump(db: Database) -> list:
    query = select(ticket_state).order_by(ticket_state.c.ticket_id)
    return await db.read(lambda c: list(c.execute(query).all()))


async def test_catch_up_builds_ticket_state_and_checkpoints(
    db: Database, store: EventStore
) -> None:
    ids = await seed(db, store, 3)
    runner = ProjectionRunner(db, store)
    projection = TicketStateProjection()
    stats = await runner.catch_up(projection)
    assert stats.applied == 9
    query = select(ticket_state).where(ticket_state.c.ticket_id == ids[0])
    row = await db.read(lambda c: c.execute(query).one())
    assert await db.read(lambda c: read_checkpoint(c, projection.name)) == 9
    assert (row.status, row.technician_id, row.version) == ("dispatched", "tech-1", 3)
    assert row.responded_at is not None and row.resolution_due_at is not None
    # Nothing new: a second run applies nothing.
    assert (await runner.catch_up(projection)).applied == 0


async def test_rebuild_equals_incremental(db: Database, store: EventStore) -> None:
    ids = await seed(db, store, 4)
    runner = ProjectionRunner(db, store)
    projection = TicketStateProjection()
    await runner.catch_up(projection, batch_size=2)
    # More events after the first run, applied incrementally.
    await db.write(lambda c: store.append_to_stream(c, ids[1], 3, [TicketClosed()], context()))
    await runner.catch_up(projection, batch_size=2)
    incremental = await dump(db)
    await runner.rebuild(projection)
    assert await dump(db) == incremental
    assert len(incremental) == 4


async def test_duplicate_delivery_changes_nothing(db: Database, store: EventStore) -> None:
    await seed(db, store, 2)
    runner = ProjectionRunner(db, store)
    projection = TicketStateProjection()
    await runner.catch_up(projection)
    before = await dump(db)
    everything = await db.read(lambda c: store.read_all(c))

    async def redeliver(projection):  # type: ignore[no-untyped-def]
        yield Batch(events=everything + everything)

    class Source:
        batches = staticmethod(redeliver)

    stats = await runner.run(projection, Source())
    assert stats.applied == 0 and stats.duplicates == 2 * len(everything)
    assert await dump(db) == before


async def test_gap_is_filled_from_the_ledger(db: Database, store: EventStore) -> None:
    """A later version delivered first (as after a relay retry) pulls the missing ones."""
    await seed(db, store, 1)
    runner = ProjectionRunner(db, store)
    everything = await db.read(lambda c: store.read_all(c))

    async def out_of_order(projection):  # type: ignore[no-untyped-def]
        yield Batch(events=[everything[2], everything[0], everything[1]])

    class Source:
        batches = staticmethod(out_of_order)

    stats = await runner.run(TicketStateProjection(), Source())
    assert stats.gap_filled == 2 and stats.duplicates == 2
    (row,) = await dump(db)
    assert row.status == "dispatched" and row.version == 3


class StaleReactor:
    """Appends a closing event to each ticket it sees; its first attempt decides on a stale
    version, as a reactor does when a command appended to the same stream meanwhile."""

    name = "stale_reactor"
    tables = ()
    stream_types = ("ticket",)

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.attempts = 0

    def apply(self, conn, events) -> None:  # type: ignore[no-untyped-def]
        for event in events:
            if event.event_type != "TicketReceived":
                continue
            self.attempts += 1
            head = self.store.stream_head(conn, event.stream_id).version
            expected = head - 1 if self.attempts == 1 else head
            self.store.append_to_stream(
                conn, event.stream_id, expected, [TicketClosed(reason="test")], context()
            )


async def test_a_lost_race_retries_the_batch_without_failing(
    db: Database, store: EventStore
) -> None:
    (tid,) = await seed(db, store, 1)
    reactor = StaleReactor(store)
    stats = await ProjectionRunner(db, store).catch_up(reactor)
    assert reactor.attempts == 2  # the first attempt's writes were rolled back
    # Counted once: the three seeded events, then (next batch) the reactor's own event.
    assert stats.applied == 4
    types = [e.event_type for e in await db.read(lambda c: store.read_stream(c, tid))]
    assert types.count("TicketClosed") == 1
    checkpoint = await db.read(lambda c: read_checkpoint(c, reactor.name))
    assert checkpoint == await db.read(store.last_position)


class Flaky:
    """A projection that fails until told otherwise (a bug fixed by a redeploy)."""

    name = "flaky"
    tables = ()
    stream_types = ("ticket",)

    def __init__(self) -> None:
        self.broken = True
        self.seen: list[int] = []

    def apply(self, conn, events) -> None:  # type: ignore[no-untyped-def]
        if self.broken:
            raise RuntimeError("a bug")
        self.seen += [e.position for e in events]


async def test_one_pump_feeds_every_projection_and_a_failing_one_alone_stays_behind(
    db: Database, store: EventStore
) -> None:
    from shared.eventstore.pump import LedgerPump

    ids = await seed(db, store, 3)
    runner = ProjectionRunner(db, store)
    flaky, state = Flaky(), TicketStateProjection()
    pump = LedgerPump(runner, [flaky, state], batch_size=4)
    await pump.catch_up()
    # ticket_state moved on past the first page; the failing one rolled back alone.
    assert await db.read(lambda c: read_checkpoint(c, "flaky")) == 0
    assert await db.read(lambda c: read_checkpoint(c, state.name)) == 4
    flaky.broken = False
    for _ in range(5):
        await pump.catch_up()
    assert flaky.seen == list(range(1, 10))  # every event once, in order
    assert await db.read(lambda c: read_checkpoint(c, state.name)) == 9
    rows = await dump(db)
    assert sorted(r.ticket_id for r in rows) == sorted(ids)
    await runner.rebuild(state)
    assert await dump(db) == rows


async def test_rows_found_and_deleted_by_key_lists_longer_than_a_statement(db: Database) -> None:
    """Lists of keys past the 500 one SQLite statement takes (PostgreSQL joins them as one
    array): every wanted row, and only those."""
    ids = [f"stream-{i:04d}" for i in range(1200)]
    rows = [
        {"projection": "p", "stream_id": sid, "version": i, "parked_version": None}
        for i, sid in enumerate(ids)
    ]
    other = [{**r, "projection": "q"} for r in rows[:10]]
    psv = projection_stream_versions
    await db.write(lambda c: upsert_rows(c, psv, rows + other))
    wanted = ids[100:1150] + ["stream-missing"]

    applied = await db.write(lambda c: stream_versions(c, "p", wanted))
    assert applied.versions == {sid: i for i, sid in enumerate(ids) if 100 <= i < 1150}
    assert applied.parked == {}
    checkpoints = [
        {"projection": sid, "position": i, "updated_at": datetime(2026, 11, 3, 9, tzinfo=UTC)}
        for i, sid in enumerate(ids)
    ]
    pc = projection_checkpoints
    await db.write(lambda c: upsert_rows(c, pc, checkpoints))
    loaded = await db.read(lambda c: load_rows(c, pc, [(sid,) for sid in wanted]))
    assert loaded == {(r["projection"],): r for r in checkpoints[100:1150]}

    await db.write(lambda c: delete_where_in(c, psv, "stream_id", wanted))
    left = await db.read(lambda c: c.execute(select(psv.c.projection, psv.c.stream_id)).all())
    assert sorted(left) == sorted(
        [("p", sid) for sid in ids[:100] + ids[1150:]] + [("q", sid) for sid in ids[:10]]
    )


class LocksMore:
    """A projection that, like a reactor, locks more inside its batch (the tickets it
    appends to) after the pump took the page's stream locks."""

    name = "locks_more"
    tables = ()
    stream_types = ("ticket",)

    def __init__(self) -> None:
        self.seen: list[int] = []

    def apply(self, conn, events) -> None:  # type: ignore[no-untyped-def]
        take_locks(conn, ["contended"])
        self.seen += [e.position for e in events]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_the_pump_runs_a_page_again_when_a_projection_gives_way_on_a_lock(
    db: Database, store: EventStore, database_url: str
) -> None:
    """Another process holds the lock a projection takes inside its batch: the projection
    gives way (its transaction holds the page's locks), and the page runs again with that
    lock taken first — applied, not counted as a failure of the projection."""
    from shared.eventstore.pump import LedgerPump

    await seed(db, store, 2)
    projection = LocksMore()
    pump = LedgerPump(ProjectionRunner(db, store), [projection], batch_size=100)
    other = Database(database_url)

    def hold(conn) -> None:  # type: ignore[no-untyped-def]
        take_locks(conn, ["contended"])
        conn.execute(text("SELECT pg_sleep(0.5)"))

    try:
        holding = asyncio.create_task(other.write(hold))
        await asyncio.sleep(0.2)
        await pump.catch_up()
        await holding
    finally:
        await other.dispose()
    assert projection.seen == list(range(1, 7)) and not pump.failures
    assert await db.read(lambda c: read_checkpoint(c, projection.name)) == 6

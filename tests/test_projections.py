"""Projection runner on SQLite and PostgreSQL: idempotence, checkpoints, rebuild."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from shared.eventstore.db import Database
from shared.eventstore.ledger import NO_STREAM, EventStore
from shared.eventstore.runner import Batch, ProjectionRunner, read_checkpoint
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
        async with db.transaction() as conn:
            await store.append_to_stream(conn, tid, NO_STREAM, [received(n)], context())
        async with db.transaction() as conn:
            await store.append_to_stream(conn, tid, 1, [diagnosed(), dispatched()], context())
    return ids


async def dump(db: Database) -> list:
    async with db.reading() as conn:
        query = select(ticket_state).order_by(ticket_state.c.ticket_id)
        return list((await conn.execute(query)).all())


async def test_catch_up_builds_ticket_state_and_checkpoints(
    db: Database, store: EventStore
) -> None:
    ids = await seed(db, store, 3)
    runner = ProjectionRunner(db, store)
    projection = TicketStateProjection()
    stats = await runner.catch_up(projection)
    assert stats.applied == 9
    async with db.reading() as conn:
        row = (
            await conn.execute(select(ticket_state).where(ticket_state.c.ticket_id == ids[0]))
        ).one()
        assert await read_checkpoint(conn, projection.name) == 9
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
    async with db.transaction() as conn:
        await store.append_to_stream(conn, ids[1], 3, [TicketClosed()], context())
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
    async with db.reading() as conn:
        everything = await store.read_all(conn)

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
    async with db.reading() as conn:
        everything = await store.read_all(conn)

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

    async def handle(self, conn, event) -> None:  # type: ignore[no-untyped-def]
        if event.event_type != "TicketReceived":
            return
        self.attempts += 1
        head = (await self.store.stream_head(conn, event.stream_id))[0]
        expected = head - 1 if self.attempts == 1 else head
        await self.store.append_to_stream(
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
    async with db.reading() as conn:
        types = [e.event_type for e in await store.read_stream(conn, tid)]
        assert types.count("TicketClosed") == 1
        assert await read_checkpoint(conn, reactor.name) == await store.last_position(conn)

"""The ledger on SQLite and PostgreSQL: append, read, concurrency, hash chain."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import delete, select, update

from shared.eventstore.db import Database
from shared.eventstore.ledger import NO_STREAM, ConcurrencyError, EventStore
from shared.eventstore.tables import events, outbox
from shared.eventstore.verify import verify_ledger
from shared.kernel.events import typed_payload
from shared.kernel.events.envelope import GENESIS_HASH
from shared.kernel.events.tickets import TicketReceived
from tests.support.factories import context, diagnosed, new_ticket_id, received


async def test_append_and_read_stream(db: Database, store: EventStore) -> None:
    tid = new_ticket_id()
    async with db.transaction() as conn:
        written = await store.append_to_stream(
            conn, tid, NO_STREAM, [received()], context(), region="east"
        )
        written += await store.append_to_stream(conn, tid, 1, [diagnosed()], context())
    async with db.reading() as conn:
        stream = await store.read_stream(conn, tid)
        rows = (await conn.execute(select(outbox).order_by(outbox.c.id))).all()
    assert [e.event_type for e in stream] == ["TicketReceived", "TicketDiagnosed"]
    assert [e.stream_version for e in stream] == [1, 2]
    assert stream == written
    assert stream[0].prev_hash == GENESIS_HASH and stream[1].prev_hash == stream[0].hash
    assert all(e.computed_hash() == e.hash for e in stream)
    assert stream[0].occurred_at.tzinfo is not None
    assert isinstance(typed_payload(stream[0]), TicketReceived)
    # The outbox rows were written in the same transaction, keyed by the ticket.
    assert [(r.position, r.topic, r.message_key) for r in rows] == [
        (stream[0].position, "ticketline.tickets", tid),
        (stream[1].position, "ticketline.tickets", tid),
    ]


async def test_wrong_expected_version_is_a_conflict(db: Database, store: EventStore) -> None:
    tid = new_ticket_id()
    async with db.transaction() as conn:
        await store.append_to_stream(conn, tid, NO_STREAM, [received()], context())
    with pytest.raises(ConcurrencyError) as err:
        async with db.transaction() as conn:
            await store.append_to_stream(conn, tid, NO_STREAM, [received()], context())
    assert err.value.actual == 1
    # Nothing half-written: the failed append left neither an event nor an outbox row.
    async with db.reading() as conn:
        assert len(await store.read_stream(conn, tid)) == 1
        assert len((await conn.execute(select(outbox))).all()) == 1


async def test_concurrent_appends_exactly_one_wins(db: Database, store: EventStore) -> None:
    tid = new_ticket_id()
    async with db.transaction() as conn:
        await store.append_to_stream(conn, tid, NO_STREAM, [received()], context())

    async def attempt() -> str:
        try:
            async with db.transaction() as conn:
                await store.append_to_stream(conn, tid, 1, [diagnosed()], context())
                await asyncio.sleep(0.05)  # hold the transaction open while the others try
            return "won"
        except ConcurrencyError:
            return "conflict"

    outcomes = await asyncio.gather(*(attempt() for _ in range(5)))
    assert sorted(outcomes) == ["conflict"] * 4 + ["won"]
    async with db.reading() as conn:
        assert [e.stream_version for e in await store.read_stream(conn, tid)] == [1, 2]


async def test_positions_are_gap_free_across_streams(db: Database, store: EventStore) -> None:
    async def append(n: int) -> None:
        async with db.transaction() as conn:
            await store.append_to_stream(conn, new_ticket_id(), NO_STREAM, [received(n)], context())

    await asyncio.gather(*(append(n) for n in range(20)))
    async with db.reading() as conn:
        all_events = await store.read_all(conn)
    assert [e.position for e in all_events] == list(range(1, 21))


async def _ledger_with_two_tickets(db: Database, store: EventStore) -> list[str]:
    ids = [new_ticket_id(), new_ticket_id()]
    for n, tid in enumerate(ids):
        async with db.transaction() as conn:
            await store.append_to_stream(conn, tid, NO_STREAM, [received(n)], context())
            await store.append_to_stream(conn, tid, 1, [diagnosed()], context())
    return ids


async def test_verify_passes_on_untouched_ledger(db: Database, store: EventStore) -> None:
    await _ledger_with_two_tickets(db, store)
    async with db.reading() as conn:
        report = await verify_ledger(conn, store)
    assert report.ok and report.events_checked == 4 and report.streams_checked == 2


@pytest.mark.parametrize("tamper", ["change", "delete", "reorder"])
async def test_tampered_ledger_is_detected(db: Database, store: EventStore, tamper: str) -> None:
    ids = await _ledger_with_two_tickets(db, store)
    async with db.transaction() as conn:
        first = (
            await conn.execute(
                select(events).where(events.c.stream_id == ids[0], events.c.stream_version == 1)
            )
        ).one()
        if tamper == "change":
            body = json.loads(first.payload)
            body["customer"]["phone"] = "13900000000"
            await conn.execute(
                update(events)
                .where(events.c.position == first.position)
                .values(payload=json.dumps(body))
            )
        elif tamper == "delete":
            await conn.execute(delete(outbox).where(outbox.c.position == first.position + 1))
            await conn.execute(delete(events).where(events.c.position == first.position + 1))
        else:  # swap the two versions of the first stream
            await conn.execute(
                update(events).where(events.c.position == first.position).values(stream_version=99)
            )
            await conn.execute(
                update(events)
                .where(events.c.position == first.position + 1)
                .values(stream_version=1)
            )
            await conn.execute(
                update(events).where(events.c.position == first.position).values(stream_version=2)
            )
    async with db.reading() as conn:
        report = await verify_ledger(conn, store)
    assert not report.ok
    broken = report.broken[0]
    expected_kind = {"change": "hash", "delete": "global_sequence", "reorder": "stream_version"}[
        tamper
    ]
    assert broken.kind == expected_kind
    if tamper == "delete":
        # The first link found broken is the event right after the hole.
        assert broken.position == first.position + 2
        assert f"follows {first.position}" in broken.detail
    else:
        assert (broken.stream_id, broken.position) == (ids[0], first.position)

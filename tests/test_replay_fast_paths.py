"""The replay's fast paths give what the general ones give: time conversions, rows read
and written on the bare drivers (SQLite and PostgreSQL), the rebuild's GC setting."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Connection, inspect, select

from shared.eventstore import ledger
from shared.eventstore.db import Database
from shared.eventstore.ledger import NO_STREAM, EventStore, row_to_envelope
from shared.eventstore.projection import Projection, _read_time, _write_time, upsert_rows
from shared.eventstore.runner import Batch, EventSource, LedgerSource, ProjectionRunner
from shared.readmodels.ticket_state import TicketStateProjection, ticket_state
from tests.support.factories import context, diagnosed, new_ticket_id, received

TIMES = [
    datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
    datetime(2026, 11, 2, 9, 30, 0, 7, tzinfo=UTC),
    datetime.fromisoformat("2026-11-02T09:30:00Z"),
    datetime(2026, 11, 2, 11, 30, 1, 5, tzinfo=timezone(timedelta(hours=2))),
]


def _old_write(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


@pytest.mark.parametrize("value", TIMES)
def test_stored_time_text_and_back_are_unchanged(value: datetime) -> None:
    text = _write_time(value)
    assert text == _old_write(value)
    back = _read_time(text)
    assert back == value and back is not None and back.tzinfo is UTC
    parsed = ledger._parse_time(text)
    assert parsed == value and parsed.tzinfo is UTC


def test_times_with_an_offset_still_read_as_before() -> None:
    # Not what the ledger writes, but read as it always was (the offset replaced).
    text = "2026-11-02 09:30:00+02:00"
    expected = datetime.fromisoformat(text).replace(tzinfo=UTC)
    assert ledger._parse_time(text) == expected
    assert _read_time(text) == expected


def test_naive_datetimes_are_refused_on_postgresql_too() -> None:
    from shared.eventstore.projection import _pg_values

    with pytest.raises(ValueError, match="naive"):
        _pg_values({"at": datetime(2026, 11, 2)}, ["at"])
    assert _pg_values({"at": TIMES[3]}, ["at"]) == [TIMES[3].astimezone(UTC)]


async def _seed(db: Database, store: EventStore, tickets: int = 4) -> None:
    for n in range(tickets):
        tid = new_ticket_id()
        await db.write(
            lambda c, tid=tid, n=n: store.append_to_stream(
                c, tid, NO_STREAM, [received(n)], context()
            )
        )
        await db.write(
            lambda c, tid=tid: store.append_to_stream(c, tid, 1, [diagnosed()], context())
        )


async def test_events_read_on_the_driver_equal_those_read_through_sqlalchemy(
    db: Database, store: EventStore
) -> None:
    await _seed(db, store)
    fast = await db.read(lambda c: store.read_all(c, limit=100))
    slow = await db.read(
        lambda c: [
            row_to_envelope(r)
            for r in c.execute(ledger._READ_ALL, {"after": 0, "limit": 100}).all()
        ]
    )
    assert len(fast) == 8
    assert [e.model_dump() for e in fast] == [e.model_dump() for e in slow]
    assert all(e.occurred_at.tzinfo is UTC and e.recorded_at.tzinfo is UTC for e in fast)
    stream = await db.read(lambda c: store.read_stream(c, fast[0].stream_id, from_version=2))
    assert [e.event_id for e in stream] == [fast[1].event_id]


async def test_upserted_rows_read_back_as_written(db: Database, store: EventStore) -> None:
    await _seed(db, store, 2)
    runner = ProjectionRunner(db, store)
    await runner.catch_up(TicketStateProjection())
    query = select(ticket_state).order_by(ticket_state.c.ticket_id)
    before = [dict(r._mapping) for r in await db.read(lambda c: list(c.execute(query)))]
    changed = [r | {"closed_at": datetime(2026, 11, 4, 8, tzinfo=UTC)} for r in before]
    await db.write(lambda c: upsert_rows(c, ticket_state, changed))
    after = [dict(r._mapping) for r in await db.read(lambda c: list(c.execute(query)))]
    assert after == changed


async def test_a_rebuild_restores_the_garbage_collector(db: Database, store: EventStore) -> None:
    await _seed(db, store, 1)
    before = gc.get_threshold()
    await ProjectionRunner(db, store).rebuild(TicketStateProjection())
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def _indexes(conn: Connection) -> list[tuple[str, tuple[str, ...], bool]]:
    found = inspect(conn).get_indexes("ticket_state")
    return sorted((i["name"] or "", tuple(map(str, i["column_names"])), i["unique"]) for i in found)


class _FailingSource:
    """Gives one batch, then fails: a rebuild interrupted midway."""

    def __init__(self, inner: EventSource) -> None:
        self.inner = inner

    async def batches(self, projection: Projection) -> AsyncIterator[Batch]:
        async for batch in self.inner.batches(projection):
            yield batch
            raise RuntimeError("the source broke")


async def test_a_rebuild_builds_again_the_indexes_it_set_aside(
    db: Database, store: EventStore
) -> None:
    await _seed(db, store, 3)
    declared = await db.read(_indexes)
    assert len(declared) > 10  # every list filter's index
    runner = ProjectionRunner(db, store)
    stats = await runner.rebuild(TicketStateProjection())
    assert stats.applied == 6 and await db.read(_indexes) == declared
    with pytest.raises(RuntimeError, match="the source broke"):
        await runner.rebuild(
            TicketStateProjection(), _FailingSource(LedgerSource(db, store, batch_size=2))
        )
    assert await db.read(_indexes) == declared

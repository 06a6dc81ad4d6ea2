"""The replay's fast paths give what the general ones give: time conversions, rows read
and written on the bare drivers (SQLite and PostgreSQL), the rebuild's GC setting."""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, select

from shared.eventstore import ledger
from shared.eventstore.db import Database, utc_from_stored
from shared.eventstore.ledger import NO_STREAM, EventStore, row_to_envelope
from shared.eventstore.projection import Projection, _read_time, _write_time, upsert_rows
from shared.eventstore.runner import (
    Batch,
    EventSource,
    LedgerSource,
    ProjectionRunner,
    StreamOrderSource,
)
from shared.eventstore.tables import events as events_table
from shared.eventstore.tables import projection_checkpoints, projection_stream_versions
from shared.kernel.events.envelope import EventEnvelope, EventPayload
from shared.kernel.events.registry import all_payload_classes
from shared.kernel.events.tickets import (
    Address,
    ContactDetailsCorrected,
    Customer,
    FollowUpRecorded,
    Product,
    TicketClosed,
    TicketDispatched,
    TicketReopened,
    TicketRepaired,
    TicketVisited,
)
from shared.kernel.lifecycle import STATUS_AFTER_TEXT
from shared.readmodels.ticket_state import (
    _MARKS,
    TicketStateProjection,
    _changes,
    ticket_state,
)
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
    parsed = utc_from_stored(text)
    assert parsed == value and parsed.tzinfo is UTC


def test_a_time_with_an_offset_reads_as_that_instant() -> None:
    # Not what the ledger writes, but what SQLAlchemy's reading makes of it: the instant
    # (it read as the same wall time in UTC, and verify-export disagreed with verify).
    text = "2026-11-02 09:30:00+02:00"
    expected = datetime(2026, 11, 2, 7, 30, tzinfo=UTC)
    assert utc_from_stored(text) == expected
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
    """The indexes as reflected, and by name from the catalog (SQLite does not reflect
    the expression index on upper(serial_number))."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection")
        found = inspect(conn).get_indexes("ticket_state")
    reflected = {(i["name"] or "", tuple(map(str, i["column_names"])), i["unique"]) for i in found}
    catalog = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ticket_state'"
        if conn.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = 'ticket_state'"
    )
    named = {(name, (), False) for (name,) in conn.exec_driver_sql(catalog)}
    return sorted(reflected | {n for n in named if n[0] not in {r[0] for r in reflected}})


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


# --- the ticket_state rebuild folded in the database --------------------------------------


def _lifecycles() -> list[list[EventPayload]]:
    """Every event type the ticket's row reads, in the orders the lifecycle allows and a
    few it does not (a stream not opened by a TicketReceived)."""
    at = datetime(2026, 11, 4, 10, 15, 30, 123456, tzinfo=UTC)
    dispatched = TicketDispatched(
        region="east",
        service_point_id="sp-1",
        technician_id="tech-1",
        appointment_start=at,
        appointment_end=datetime.fromisoformat("2026-11-04T20:00:00+08:00"),
        reason="nearest",
    )
    repaired = TicketRepaired(outcome="fixed", cost_borne_by="warranty")
    follow_up = FollowUpRecorded(
        satisfaction_score=90, would_recommend=9, problem_solved=True, channel="call"
    )
    closed, reopened = TicketClosed(), TicketReopened(reason="again", source="complaint")
    visited = TicketVisited(technician_id="tech-1", arrived_at=at, findings="worn belt")
    moved = Address(line="9 River Street", city="Ningbo", region="west")
    return [
        [received(1), diagnosed(), diagnosed(category="misuse"), dispatched, visited]
        + [repaired, follow_up, closed],
        [received(2, customer_id=None, possible_duplicate_of=new_ticket_id())]
        + [
            ContactDetailsCorrected(
                customer=Customer(name="Wang Fang", phone="13900001111"), reason="typo"
            )
        ]
        + [ContactDetailsCorrected(address=moved, reason="moved"), diagnosed(), dispatched]
        + [repaired, follow_up, closed, reopened],
        [received(3), closed, reopened, diagnosed(), closed],
        [received(4, product=Product(model="X", purchase_date=date(2026, 1, 1)))],
        [diagnosed(), closed],  # no TicketReceived: no row, its versions applied
    ]


async def _seed_lifecycles(db: Database, store: EventStore) -> None:
    for events in _lifecycles():
        tid = new_ticket_id()
        for version, payload in enumerate(events):
            await db.write(
                lambda c, tid=tid, v=version, p=payload: store.append_to_stream(
                    c, tid, v or NO_STREAM, [p], context()
                )
            )


async def _applied_state(db: Database) -> tuple[list[Any], list[Any], list[Any]]:
    def read(conn: Connection) -> tuple[list[Any], list[Any], list[Any]]:
        psv, pc = projection_stream_versions, projection_checkpoints
        return (
            # As stored (SQLite's times are text: their form orders the lists).
            list(conn.exec_driver_sql("SELECT * FROM ticket_state ORDER BY ticket_id")),
            [tuple(r) for r in conn.execute(select(psv).order_by(psv.c.stream_id))],
            [r.position for r in conn.execute(select(pc.c.position))],
        )

    return await db.read(read)


class _DatabaseFoldOnly(TicketStateProjection):
    def fold(self, row: Any, event: EventEnvelope) -> Any:
        raise AssertionError("folded event by event")


async def test_the_rebuild_folded_in_the_database_equals_the_fold_event_by_event(
    db: Database, store: EventStore
) -> None:
    await _seed_lifecycles(db, store)
    runner = ProjectionRunner(db, store)
    await runner.catch_up(TicketStateProjection(), batch_size=3)
    incremental = await _applied_state(db)
    assert len(incremental[0]) == 4 and len(incremental[1]) == 5
    stats = await runner.rebuild(_DatabaseFoldOnly())
    assert stats.applied == sum(map(len, _lifecycles()))
    assert await _applied_state(db) == incremental
    assert await db.read(_indexes) != []


async def test_an_older_version_of_an_event_the_row_does_not_read_still_folds_in_the_database(
    db: Database, store: EventStore
) -> None:
    """An upgraded ledger holds SlaPolicyApplied version 1 on every ticket received before
    version 2: the row reads nothing of it, so the rebuild stays one statement."""
    from sqlalchemy import update

    from shared.kernel.events.sla import SlaPolicyApplied

    await _seed_lifecycles(db, store)
    tid = new_ticket_id()
    pinned = [received(8), SlaPolicyApplied(policy_id="standard", policy_version=1)]
    await db.write(lambda c: store.append_to_stream(c, tid, NO_STREAM, pinned, context()))
    older = update(events_table).where(events_table.c.event_type == "SlaPolicyApplied")
    await db.write(lambda c: c.execute(older.values(schema_version=1)))
    runner = ProjectionRunner(db, store)
    await runner.catch_up(TicketStateProjection(), batch_size=3)
    incremental = await _applied_state(db)
    await runner.rebuild(_DatabaseFoldOnly())
    assert await _applied_state(db) == incremental


async def test_a_ledger_the_database_cannot_fold_is_folded_event_by_event(
    db: Database, store: EventStore
) -> None:
    await _seed_lifecycles(db, store)
    # A second TicketReceived starts the row again: the statement leaves that to Python.
    tid = new_ticket_id()
    await db.write(lambda c: store.append_to_stream(c, tid, NO_STREAM, [received(8)], context()))
    await db.write(lambda c: store.append_to_stream(c, tid, 1, [received(9)], context()))
    runner = ProjectionRunner(db, store)
    await runner.catch_up(TicketStateProjection(), batch_size=3)
    incremental = await _applied_state(db)
    counting = _CountingFolds()
    await runner.rebuild(counting)
    assert counting.folds == sum(map(len, _lifecycles())) + 2
    assert await _applied_state(db) == incremental


class _CountingFolds(TicketStateProjection):
    folds = 0

    def fold(self, row: Any, event: EventEnvelope) -> Any:
        self.folds += 1
        return super().fold(row, event)


async def _seed_interleaved(db: Database, store: EventStore) -> None:
    """The lifecycles' events as a live ledger holds them: each ticket's far apart."""
    lifecycles = [(new_ticket_id(), events) for events in _lifecycles()]
    for version in range(max(len(events) for _, events in lifecycles)):
        for tid, events in lifecycles:
            if version < len(events):
                await db.write(
                    lambda c, t=tid, v=version, p=events[version]: store.append_to_stream(
                        c, t, v or NO_STREAM, [p], context()
                    )
                )


def _projection_state(name: str, tables: Any, conn: Connection) -> tuple[Any, ...]:
    psv, pc = projection_stream_versions, projection_checkpoints
    return (
        [list(conn.exec_driver_sql(f"SELECT * FROM {t.name} ORDER BY 1, 2")) for t in tables],
        [tuple(r) for r in conn.execute(select(psv).where(psv.c.projection == name))],
        [r.position for r in conn.execute(select(pc.c.position).where(pc.c.projection == name))],
    )


@pytest.mark.parametrize("kind", ["compliance", "sla_clocks"])
async def test_a_projection_recomputing_whole_streams_is_rebuilt_in_stream_order(
    db: Database, store: EventStore, kind: str
) -> None:
    """Compliance and SLA clocks recompute each ticket from its streams read whole: their
    rebuild reads the ledger stream by stream (each ticket recomputed once, not on every
    page holding one of its events) and ends where the page-by-page fold does."""
    from services.dispatch.projections import SlaClocksProjection
    from services.feedback.projections import ComplianceProjection

    base = ComplianceProjection if kind == "compliance" else SlaClocksProjection

    class Recording(base):  # type: ignore[valid-type,misc]
        given: list[EventEnvelope]

        def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
            self.given += events
            super().apply(conn, events)

    await _seed_interleaved(db, store)
    runner = ProjectionRunner(db, store)
    await runner.catch_up(base(), batch_size=3)
    state = partial(_projection_state, base.name, base.tables)
    incremental = await db.read(state)
    assert incremental[0][0] and incremental[2] == [sum(map(len, _lifecycles()))]
    recording = Recording()
    recording.given = []
    assert isinstance(runner.rebuild_source(recording), StreamOrderSource)
    stats = await runner.rebuild(recording, batch_size=4)  # pages end inside streams
    assert await db.read(state) == incremental
    keys = [(e.stream_id, e.stream_version) for e in recording.given]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == stats.applied


def test_every_ticket_event_that_changes_the_row_has_a_rule_in_the_database_fold() -> None:
    """An event type the Python fold reads but the statement does not would make rebuilt
    rows differ from live ones: a type left out of ``_MARKS`` must change nothing besides
    the version (an empty payload shows it: a type that reads its payload fails)."""
    marked = {name for _, which in _MARKS.values() for name in re.findall(r"'(\w+)'", which)}
    marked |= set(STATUS_AFTER_TEXT)
    row = {"status": "diagnosed", "responded_at": None, "reopen_count": 0}
    fields = frozenset({"event_type", "occurred_at", "payload"})
    for name, cls in all_payload_classes().items():
        if cls.stream_type != "ticket" or name in marked:
            continue
        values = {"event_type": name, "occurred_at": TIMES[0], "payload": {}}
        assert _changes(row, EventEnvelope.partial(values, fields), {}) == {}, name
    assert "TicketDispatched" in marked and "ContactDetailsCorrected" in marked

"""Poison events are parked, not fatal: the projection moves on, the parked event's stream
waits behind it (never applied out of order), and retry or skip resolves it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import Connection, select

from shared.app.platform import Platform
from shared.eventstore.applied import PARKED, RETRIED, SKIPPED, parked_counts, parked_list
from shared.eventstore.db import Database
from shared.eventstore.ledger import EventStore
from shared.eventstore.pump import LedgerPump
from shared.eventstore.runner import ProjectionRunner, read_checkpoint
from shared.eventstore.tables import projection_stream_versions
from shared.kernel.events.envelope import EventEnvelope
from shared.kernel.events.tickets import TicketClosed
from tests.support.factories import context, diagnosed, new_ticket_id, received


class Fussy:
    """Records what it applied, in order; fails on the streams in ``poison``."""

    name = "fussy"
    tables = ()
    stream_types = ("ticket",)

    def __init__(self) -> None:
        self.poison: set[str] = set()
        self.applied: list[tuple[str, int]] = []
        self.calls = 0

    def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
        self.calls += 1
        for event in events:
            if event.stream_id in self.poison:
                raise ValueError(f"cannot handle {event.event_type} of {event.stream_id}")
        self.applied += [(e.stream_id, e.stream_version) for e in events]


async def seed(db: Database, store: EventStore, count: int) -> list[str]:
    ids = [new_ticket_id() for _ in range(count)]
    for n, tid in enumerate(ids):
        await db.write(
            lambda c, tid=tid, n=n: store.append_to_stream(c, tid, 0, [received(n)], context())
        )
    for tid in ids:
        await db.write(
            lambda c, tid=tid: store.append_to_stream(c, tid, 1, [diagnosed()], context())
        )
    return ids


async def close(db: Database, store: EventStore, tid: str, version: int) -> None:
    await db.write(
        lambda c: store.append_to_stream(c, tid, version, [TicketClosed(reason="x")], context())
    )


async def versions(db: Database, name: str) -> dict[str, tuple[int, int | None]]:
    psv = projection_stream_versions
    query = select(psv.c.stream_id, psv.c.version, psv.c.parked_version).where(
        psv.c.projection == name
    )
    return {r[0]: (r[1], r[2]) for r in await db.read(lambda c: c.execute(query).all())}


async def parked_setup(db: Database, store: EventStore) -> tuple[Fussy, ProjectionRunner, list]:
    """Three tickets; the second one's events are poison: parked, and the rest moves on."""
    a, b, c = await seed(db, store, 3)
    fussy = Fussy()
    fussy.poison.add(b)
    runner = ProjectionRunner(db, store, retries=2)
    stats = await runner.catch_up(fussy)
    assert stats.parked == 1 and stats.held == 1  # b v1 parked, b v2 waits behind it
    assert sorted(fussy.applied) == sorted([(a, 1), (a, 2), (c, 1), (c, 2)])
    # The projection reached the head: its checkpoint is the last position.
    assert await db.read(lambda conn: read_checkpoint(conn, "fussy")) == await db.read(
        store.last_position
    )
    (row,) = await db.read(lambda conn: parked_list(conn))
    assert (row.stream_id, row.stream_version, row.status) == (b, 1, PARKED)
    assert "ValueError: cannot handle TicketReceived" in row.error and row.attempts == 2
    assert await db.read(parked_counts) == {"fussy": 1}
    assert (await versions(db, "fussy"))[b] == (0, 1)

    # Later events of the parked stream wait too; other streams go on.
    await close(db, store, b, 2)
    await close(db, store, a, 2)
    fussy.applied.clear()
    stats = await runner.catch_up(fussy)
    assert fussy.applied == [(a, 3)] and stats.held == 1 and stats.parked == 0
    # Applied inline (a command's transaction): the parked stream is left alone too.
    b_events = await db.read(lambda conn: store.read_stream(conn, b))
    held = await db.write(lambda conn: runner.apply(conn, fussy, b_events[-1:]))
    assert held.held == 1 and held.applied == 0
    fussy.applied.clear()
    return fussy, runner, [a, b, c, row.id]


async def test_retry_applies_the_parked_event_then_those_behind_it(
    db: Database, store: EventStore
) -> None:
    fussy, runner, (_, b, _, parked_id) = await parked_setup(db, store)

    # Still failing: it stays parked, with one more attempt and the new error.
    again = await runner.resolve_parked(fussy, parked_id, "retry", "ops")
    assert not again.ok and "cannot handle" in (again.error or "")
    (row,) = await db.read(lambda conn: parked_list(conn))
    assert row.status == PARKED and row.attempts == 3
    assert fussy.applied == []

    fussy.poison.clear()  # the fix is deployed
    done = await runner.resolve_parked(fussy, parked_id, "retry", "ops")
    assert done.ok and done.held.applied == 2
    assert fussy.applied == [(b, 1), (b, 2), (b, 3)]  # in stream order
    assert await db.read(lambda conn: parked_list(conn)) == []
    (row,) = await db.read(lambda conn: parked_list(conn, status=None))
    assert (row.status, row.resolved_by) == (RETRIED, "ops")
    assert (await versions(db, "fussy"))[b] == (3, None)
    # Delivered again (a broker redelivery): duplicates, nothing applied twice.
    everything = await db.read(lambda conn: store.read_stream(conn, b))
    stats = await db.write(lambda conn: runner.apply(conn, fussy, everything))
    assert stats.duplicates == 3 and fussy.applied == [(b, 1), (b, 2), (b, 3)]


async def test_skip_counts_the_event_as_applied_and_moves_the_stream_on(
    db: Database, store: EventStore
) -> None:
    fussy, runner, (_, b, _, parked_id) = await parked_setup(db, store)
    fussy.poison.clear()
    done = await runner.resolve_parked(fussy, parked_id, "skip", "ops")
    assert done.ok and done.held.applied == 2
    assert fussy.applied == [(b, 2), (b, 3)]  # v1 skipped, the rest in order
    (row,) = await db.read(lambda conn: parked_list(conn, status=None))
    assert row.status == SKIPPED
    assert (await versions(db, "fussy"))[b] == (3, None)
    assert await db.read(parked_counts) == {}


async def test_a_poison_event_behind_a_parked_one_is_parked_in_its_turn(
    db: Database, store: EventStore
) -> None:
    class Picky(Fussy):
        def apply(self, conn: Connection, events: Sequence[EventEnvelope]) -> None:
            if any(e.event_type == "TicketClosed" for e in events):
                raise ValueError("cannot close")
            super().apply(conn, events)

    (tid,) = await seed(db, store, 1)
    await close(db, store, tid, 2)
    picky = Picky()
    picky.poison.add(tid)
    runner = ProjectionRunner(db, store, retries=1)
    await runner.catch_up(picky)
    (first,) = await db.read(lambda conn: parked_list(conn))
    picky.poison.clear()
    done = await runner.resolve_parked(picky, first.id, "retry", "ops")
    assert done.ok and done.held.parked == 1  # v2 applied, v3 (the close) parked
    assert picky.applied == [(tid, 1), (tid, 2)]
    (second,) = await db.read(lambda conn: parked_list(conn))
    assert (second.stream_version, second.event_type) == (3, "TicketClosed")


async def test_the_ledger_pump_parks_what_keeps_failing_and_moves_on(
    db: Database, store: EventStore
) -> None:
    """The embedded projector (one pump for every projection): the failing projection is
    retried round after round, then parks the poison event; the others never wait."""
    a, b = await seed(db, store, 2)
    fussy, calm = Fussy(), Fussy()
    calm.name = "calm"  # type: ignore[misc]
    fussy.poison.add(b)
    runner = ProjectionRunner(db, store, retries=3)
    pump = LedgerPump(runner, [fussy, calm], batch_size=100)
    for _ in range(2):
        await pump.catch_up()
        assert await db.read(parked_counts) == {}  # not yet: retried on the next round
    assert sorted(calm.applied) == sorted([(a, 1), (a, 2), (b, 1), (b, 2)])
    await pump.catch_up()  # the third round: one event at a time, the poison parked
    (row,) = await db.read(lambda conn: parked_list(conn))
    assert (row.projection, row.stream_id, row.stream_version) == ("fussy", b, 1)
    head = await db.read(store.last_position)
    for name in ("fussy", "calm"):
        assert await db.read(lambda conn, n=name: read_checkpoint(conn, n)) == head
    assert (a, 1) in fussy.applied and (a, 2) in fussy.applied
    assert not any(sid == b for sid, _ in fussy.applied)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_parked_command_says_what_its_ids_are_for(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.app.cli import main as cli_main

    monkeypatch.setenv("TICKETLINE_DATABASE_URL", platform.settings.resolved_database_url)
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(platform.settings.data_dir))
    assert cli_main(["parked", "retry"]) == 2  # used to do nothing and exit 0
    assert cli_main(["parked", "list", "5"]) == 2  # used to ignore the id
    assert "parked list" in capsys.readouterr().err
    # Nothing parked: said on stderr (an empty output looked like a wrong database).
    assert cli_main(["parked", "list"]) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and "no parked events waiting" in printed.err

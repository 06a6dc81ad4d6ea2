"""The ledger on SQLite and PostgreSQL: append, read, concurrency, hash chain."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, delete, select, text, update

from shared.eventstore.db import Database
from shared.eventstore.ledger import (
    FOLD_FIELDS,
    NO_STREAM,
    ConcurrencyError,
    EventStore,
    StreamAppend,
    StreamHead,
)
from shared.eventstore.tables import events, outbox
from shared.eventstore.verify import verify_ledger
from shared.kernel.clock import ManualClock
from shared.kernel.events import typed_payload
from shared.kernel.events.envelope import GENESIS_HASH
from shared.kernel.events.registry import UnreadableEvent
from shared.kernel.events.tickets import TicketReceived
from tests.support.factories import context, diagnosed, new_ticket_id, received


async def test_append_and_read_stream(db: Database, store: EventStore) -> None:
    tid = new_ticket_id()

    def append(conn: Connection) -> list:
        written = store.append_to_stream(
            conn, tid, NO_STREAM, [received()], context(), region="east"
        )
        return written + store.append_to_stream(conn, tid, 1, [diagnosed()], context())

    written = await db.write(append)
    stream = await db.read(lambda c: store.read_stream(c, tid))
    rows = await db.read(lambda c: c.execute(select(outbox).order_by(outbox.c.position)).all())
    assert [e.event_type for e in stream] == ["TicketReceived", "TicketDiagnosed"]
    assert [e.stream_version for e in stream] == [1, 2]
    assert stream == written
    assert stream[0].prev_hash == GENESIS_HASH and stream[1].prev_hash == stream[0].hash
    assert all(e.computed_hash() == e.hash for e in stream)
    assert stream[0].occurred_at.tzinfo is not None
    assert isinstance(typed_payload(stream[0]), TicketReceived)
    # The outbox rows were written in the same transaction: both events are pending.
    assert [r.position for r in rows] == [stream[0].position, stream[1].position]


async def test_several_streams_read_in_one_round_equal_each_read_alone(
    db: Database, store: EventStore, clock: ManualClock
) -> None:
    ids = [new_ticket_id() for _ in range(520)]  # past one SQLite statement's 500
    appends = [
        StreamAppend(tid, [received()] + [diagnosed()] * (i % 3), StreamHead(), "east")
        for i, tid in enumerate(ids)
    ]
    await db.write(lambda c: store.append(c, appends[:300], context()))
    cutoff = clock.now()
    clock.advance(minutes=1)
    await db.write(lambda c: store.append(c, appends[300:], context()))
    wanted = [*ids[::-1], "no-such-stream"]

    found = await db.read(lambda c: store.read_streams(c, wanted))
    alone = await db.read(lambda c: {t: store.read_stream(c, t) for t in ids})
    assert found == alone
    until = await db.read(lambda c: store.read_streams(c, wanted, recorded_until=cutoff))
    assert until == {t: alone[t] for t in ids[:300]}


async def test_a_fold_read_holds_the_fold_fields_of_the_whole_read(
    db: Database, store: EventStore
) -> None:
    tid = new_ticket_id()
    await db.write(
        lambda c: store.append(
            c, [StreamAppend(tid, [received(), diagnosed()], StreamHead(), "east")], context()
        )
    )
    whole = await db.read(lambda c: store.read_all(c))
    declared = frozenset({"stream_id", "occurred_at", "payload"})
    fold = await db.read(lambda c: store.read_all(c, fields=declared))
    assert [[getattr(e, f) for f in sorted(FOLD_FIELDS)] for e in fold] == [
        [getattr(e, f) for f in sorted(FOLD_FIELDS)] for e in whole
    ]
    with pytest.raises(AttributeError):
        _ = fold[0].hash  # not read: never a made-up value
    # Fields beyond a fold's: the whole envelopes.
    wider = await db.read(lambda c: store.read_all(c, fields=declared | {"actor"}))
    assert wider == whole
    tickets = await db.read(lambda c: store.read_all(c, stream_types=["ticket"], fields=declared))
    assert [e.position for e in tickets] == [e.position for e in whole]
    assert await db.read(lambda c: store.read_all(c, stream_types=["part"], fields=declared)) == []
    # A page holding none of the wanted types still says where it ended.
    page = await db.read(
        lambda c: store.read_page(c, after_position=0, limit=1, stream_types=["part"])
    )
    assert page == ([], whole[0].position)
    assert await db.read(
        lambda c: store.read_page(c, after_position=whole[-1].position, limit=5)
    ) == ([], None)


async def test_a_sparse_page_read_finds_the_same_events_up_to_the_same_head(
    db: Database, store: EventStore
) -> None:
    """``read_page(sparse=True)`` reads the wanted stream types through their index: the
    same events as the page-by-page read, in order, and it ends where the ledger ends."""
    from datetime import date

    from shared.kernel.events.quality import QualityAlertRaised

    alert = QualityAlertRaised(
        product_model="X1", fault_category="wear", day=date(2025, 1, 15), count=3, threshold=3
    )
    for n in range(12):
        appends = [StreamAppend(new_ticket_id(), [received(n)], StreamHead(), "east")]
        if n % 5 == 4:
            appends.append(StreamAppend(f"quality-{n}", [alert], StreamHead(), "east"))
        await db.write(lambda c, a=appends: store.append(c, a, context()))
    whole = await db.read(lambda c: store.read_all(c))
    head = whole[-1].position

    async def walk(types: set[str], limit: int, sparse: bool) -> list[int]:
        seen: list[int] = []
        after: int | None = 0
        while after is not None:
            read = lambda c, a=after: store.read_page(  # noqa: E731
                c, after_position=a, limit=limit, stream_types=types, sparse=sparse
            )
            page, last = await db.read(read)
            seen += [e.position for e in page]
            assert last is None or last > after and all(e.position <= last for e in page)
            after = last if last != head else None
        return seen

    for types in ({"quality"}, {"quality", "ticket"}, {"part"}):
        expected = [e.position for e in whole if e.stream_type in types]
        for limit in (1, 2, 50):
            assert await walk(types, limit, sparse=True) == expected
            assert await walk(types, limit, sparse=False) == expected
    assert await db.read(
        lambda c: store.read_page(c, after_position=head, limit=5, stream_types={"x"}, sparse=True)
    ) == ([], None)


async def test_wrong_expected_version_is_a_conflict(db: Database, store: EventStore) -> None:
    tid = new_ticket_id()
    await db.write(lambda c: store.append_to_stream(c, tid, NO_STREAM, [received()], context()))
    with pytest.raises(ConcurrencyError) as err:
        await db.write(lambda c: store.append_to_stream(c, tid, NO_STREAM, [received()], context()))
    assert err.value.actual == 1
    # Nothing half-written: the failed append left neither an event nor an outbox row.
    assert len(await db.read(lambda c: store.read_stream(c, tid))) == 1
    assert len(await db.read(lambda c: c.execute(select(outbox)).all())) == 1


async def test_concurrent_appends_exactly_one_wins(db: Database, store: EventStore) -> None:
    tid = new_ticket_id()
    await db.write(lambda c: store.append_to_stream(c, tid, NO_STREAM, [received()], context()))

    def append_and_hold(conn: Connection) -> None:
        store.append(conn, [StreamAppend(tid, [diagnosed()], head)], context())
        time.sleep(0.05)  # hold the transaction open while the others try

    head = (await db.read(lambda c: store.read_stream(c, tid)))[-1]
    head = StreamHead(head.stream_version, head.hash)

    async def attempt() -> str:
        try:
            await db.write(append_and_hold)
            return "won"
        except ConcurrencyError:
            return "conflict"

    outcomes = await asyncio.gather(*(attempt() for _ in range(5)))
    assert sorted(outcomes) == ["conflict"] * 4 + ["won"]
    versions = [e.stream_version for e in await db.read(lambda c: store.read_stream(c, tid))]
    assert versions == [1, 2]


async def test_positions_are_gap_free_across_streams(db: Database, store: EventStore) -> None:
    async def append(n: int) -> None:
        tid = new_ticket_id()
        await db.write(
            lambda c: store.append_to_stream(c, tid, NO_STREAM, [received(n)], context())
        )

    await asyncio.gather(*(append(n) for n in range(20)))
    all_events = await db.read(lambda c: store.read_all(c))
    assert [e.position for e in all_events] == list(range(1, 21))


async def _ledger_with_two_tickets(db: Database, store: EventStore) -> list[str]:
    ids = [new_ticket_id(), new_ticket_id()]
    for n, tid in enumerate(ids):

        def both(conn: Connection, tid: str = tid, n: int = n) -> None:
            store.append_to_stream(conn, tid, NO_STREAM, [received(n)], context())
            store.append_to_stream(conn, tid, 1, [diagnosed()], context())

        await db.write(both)
    return ids


async def test_verify_passes_on_untouched_ledger(db: Database, store: EventStore) -> None:
    await _ledger_with_two_tickets(db, store)
    report = await db.read(lambda c: verify_ledger(c, store))
    assert report.ok and report.events_checked == 4 and report.streams_checked == 2


@pytest.mark.parametrize("tamper", ["change", "delete", "reorder"])
async def test_tampered_ledger_is_detected(db: Database, store: EventStore, tamper: str) -> None:
    ids = await _ledger_with_two_tickets(db, store)

    def damage(conn: Connection) -> Any:
        first = conn.execute(
            select(events).where(events.c.stream_id == ids[0], events.c.stream_version == 1)
        ).one()
        at = events.c.position
        if tamper == "change":
            body = json.loads(first.payload)
            body["customer"]["phone"] = "13900000000"
            conn.execute(
                update(events).where(at == first.position).values(payload=json.dumps(body))
            )
        elif tamper == "delete":
            conn.execute(delete(outbox).where(outbox.c.position == first.position + 1))
            conn.execute(delete(events).where(at == first.position + 1))
        else:  # swap the two versions of the first stream
            conn.execute(update(events).where(at == first.position).values(stream_version=99))
            conn.execute(update(events).where(at == first.position + 1).values(stream_version=1))
            conn.execute(update(events).where(at == first.position).values(stream_version=2))
        return first

    first = await db.write(damage)
    report = await db.read(lambda c: verify_ledger(c, store))
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


async def test_a_payload_text_of_the_same_value_is_detected(
    db: Database, store: EventStore
) -> None:
    """A key given twice parses to the genuine value in Python (the last wins) and to the
    smuggled one in SQL's ``json_extract`` (the first): the hash is of the text as stored,
    so verify names the row (found by a black-box pass: it said intact)."""
    ids = await _ledger_with_two_tickets(db, store)

    def smuggle(conn: Connection) -> int:
        row = conn.execute(select(events).where(events.c.stream_id == ids[0])).first()
        assert row is not None
        payload = '{"urgency":"smuggled",' + row.payload[1:]
        conn.execute(
            update(events).where(events.c.position == row.position).values(payload=payload)
        )
        return int(row.position)

    position = await db.write(smuggle)
    report = await db.read(lambda c: verify_ledger(c, store))
    assert [(b.kind, b.position) for b in report.broken] == [("hash", position)]


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's columns hold no such text
async def test_a_row_no_event_could_be_is_unreadable_and_the_walk_goes_on(
    db: Database, store: EventStore
) -> None:
    """A stream version stored as text: named ``unreadable`` (it ended verify with a
    traceback), and the other rows are still checked."""
    await _ledger_with_two_tickets(db, store)
    version_text = text("UPDATE events SET stream_version = '5x' WHERE position = 2")
    await db.write(lambda c: c.execute(version_text))
    report = await db.read(lambda c: verify_ledger(c, store))
    assert [(b.kind, b.position) for b in report.broken] == [("unreadable", 2)]
    assert report.events_checked == 4


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL refuses text not in UTF-8
async def test_a_row_whose_text_is_not_utf8_is_named_and_the_reads_go_on(
    db: Database, store: EventStore
) -> None:
    """A byte of a payload (or of another text column) edited into no UTF-8: sqlite3
    refused the whole read (verify, replay and export ended with a traceback). The row is
    now ``unreadable``, the others are checked, and a read of its stream names it."""
    ids = await _ledger_with_two_tickets(db, store)
    bad = text(
        "UPDATE events SET payload = CAST(substr(CAST(payload AS BLOB), 1, 5) || x'c3' || "
        "substr(CAST(payload AS BLOB), 7) AS TEXT) WHERE position = 2"
    )
    await db.write(lambda c: c.execute(bad))
    subject = text("UPDATE events SET actor_subject = CAST(x'ff' AS TEXT) WHERE position = 3")
    await db.write(lambda c: c.execute(subject))
    report = await db.read(lambda c: verify_ledger(c, store))
    assert [(b.kind, b.position) for b in report.broken] == [("unreadable", 2), ("unreadable", 3)]
    assert "not UTF-8" in report.broken[0].detail
    assert report.events_checked == 4
    with pytest.raises(UnreadableEvent) as unreadable:
        await db.read(lambda c: store.read_stream(c, ids[0]))
    assert unreadable.value.position == 2


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL keeps instants, not texts
async def test_a_time_stored_with_an_offset_is_that_instant(
    db: Database, store: EventStore
) -> None:
    """The same instant written with an offset reads as that instant (it read as the
    same wall time in UTC: 8 hours off, and verify and verify-export disagreed)."""
    ids = await _ledger_with_two_tickets(db, store)
    before, *_ = await db.read(lambda c: store.read_stream(c, ids[0]))
    local = before.occurred_at.astimezone(timezone(timedelta(hours=8))).isoformat(sep=" ")
    edit = text("UPDATE events SET occurred_at = :at WHERE position = :position")
    await db.write(lambda c: c.execute(edit, {"at": local, "position": before.position}))
    after, *_ = await db.read(lambda c: store.read_stream(c, ids[0]))
    assert after.occurred_at == before.occurred_at
    assert (await db.read(lambda c: verify_ledger(c, store))).ok


async def test_a_deleted_newest_event_is_detected(db: Database, store: EventStore) -> None:
    """The position counter remembers the head: removing the last event (and its outbox
    row) leaves every hash intact but the ledger shorter than the counter says."""
    await _ledger_with_two_tickets(db, store)

    def drop_tail(conn: Connection) -> None:
        conn.execute(delete(outbox).where(outbox.c.position == 4))
        conn.execute(delete(events).where(events.c.position == 4))

    await db.write(drop_tail)
    report = await db.read(lambda c: verify_ledger(c, store))
    assert not report.ok
    assert [b.kind for b in report.broken] == ["ledger_tail"]
    assert "counter is at 4" in report.broken[0].detail


def test_spliced_hash_equals_the_envelope_hash(store: EventStore) -> None:
    """The append puts the canonical envelope text together from quoted values, the
    payload spliced in; verification hashes canonical_json of the whole envelope: both
    must agree to the byte, for any content (None, non-ASCII, quotes, escapes)."""
    from datetime import UTC, datetime
    from uuid import uuid4

    from shared.eventstore.ledger import EnvelopeText
    from shared.kernel.events.envelope import Actor, EventEnvelope, canonical_json, format_timestamp

    cases = (
        ("east", None, "plain", "agent-1", "t-1"),
        (None, uuid4(), '中文 \u2028 "q"', 'a\\gent "1"\n\x00é', "t-\t1/ü"),
    )
    for region, causation, words, subject, stream_id in cases:
        envelope = EventEnvelope(
            event_id=uuid4(),
            position=7,
            stream_type="ticket",
            stream_id=stream_id,
            stream_version=3,
            event_type="TicketClosed",
            schema_version=2,
            occurred_at=datetime(2026, 11, 1, 8, 30, 1, 5, tzinfo=UTC),
            recorded_at=datetime(2026, 11, 1, 8, 30, 2, tzinfo=UTC),
            actor=Actor(subject=subject, role="call_center_agent"),
            service="intake",
            correlation_id=uuid4(),
            causation_id=causation,
            region=region,
            payload={"reason": words, "n": 1.5, "nested": {"b": [1, None], "a": True}},
            prev_hash="ab" * 32,
            hash="",
        )
        d = envelope.model_dump(mode="python", exclude={"hash"})
        common = {
            "actor_role": d["actor"]["role"],
            "actor_subject": d["actor"]["subject"],
            "causation_id": str(causation) if causation else None,
            "correlation_id": str(d["correlation_id"]),
            "region": region,
            "service": "intake",
            "stream_id": stream_id,
            "stream_type": "ticket",
        }
        shared = EnvelopeText.of(common, format_timestamp(d["recorded_at"]))
        hash_text = shared.event(
            str(d["event_id"]),
            "TicketClosed",
            format_timestamp(d["occurred_at"]),
            canonical_json(d["payload"]),
            2,
            3,
        )
        assert hash_text.hash(7, d["prev_hash"]) == envelope.computed_hash()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_write_cancelled_midway_leaves_nothing_and_the_writer_goes_on(
    db: Database, store: EventStore
) -> None:
    """An idle PostgreSQL writer runs a unit in its caller's task: cancelling the caller
    rolls the unit back (its connection is replaced), and later units are not affected."""
    from sqlalchemy import text

    lost, kept = new_ticket_id(), new_ticket_id()

    def slow(conn: Connection) -> None:
        store.append_to_stream(conn, lost, NO_STREAM, [received()], context())
        conn.execute(text("SELECT pg_sleep(2)"))

    task = asyncio.create_task(db.write(slow))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(
        *(
            db.write(
                lambda c, t=t: store.append_to_stream(c, t, NO_STREAM, [received()], context())
            )
            for t in (kept, new_ticket_id(), new_ticket_id())
        )
    )
    everything = await db.read(lambda c: store.read_all(c))
    assert lost not in {e.stream_id for e in everything}
    assert kept in {e.stream_id for e in everything}
    assert [e.position for e in everything] == [1, 2, 3]
    assert (await db.read(lambda c: verify_ledger(c, store))).ok


def test_the_hashed_timestamp_text_is_the_strftime_form() -> None:
    """Hashes stored since the first event used strftime; the faster form must agree."""
    from datetime import UTC, datetime, timedelta, timezone

    from shared.kernel.events.envelope import format_timestamp

    for value in (
        datetime(2026, 11, 1, 8, 30, 1, 5, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 7, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=8))),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1000, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 0, tzinfo=UTC),
        datetime(5, 1, 1, tzinfo=UTC),
    ):
        expected = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert format_timestamp(value) == expected, value


async def test_units_of_work_queued_together_commit_independently(
    db: Database, store: EventStore
) -> None:
    """Writes that queue up together (SQLite commits them as one group) succeed or fail
    alone: the failing one leaves nothing behind, not even a position."""
    ids = [new_ticket_id() for _ in range(10)]

    def good(tid: str) -> Any:
        return lambda c: store.append_to_stream(c, tid, NO_STREAM, [received()], context())

    def bad(conn: Connection) -> None:
        store.append_to_stream(conn, new_ticket_id(), NO_STREAM, [received()], context())
        raise RuntimeError("the command failed after appending")

    results = await asyncio.gather(
        *(db.write(good(t)) for t in ids[:5]),
        db.write(bad),
        *(db.write(good(t)) for t in ids[5:]),
        return_exceptions=True,
    )
    assert isinstance(results[5], RuntimeError)
    assert not any(isinstance(r, BaseException) for r in results[:5] + results[6:])
    everything = await db.read(lambda c: store.read_all(c))
    assert sorted(e.stream_id for e in everything) == sorted(ids)
    assert [e.position for e in everything] == list(range(1, 11))
    assert (await db.read(lambda c: verify_ledger(c, store))).ok
